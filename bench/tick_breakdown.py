"""Where a drive's slowest ticks spend their CPU time: SLAM keyframes, loop closures, replans, iterations.

    PYTHONPATH=. python bench/tick_breakdown.py --world clutter --robot ackermann --seed 7 --pairs 0 1

Drives the pairs of ``bench/navigation.py`` (same seed, same draws: pair ``i`` of ``--seed``) with
:func:`diffopt_ros.drive.drive` exactly as its ``drive_task`` does (SLAM, obstacle cost, 20 Hz
lock-step) and records per tick: the tick's thread CPU time (the very ``time.thread_time``
readings ``drive`` takes for its "tick CPU" figure), the CPU time of the SLAM update in it
(``SlamSystem.process``) and whether that update added a keyframe, closed a loop or ran a full
solve, the CPU time of the control step (``Navigator.step``), the MPC solves in it
(``MPC.forward`` calls: more than one when a stuck car's seeds are solved) with their iLQR
iterations, and whether the step replanned the global path. Prints, per pair and over all pairs,
the tick CPU p50 / p99, and for the ticks at or above each pair's p99 what they held; and the
CPU time per iteration count (how a tick's control step grows with its iterations).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import diffopt_ros.drive as drive_module  # noqa: E402
from diffopt_ros.learn.controller import mpc_params  # noqa: E402
from diffopt_ros.maps import world_grid  # noqa: E402
from diffopt_ros.mpc.ilqr import MPC  # noqa: E402
from diffopt_ros.mpc.receding import MpcSettings  # noqa: E402
from diffopt_ros.navigation import Navigator  # noqa: E402
from diffopt_ros.sim import World  # noqa: E402
from diffopt_ros.slam.system import SlamSystem  # noqa: E402


def _navigation_bench():
    """``bench/navigation.py`` as a module (its pair draws and settings)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('bench_navigation', ROOT / 'bench' / 'navigation.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Recorder:
    """Per-tick records of one drive, filled by wrappers of the SLAM update, the control step,
    the MPC solve and ``drive``'s own CPU clock."""

    def __init__(self):
        self.ticks: list[dict] = []
        self.current = self._fresh()
        self.clock: list[float] = []

    @staticmethod
    def _fresh() -> dict:
        return dict(slam_ms=0.0, keyframe=False, loop=False, full_solve=False, step_ms=0.0,
                    solves=0, iterations=0, replanned=False)

    def thread_time(self) -> float:
        """``drive``'s CPU clock: every second reading ends a tick."""
        now = time.thread_time()
        self.clock.append(now)
        if len(self.clock) % 2 == 0:
            self.current['tick_ms'] = (self.clock[-1] - self.clock[-2]) * 1e3
            self.ticks.append(self.current)
            self.current = self._fresh()
        return now


def _install(recorder: _Recorder):
    """Wrap the drive's parts to fill ``recorder``; returns the function that undoes it."""
    process, step, forward = SlamSystem.process, Navigator.step, MPC.forward

    def slam_process(self, *args, **kwargs):
        started = time.thread_time()
        update = process(self, *args, **kwargs)
        tick = recorder.current
        tick['slam_ms'] += (time.thread_time() - started) * 1e3
        tick['keyframe'] |= update.keyframe is not None
        tick['loop'] |= bool(update.loop_closures)
        tick['full_solve'] |= bool(update.full_solve)
        return update

    def nav_step(self, *args, **kwargs):
        started = time.thread_time()
        out = step(self, *args, **kwargs)
        recorder.current['step_ms'] += (time.thread_time() - started) * 1e3
        recorder.current['replanned'] |= bool(out.replanned)
        return out

    def mpc_forward(self, *args, **kwargs):
        sol = forward(self, *args, **kwargs)
        recorder.current['solves'] += 1
        recorder.current['iterations'] += int(sol.iterations.sum())
        return sol

    clock = types.SimpleNamespace(perf_counter=time.perf_counter, thread_time=recorder.thread_time)
    SlamSystem.process, Navigator.step, MPC.forward = slam_process, nav_step, mpc_forward
    drive_module.time = clock

    def undo():
        SlamSystem.process, Navigator.step, MPC.forward = process, step, forward
        drive_module.time = time
    return undo


def drive_pair(world_name: str, robot: str, seed: int, index: int, start, goal) -> tuple[list[dict], object]:
    """The per-tick records and the drive result of one pair (as ``bench/navigation.py`` drives it)."""
    nav = _navigation_bench()
    world = World.load(world_name)
    recorder = _Recorder()
    undo = _install(recorder)
    try:
        result = drive_module.drive(world, [goal], robot=robot, seed=seed + index, start=np.asarray(start),
                                    grid=world_grid(world, nav.RESOLUTION), mpc_values=mpc_params(),
                                    nav=nav.nav_settings(robot), true_robot=drive_module.sim_robot(robot))
    finally:
        undo()
    return recorder.ticks, result


def describe(ticks: list[dict], label: str) -> None:
    """Print the p50 / p99 of ``ticks`` and what the ticks at or above the p99 held."""
    cpu = np.array([t['tick_ms'] for t in ticks])
    p99 = float(np.percentile(cpu, 99))
    slow = [t for t in ticks if t['tick_ms'] >= p99]
    count = lambda key: sum(bool(t[key]) for t in slow)  # noqa: E731
    print(f'{label}: {len(ticks)} ticks, tick CPU p50 {np.percentile(cpu, 50):.1f} p99 {p99:.1f} ms; '
          f'{len(slow)} ticks >= p99: keyframe {count("keyframe")}, loop closure {count("loop")}, '
          f'full solve {count("full_solve")}, replanned {count("replanned")}, '
          f'more than one solve {sum(t["solves"] > 1 for t in slow)}; their iterations '
          f'{sorted(t["iterations"] for t in slow)}; mean ms: SLAM '
          f'{statistics.mean(t["slam_ms"] for t in slow):.1f}, control step '
          f'{statistics.mean(t["step_ms"] for t in slow):.1f}, '
          f'tick {statistics.mean(t["tick_ms"] for t in slow):.1f}')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--world', default='clutter')
    parser.add_argument('--robot', default='ackermann', choices=('diff_drive', 'ackermann'))
    parser.add_argument('--seed', type=int, default=7, help='seed of bench/navigation.py')
    parser.add_argument('--pairs', type=int, nargs='+', default=[0, 1], help='pair indices to drive')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    nav = _navigation_bench()
    world = World.load(args.world)
    settings = nav.nav_settings(args.robot)
    planner = Navigator(world_grid(world, nav.RESOLUTION), MpcSettings(), settings).planner
    pairs = nav.random_pairs(world, planner, max(args.pairs) + 1, settings.radius,
                             np.random.default_rng(args.seed))
    print(f'# {args.world} {args.robot} seed {args.seed}, load {os.getloadavg()[0]:.1f}', flush=True)
    every = []
    for i in args.pairs:
        start, goal, _ = pairs[i]
        ticks, result = drive_pair(args.world, args.robot, args.seed, i, start, goal)
        g = result.goals[0]
        describe(ticks, f'pair {i} ({g.status}, {g.collisions} collisions, drive tick CPU p99 '
                        f'{result.tick_cpu_p99_ms:.1f} ms)')
        every += ticks
    describe(every, 'all pairs')
    by_iterations: dict[int, list[float]] = {}
    for t in every:
        if t['solves'] == 1:
            by_iterations.setdefault(t['iterations'], []).append(t['step_ms'])
    print('control step CPU by iterations (one solve): ' + ', '.join(
        f'{k}: {statistics.median(v):.1f} ms x{len(v)}' for k, v in sorted(by_iterations.items())))
    print(f'# load {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    main()
