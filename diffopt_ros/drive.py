"""``diffopt-ros drive``: drive goals through a world with sim + SLAM + obstacle-aware MPC, and score it.

One process, one deterministic lock-step loop (no ROS): the simulator (true robot of
``config/sim.yaml``, ``--robot`` picks the base), online SLAM (:class:`~diffopt_ros.slam.system.SlamSystem`
on the simulated odometry and scans, anchored at the start pose so its map frame is the
world's) and the :class:`~diffopt_ros.navigation.Navigator` (global path on the world's grid, the
MPC of ``config/mpc.yaml`` with the obstacle cost and the latest scan) at ``--control-rate``;
the simulator holds each command until the next tick. Example::

    diffopt-ros drive --world clutter --goal 9,5 --goal 1,1 --robot ackermann --json out.json

Per goal it prints and writes: reached, time (s), path length (m), minimum clearance (m, from
the robot centre to the nearest obstacle surface; the footprint touches at the robot radius),
collisions (simulator steps in contact), stop-zone ticks (the MPC's speed cut by
:attr:`~diffopt_ros.navigation.NavSettings.stop_margin`); and for the loop: ticks, rate achieved
(ticks per wall second), tick p50/p99 (ms; SLAM + planning + MPC), solve p50/p99 (ms), control
p50/p99 (ms; planning + MPC, the navigator's step: what a controller beside a separate SLAM
process spends) and SLAM p99 (ms, over the ticks that process a scan; a new keyframe's scan
matching, loop search and graph update are its slow ones); all wall times. Tick CPU p50/p99 (ms)
is the thread's CPU time per tick (``time.thread_time``): on a loaded machine the wall time also
holds the time other processes ran, the CPU time what the tick itself took. ``--record DIR``
writes the run as a rosbag2 (MCAP) like the recorder's (``/odom``, ``/ground_truth/odom``,
``/cmd_vel``, ``/goal_pose``, ``/scan``), which ``diffopt-ros learn dynamics`` reads. Exit code
0 when every goal is reached without a collision, 1 otherwise, 2 for bad arguments or files.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from diffopt_ros.mpc.obstacles import scan_to_world
from diffopt_ros.navigation import ENDING_MODES, ROBOTS, Navigator, NavSettings

#: The simulator's robot kind of each navigation robot.
ROBOT_KINDS = {'diff_drive': 'diff_drive', 'ackermann': 'ackermann'}


@dataclass
class GoalResult:
    """How one goal went (units: m, s); ``status``: ``'reached'``, ``'unreachable: <why>'``,
    ``'no progress'`` (:attr:`~diffopt_ros.navigation.NavSettings.progress_timeout`) or
    ``'timeout'``."""

    goal: list
    reached: bool
    time: float
    path_length: float
    min_clearance: float
    collisions: int
    planned_length: float
    status: str
    stop_zone: int = 0


@dataclass
class DriveResult:
    """A whole drive: per-goal results and control-loop figures."""

    world: str
    robot: str
    seed: int
    controller: str
    obstacle_cost: bool
    goals: list = field(default_factory=list)
    ticks: int = 0
    rate_hz: float = 0.0
    tick_p50_ms: float = 0.0
    tick_p99_ms: float = 0.0
    solve_p50_ms: float = 0.0
    solve_p99_ms: float = 0.0
    control_p50_ms: float = 0.0
    control_p99_ms: float = 0.0
    slam_p99_ms: float = 0.0
    tick_cpu_p50_ms: float = 0.0
    tick_cpu_p99_ms: float = 0.0
    sim_time: float = 0.0
    wall_time: float = 0.0
    tick_cpu_ms: list = field(default_factory=list)   # every tick's CPU time (ms), not in to_dict
    run: object = None          # the recorded RunData (record=True), not written to JSON

    @property
    def success(self) -> bool:
        return all(g.reached and g.collisions == 0 for g in self.goals)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(replace(self, run=None, tick_cpu_ms=[])).items()
                if k not in ('run', 'tick_cpu_ms')}


def _compose(a, b) -> tuple[float, float, float]:
    """SE(2) ``a * b`` of ``(x, y, yaw)`` tuples."""
    c, s = math.cos(a[2]), math.sin(a[2])
    return a[0] + c * b[0] - s * b[1], a[1] + s * b[0] + c * b[1], a[2] + b[2]


def sim_robot(robot: str, values: dict | None = None):
    """The simulator's true robot for a navigation ``robot``: ``config/sim.yaml``'s ``robot.*``
    (or ``values``) with ``kind`` set."""
    from diffopt_ros.paths import config_path
    from diffopt_ros.sim.config import read_sim_params, robot_params

    values = dict(read_sim_params(config_path('sim.yaml')) if values is None else values)
    values['robot.kind'] = ROBOT_KINDS[robot]
    return robot_params(values)


def nav_settings(robot: str, mpc_values: dict, true_robot) -> NavSettings:
    """The navigation settings of a drive: ``mpc_values``' (``navigation.*``, reference speed,
    goal tolerance: :meth:`NavSettings.from_params`) for ``robot``, with the true car's wheelbase,
    steering limit and steering rate limit (``true_robot``, :func:`sim_robot`)."""
    return NavSettings.from_params(mpc_values, robot=robot, wheelbase=true_robot.wheelbase,
                                   max_steer=true_robot.max_steer, max_steer_rate=true_robot.max_steer_rate)


def drive(world, goals, robot: str = 'diff_drive', seed: int = 0, start=None, grid=None,
          mpc_values: dict | None = None, nav: NavSettings | None = None, controller: str = 'ilqr',
          obstacle_cost: bool = True, slam: bool = True, control_rate: float = 20.0,
          scan_rate: float = 10.0, sim_dt: float = 0.01, goal_timeout: float | None = None,
          true_robot=None, log=None, record: bool = False) -> DriveResult:
    """Drive ``goals (K, 2)`` (m, world frame) one after the other; see the module docstring.

    Args:
        world: a :class:`~diffopt_ros.sim.World` or a world name / file.
        goals: the goals.
        robot: ``'diff_drive'`` or ``'ackermann'``.
        seed: simulator noise seed.
        start: start pose ``(3,)`` (default: the world's).
        grid: the map (default: the world rasterised at 0.05 m, as a map server would serve it).
        mpc_values: mpc_node parameters (default ``config/mpc.yaml``).
        nav: navigation settings (default: :func:`nav_settings`).
        controller: ``'ilqr'`` (the MPC) or ``'cem'`` (the sampling solver on the same costs).
        obstacle_cost: use the obstacle cost in the controller (the planner always avoids obstacles).
        slam: close the loop on the SLAM estimate (else on the true state).
        control_rate: controller ticks per simulated second (Hz).
        scan_rate: scans per simulated second (Hz).
        sim_dt: simulator step (s).
        goal_timeout: s allowed per goal (default: twice the planned path at the reference
            speed, plus 15 s).
        true_robot: the simulated robot (default :func:`sim_robot`).
        log: ``print``-like callable for progress lines, or ``None``.
        record: keep the run (odometry, ground truth, commands, goals, scans) as
            :class:`~diffopt_ros.learn.datasets.RunData` in ``result.run``.
    """
    from diffopt_ros.learn.controller import mpc_params
    from diffopt_ros.maps import world_grid
    from diffopt_ros.mpc.receding import MpcSettings
    from diffopt_ros.sim import Simulator, World
    from diffopt_ros.slam.config import config_from_params
    from diffopt_ros.slam.system import SlamSystem

    world = world if isinstance(world, World) else World.load(world)
    true_robot = true_robot or sim_robot(robot)
    mpc_values = mpc_values if mpc_values is not None else mpc_params()
    nav = nav or nav_settings(robot, mpc_values, true_robot)
    grid = grid if grid is not None else world_grid(world, 0.05)
    settings = MpcSettings.from_params(mpc_values)
    navigator = Navigator(grid, settings, nav, controller=controller)
    navigator.use_obstacles(obstacle_cost)
    sim = Simulator(world, robot=true_robot, seed=seed, start_pose=start)
    start_pose = tuple(float(v) for v in sim.start_pose)
    estimator = None
    if slam:
        from diffopt_ros.params_file import read_params_file
        from diffopt_ros.paths import config_path

        estimator = SlamSystem(config_from_params(read_params_file(config_path('slam.yaml'), 'slam_node')))
    sensors = sim.sensors
    angles = sensors.lidar_angles()
    period = 1.0 / control_rate
    substeps = max(1, int(round(period / sim_dt)))
    scan_every = max(1, int(round(1.0 / (scan_rate * period))))
    result = DriveResult(world=world.name, robot=robot, seed=seed, controller=controller,
                         obstacle_cost=obstacle_cost)
    ticks, solves, controls, slams, cpu = [], [], [], [], []
    began = time.perf_counter()
    tick_index = 0
    correction = start_pose                      # world <- SLAM map (= odom at the start)
    log_t, log_odom, log_truth, log_cmd, log_goal, scan_t, scan_ranges = [], [], [], [], [], [], []

    def estimate():
        odom = sim.odometry
        if estimator is None:
            return sim.true_state
        pose = _compose(correction, estimator.map_pose(odom[:3]))
        return np.array([*pose, odom[3], odom[4]])

    for goal in np.asarray(goals, dtype=np.float64).reshape(-1, 2):
        t0, collisions0 = sim.time, sim.collisions
        plan = navigator.set_goal(estimate()[:2], goal)
        log_goal.append((sim.time, [*goal, 0.0]))
        limit = goal_timeout or ((2.0 * plan.length / nav.reference_speed + 15.0) if plan.reachable else 0.0)
        travelled, clearance, last = 0.0, math.inf, sim.true_state[:2]
        stop_zone = 0
        status = 'timeout'
        while True:
            started, cpu_started = time.perf_counter(), time.thread_time()
            if tick_index % scan_every == 0:
                ranges = sim.scan()
                if record:
                    scan_t.append(sim.time)
                    scan_ranges.append(ranges.astype(np.float32))
                if estimator is not None:
                    odom = sim.odometry
                    slam_started = time.perf_counter()
                    estimator.process(sim.time, odom[:3], ranges, angles, sensors.lidar_range_min,
                                      sensors.lidar_range_max)
                    slams.append(time.perf_counter() - slam_started)
                state = estimate()
                navigator.set_scan_points(scan_to_world(state[:3], ranges, angles, nav.scan_range,
                                                        min_range=sensors.lidar_range_min), stride=2)
            state = estimate()
            step_started = time.perf_counter()
            step = navigator.step(state, sim.time)
            ticks.append(time.perf_counter() - started)
            controls.append(time.perf_counter() - step_started)
            cpu.append(time.thread_time() - cpu_started)
            if step.solve_time:
                solves.append(step.solve_time)
            stop_zone += step.stop_distance is not None
            tick_index += 1
            if step.mode in ENDING_MODES:
                status = {'goal reached': 'reached', 'no progress': 'no progress'}.get(step.mode) \
                    or f'unreachable: {navigator.plan.reason}'
                break
            if sim.time - t0 > limit:
                navigator.stop()
                break
            if record:
                log_cmd.append((sim.time, step.command))
            for _ in range(substeps):
                if record:
                    log_t.append(sim.time)
                    log_odom.append(sim.odometry)
                    log_truth.append(sim.true_state)
                sim.step(step.command, period / substeps)
                now = sim.true_state[:2]
                travelled += float(np.hypot(*(now - last)))
                last = now
                clearance = min(clearance, world.clearance(now))
        if record:
            log_cmd.append((sim.time, np.zeros(2)))
        for _ in range(substeps):                 # goal done: stop for one period
            if record:
                log_t.append(sim.time)
                log_odom.append(sim.odometry)
                log_truth.append(sim.true_state)
            sim.step((0.0, 0.0), period / substeps)
        reached = status == 'reached'
        result.goals.append(GoalResult(goal=goal.tolist(), reached=reached, time=sim.time - t0,
                                       path_length=travelled, min_clearance=clearance,
                                       collisions=sim.collisions - collisions0,
                                       planned_length=plan.length if plan.reachable else math.inf,
                                       status=status, stop_zone=stop_zone))
        if log is not None:
            g = result.goals[-1]
            log(f'goal ({goal[0]:.2f}, {goal[1]:.2f}): {g.status}, {g.time:.1f} s, {g.path_length:.2f} m, '
                f'min clearance {g.min_clearance:.3f} m, {g.collisions} collisions, '
                f'{g.stop_zone} stop-zone ticks')
    wall = time.perf_counter() - began
    if record:
        result.run = _run_data(f'drive_{world.name}_{robot}_{seed}', log_t, log_odom, log_truth, log_cmd,
                               log_goal, scan_t, scan_ranges, angles, sensors)
    def ms(seconds, q):
        return float(np.percentile(np.asarray(seconds) * 1e3, q)) if seconds else 0.0

    return replace(result, ticks=len(ticks), rate_hz=len(ticks) / max(float(np.sum(ticks)), 1e-9),
                   tick_p50_ms=ms(ticks, 50), tick_p99_ms=ms(ticks, 99), solve_p50_ms=ms(solves, 50),
                   solve_p99_ms=ms(solves, 99), control_p50_ms=ms(controls, 50),
                   control_p99_ms=ms(controls, 99), slam_p99_ms=ms(slams, 99),
                   tick_cpu_p50_ms=ms(cpu, 50), tick_cpu_p99_ms=ms(cpu, 99), sim_time=sim.time,
                   wall_time=wall, tick_cpu_ms=[t * 1e3 for t in cpu])


def _run_data(name, t, odom, truth, commands, goals, scan_t, scans, angles, sensors):
    """The recorded series as a :class:`~diffopt_ros.learn.datasets.RunData`."""
    from diffopt_ros.bag.reader import Scans
    from diffopt_ros.learn.datasets import RunData, Series

    def series(pairs):
        return Series([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None

    return RunData(name=name, source=f'<drive {name}>', odom=Series(t, odom), ground_truth=Series(t, truth),
                   commands=series(commands), goals=series(goals),
                   scans=Scans(np.asarray(scan_t), np.asarray(scans), np.asarray(angles),
                               float(sensors.lidar_range_min), float(sensors.lidar_range_max)))


def _point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected X,Y in metres, got {text!r}') from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise argparse.ArgumentTypeError(f'goal {text!r} is not finite')
    return x, y


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='diffopt-ros drive',
        description='Drive goals through a world (sim + SLAM + obstacle-aware MPC in lock-step) and '
                    'print per goal: reached, time, path length, minimum clearance, collisions, '
                    'stop-zone ticks; and '
                    'the control loop rate and tick p50/p99.')
    parser.add_argument('--world', required=True, help='world name under config/worlds or a world file')
    parser.add_argument('--goal', action='append', type=_point, required=True, metavar='X,Y',
                        help='a goal in the world frame (m); repeat for several, driven in order')
    parser.add_argument('--robot', choices=ROBOTS, default='diff_drive',
                        help='robot base (default %(default)s)')
    parser.add_argument('--json', metavar='OUT', help='write the results as JSON to this file')
    parser.add_argument('--seed', type=int, default=0, help='simulator noise seed (default 0)')
    parser.add_argument('--start', type=lambda t: [*_point(t.rsplit(',', 1)[0]), float(t.rsplit(',', 1)[1])],
                        metavar='X,Y,YAW', help="start pose (default: the world's start)")
    parser.add_argument('--map', metavar='YAML', help='map_server map to plan and avoid obstacles on '
                                                      '(default: the world rasterised at 0.05 m)')
    parser.add_argument('--params-file', metavar='YAML', help='mpc_node parameters (default config/mpc.yaml)')
    parser.add_argument('--learned-file', metavar='YAML', help='learned mpc_node parameters on top')
    parser.add_argument('--controller', choices=('ilqr', 'cem'), default='ilqr',
                        help='MPC solver: box iLQR or the sampling CEM on the same costs (default ilqr)')
    parser.add_argument('--no-obstacle-cost', action='store_true',
                        help='track the global path without the obstacle cost (for comparison)')
    parser.add_argument('--ground-truth', action='store_true',
                        help='close the loop on the true state, not SLAM')
    parser.add_argument('--record', metavar='DIR',
                        help='write the run as a rosbag2 (MCAP) under DIR (odom, ground truth, cmd_vel, '
                             'goals, scans), for diffopt-ros learn')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``diffopt-ros drive``; 0: every goal reached without collision, 1: not, 2: bad input."""

    args = _parser().parse_args(argv)
    from diffopt_ros.learn.controller import mpc_params
    from diffopt_ros.maps import MapError, load_map
    from diffopt_ros.params_file import ParamsFileError
    from diffopt_ros.sim import CollisionError, World, WorldError
    from diffopt_ros.threads import limit_threads

    limit_threads(1)
    try:
        world = World.load(args.world)
        grid = load_map(args.map) if args.map else None
        values = mpc_params(args.params_file, args.learned_file)
        result = drive(world, args.goal, robot=args.robot, seed=args.seed, start=args.start, grid=grid,
                       mpc_values=values, controller=args.controller,
                       obstacle_cost=not args.no_obstacle_cost, slam=not args.ground_truth, log=print,
                       record=bool(args.record))
    except (WorldError, MapError, ParamsFileError, CollisionError, ValueError) as exc:
        print(f'diffopt-ros drive: {exc}', file=sys.stderr)
        return 2
    print(f'{result.ticks} ticks, {result.rate_hz:.1f} Hz achievable, tick p50 {result.tick_p50_ms:.1f} ms, '
          f'p99 {result.tick_p99_ms:.1f} ms; solve p50 {result.solve_p50_ms:.1f} ms, '
          f'p99 {result.solve_p99_ms:.1f} ms; control (planning + solve) p50 {result.control_p50_ms:.1f} ms, '
          f'p99 {result.control_p99_ms:.1f} ms; SLAM p99 {result.slam_p99_ms:.1f} ms; '
          f'{result.sim_time:.1f} s simulated in {result.wall_time:.1f} s')
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2) + '\n', encoding='utf-8')
    if args.record:
        from diffopt_ros.learn.datasets import save_bag

        print(f'recorded {save_bag(result.run, args.record)}')
    return 0 if result.success else 1
