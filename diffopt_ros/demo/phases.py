"""The phases of ``diffopt-ros demo`` and its command line: record → learn → relaunch.

ROS-free: the drive itself (the four nodes in one process) is handed in by
``diffopt_ros.nodes.demo``. Phase 1 drives the course (``config/demo.yaml``: goals only, which
the MPC plans on the world's map and reaches around the obstacles) and records it to
``<out>/before``; phase 2 learns the MPC's dynamics (and the SLAM weights) from that bag with
:mod:`diffopt_ros.learn.api` into ``<out>/learned``; phase 3 drives the same course again with the
learned dynamics (``<out>/after_dynamics``: same SLAM weights as before, so the MPC rows compare
controllers on the same estimator), then with both learned files (``<out>/after``), and prints
the before/after table and the wall time of each phase.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from diffopt_ros import paths
from diffopt_ros.demo.course import Course, DemoError, load_course
from diffopt_ros.demo.results import RunResult, comparison_table


def learn_from_run(course: Course, bag: Path, learned_dir: Path,
                   show_progress: bool = True) -> dict[str, Path]:
    """Learn from the recorded run with :mod:`diffopt_ros.learn.api`.

    The MPC's dynamics (actuator gains and lags) by system identification on the recorded
    commands and the states the MPC closed its loop on; the SLAM factor weights (against the
    simulator's ground truth) when ``learn.slam`` is true in the course file.

    Returns:
        ``{'mpc_node': yaml, 'slam_node': yaml}``: the learned parameter files written.

    Raises:
        DemoError: learning is not available in this tree or failed (the message says why).
    """
    from diffopt_ros.learn import api  # here: torch, which --help does without
    written = {}
    settings = course.learn
    try:
        # From the states the MPC itself saw (as on a robot: no ground truth needed).
        dynamics = api.learn_dynamics([bag], learned_dir / 'dynamics', method='sysid',
                                      epochs=settings.get('dynamics_epochs'),  # None: API's
                                      state_topic=course.state_topic, progress=show_progress)
    except (ValueError, RuntimeError, OSError) as exc:
        raise DemoError(f'learning the dynamics from {bag} failed: {exc}') from exc
    written['mpc_node'] = dynamics.yaml_path
    print(f'learned dynamics in {dynamics.metrics["seconds"]:.1f} s ({dynamics.yaml_path}): '
          + ', '.join(f'{k} {v:.3f}' for k, v in dynamics.params.items()))
    if settings.get('slam', True) and hasattr(api, 'learn_slam'):
        try:
            slam = api.learn_slam([bag], learned_dir / 'slam', progress=show_progress)
        except (ValueError, RuntimeError, OSError) as exc:
            print(f'learning the SLAM weights failed, keeping the defaults: {exc}')
        else:
            written['slam_node'] = slam.yaml_path
            print(f'learned SLAM weights in {slam.metrics["seconds"]:.1f} s ({slam.yaml_path}): '
                  + ', '.join(f'{k} {v:.4g}' for k, v in slam.params.items()))
    return written


def model_error(course: Course, bag: Path, mpc_learned: Path | None = None) -> float:
    """The MPC model's prediction error 1 s ahead against ground truth on a drive's bag (m,
    RMSE): its ``/cmd_vel`` commands replayed from the true states through the model the MPC
    ran with (``config/mpc.yaml``, the course's overrides, ``mpc_learned``), by
    :func:`~diffopt_ros.demo.closed_loop.prediction_rmse`. NaN (with a message) when the bag
    cannot be read."""
    # here: torch and the bag reader, which --help does without
    from diffopt_ros.bag.errors import BagError
    from diffopt_ros.demo.closed_loop import course_mpc_values, prediction_rmse
    from diffopt_ros.learn.controller import mpc_params
    from diffopt_ros.learn.datasets import load_run
    from diffopt_ros.params_file import read_params_file

    learned = read_params_file(mpc_learned, 'mpc_node') if mpc_learned else None
    try:
        run = load_run(bag, require=('/cmd_vel', '/ground_truth/odom'))
    except BagError as exc:
        print(f'model prediction error not measured: {exc}', file=sys.stderr)
        return math.nan
    return prediction_rmse(run, course_mpc_values(course, mpc_params(), learned))


def _drive(drive: Callable[..., RunResult], course: Course, name: str, out: Path,
           mpc_learned: Path | None = None, **kwargs) -> RunResult:
    """One drive (``drive(course, name, out, mpc_learned=..., **kwargs)``), its model
    prediction error from the bag, and its summary printed."""
    result = drive(course, name, out, mpc_learned=mpc_learned, **kwargs)
    result.model_error = model_error(course, result.bag, mpc_learned)
    print(result.summary())
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='diffopt-ros demo',
        description='Closed-loop demo: sim + SLAM + MPC + recorder in one process on sim time, '
                    'driving a course of goals (the MPC plans each on the world\'s map and avoids '
                    'obstacles); then learn the MPC dynamics and SLAM weights from '
                    'the recorded bag and drive the course again with the learned dynamics, then with the '
                    'learned dynamics and SLAM weights.',
        epilog='Writes <out>/map.yaml (the world\'s map), <out>/before/ (bag), <out>/before.png, '
               '<out>/learned/*.yaml, '
               '<out>/after_dynamics/ (learned dynamics), <out>/after/ (learned dynamics and '
               'SLAM weights) and their plots.')
    parser.add_argument('--out', type=Path, default=None,
                        help='output folder (default: runs/demo_<date>-<time>; never overwritten)')
    parser.add_argument('--course', type=Path, default=None,
                        help='course file (default: config/demo.yaml)')
    parser.add_argument('--world', default=None,
                        help="world name or YAML; the course becomes that world's route")
    parser.add_argument('--rtf', type=float, default=None,
                        help='cap on the real-time factor (simulated seconds per wall second); '
                             '0: as fast as the control loop keeps up (default from the course)')
    parser.add_argument('--seed', type=int, default=None, help='simulator noise seed')
    parser.add_argument('--state-topic', default=None, choices=('/slam/odom', '/odom'),
                        help='what the MPC closes the loop on (default from the course); with '
                             '/odom the drift puts the scans off the map, and goals behind narrow '
                             'doorways can be reported unreachable')
    parser.add_argument('--no-learn', action='store_true',
                        help='only record and summarise (skip learning and the second drive)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def _new_folder(path: Path) -> Path:
    """``path``, or ``path_1``, ``path_2``, ... if it exists (runs are never overwritten)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f'{path.name}_{n}')
    candidate.mkdir(parents=True)
    return candidate


def main(argv: list[str] | None, drive: Callable[..., RunResult], domain_id: int) -> int:
    """``diffopt-ros demo``: record → summary + plot → learn → relaunch → before/after table.

    Args:
        argv: command-line arguments (None: ``sys.argv[1:]``).
        drive: drives the course once and records it: ``drive(course, name, out_dir,
            mpc_learned=None, slam_learned=None, show_progress=True) -> RunResult``
            (``diffopt_ros.nodes.demo.run_course``: the four nodes in one process).
        domain_id: the DDS domain the drives run in (printed).
    """
    args = _parser().parse_args(argv)
    try:
        course = load_course(args.course or paths.config_path('demo.yaml'))
    except DemoError as exc:
        print(f'diffopt-ros demo: {exc}', file=sys.stderr)
        return 2
    if args.world:   # the course's goals belong to its world: drive the new world's route
        course.world, course.goals = args.world, np.zeros((0, 2))
    from diffopt_ros.sim import World, WorldError  # here: it imports torch (not for --help)
    try:   # before anything is written: a mistyped world lists the worlds there are
        World.load(course.world)
    except WorldError as exc:
        print(f'diffopt-ros demo: {exc}', file=sys.stderr)
        return 2
    if args.rtf is not None:
        if not args.rtf >= 0:
            print('diffopt-ros demo: --rtf must be >= 0', file=sys.stderr)
            return 2
        course.real_time_factor = args.rtf
    if args.seed is not None:
        course.seed = args.seed
    if args.state_topic:
        course.state_topic = args.state_topic
    import torch  # here: --help and argument errors come without torch's start-up
    torch.set_num_threads(1)   # small problems: one intra-op thread is faster (DESIGN.md §3)
    out = _new_folder(args.out or Path('runs') / time.strftime('demo_%Y%m%d-%H%M%S'))
    cap = f'at most {course.real_time_factor:g}x' if course.real_time_factor else 'uncapped'
    print(f'diffopt-ros demo: ROS domain {domain_id}, world {course.world}, sim time {cap} '
          '(lock-step with the MPC), '
          f'MPC on {course.state_topic}; output in {out}')
    phases: dict[str, float] = {}
    began = time.monotonic()
    try:
        progress = not args.no_progress
        before = _drive(drive, course, 'before', out, show_progress=progress)
        phases['record'] = before.wall_time
        if args.no_learn:
            _print_phases(phases, began)
            return 0 if before.goals_reached == before.goals_total else 1
        started = time.monotonic()
        try:
            learned = learn_from_run(course, before.bag, out / 'learned', show_progress=progress)
        except DemoError as exc:
            print(f'learning skipped: {exc}')
            return 0 if before.goals_reached == before.goals_total else 1
        phases['learn'] = time.monotonic() - started
        # The learned dynamics alone first (SLAM as before), so the MPC rows compare controllers
        # on the same estimator; then both learned files, as a relaunch with them would run.
        runs = [('learned dynamics', _drive(drive, course, 'after_dynamics', out,
                                            learned['mpc_node'], show_progress=progress))]
        phases['relaunch (dynamics)'] = runs[0][1].wall_time
        if learned.get('slam_node'):
            runs.append(('learned dynamics + SLAM weights',
                         _drive(drive, course, 'after', out, learned['mpc_node'],
                                slam_learned=learned['slam_node'], show_progress=progress)))
            phases['relaunch (dynamics + SLAM)'] = runs[-1][1].wall_time
        print('\nBefore / after learning (same course, same seed; change against before):')
        print(comparison_table(before, *runs))
        relaunch = ' '.join(f'{key}_learned_params:={path}' for key, path in
                            (('mpc', learned.get('mpc_node')), ('slam', learned.get('slam_node')))
                            if path)
        print(f'\nThe same on ROS 2: ros2 launch diffopt_ros sim_demo.launch.py {relaunch}')
        _print_phases(phases, began)
    except DemoError as exc:
        print(f'diffopt-ros demo: {exc}', file=sys.stderr)
        return 1
    return 0 if all(run.goals_reached == run.goals_total for _, run in runs) else 1


def _print_phases(phases: dict[str, float], began: float) -> None:
    """One line: wall time (s) of each phase and of the whole command after start-up."""
    parts = ', '.join(f'{name} {seconds:.0f} s' for name, seconds in phases.items())
    print(f'wall time: {parts}; total {time.monotonic() - began:.0f} s (after start-up)')
