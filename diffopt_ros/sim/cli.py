"""``diffopt-ros sim``: drive the simulator with a scripted command sequence and report.

Without ``--script`` the robot follows the world's ``route`` open loop: turn in place towards
the next waypoint, drive straight, pause; the durations come from the robot's *true* gains (a
stand-in for the closed-loop demo). A script file is a YAML list of ``[duration s, v_cmd m/s,
omega_cmd rad/s]`` rows.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from diffopt_ros.cli import plain_text
from diffopt_ros.lie import wrap_angle
from diffopt_ros.paths import config_path
from diffopt_ros.sim.config import read_sim_params, robot_params, sensor_params
from diffopt_ros.sim.robot import RobotParams
from diffopt_ros.sim.simulator import Rollout, Simulator
from diffopt_ros.sim.world import World, WorldError


def route_script(start, route, robot: RobotParams, speed: float = 0.5,
                 turn_rate: float = 0.6) -> np.ndarray:
    """Open-loop commands that drive ``robot`` from ``start`` through the waypoints ``route``.

    Args:
        start: ``(3,)`` start pose ``[x, y, yaw]`` (m, m, rad).
        route: ``(R, 2)`` waypoints (m).
        robot: true dynamics; durations use its gains (``gain * command * duration`` is the
            distance or angle covered by a lag that starts and ends at rest).
        speed: commanded forward speed while driving (m/s).
        turn_rate: commanded yaw rate while turning in place (rad/s).

    Returns:
        ``(S, 3)`` rows ``[duration s, v_cmd m/s, omega_cmd rad/s]``: turn, pause, drive, pause
        for each waypoint (the pauses of ``4 * tau`` let the lag settle).
    """
    x, y, yaw = (float(s) for s in start[:3])
    settle = 4.0 * max(robot.tau_v, robot.tau_omega)
    rows = []
    for wx, wy in np.asarray(route, dtype=np.float64).reshape(-1, 2):
        heading = math.atan2(wy - y, wx - x)
        turn = wrap_angle(heading - yaw)
        if abs(turn) > 1e-6:
            rows += [[abs(turn) / (robot.gain_omega * turn_rate), 0.0, math.copysign(turn_rate, turn)],
                     [settle, 0.0, 0.0]]
        distance = math.hypot(wx - x, wy - y)
        rows += [[distance / (robot.gain_v * speed), speed, 0.0], [settle, 0.0, 0.0]]
        x, y, yaw = wx, wy, heading
    return np.array(rows).reshape(-1, 3)


def read_script(path: str) -> np.ndarray:
    """``(S, 3)`` rows ``[duration, v_cmd, omega_cmd]`` from a YAML list; errors name file and row."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f'{path}: cannot read script: {exc}') from exc
    if not isinstance(data, list) or not data:
        raise ValueError(f'{path}: expected a non-empty list of [duration, v, omega] rows')
    for i, row in enumerate(data):
        if (not isinstance(row, list) or len(row) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) for v in row) or row[0] < 0):
            raise ValueError(f'{path}: row {i}: expected [duration >= 0, v, omega], got {row!r}')
    return np.array(data, dtype=np.float64)


def expand_script(script: np.ndarray, dt: float) -> np.ndarray:
    """Per-step commands ``(T, 2)`` from ``(S, 3)`` ``[duration, v, omega]`` rows (step ``dt``)."""
    commands, elapsed, ends = [], 0.0, np.cumsum(script[:, 0])
    for end, (_, v, omega) in zip(ends, script):
        steps = int(round((end - elapsed) / dt))
        commands += [[v, omega]] * max(steps, 0)
        elapsed += steps * dt
    return np.array(commands, dtype=np.float64).reshape(-1, 2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='diffopt-ros sim', description=plain_text(__doc__.split('\n\n')[0]),
        epilog='Without --script the robot drives the world\'s route open loop (durations from '
               'the true gains). A script is a YAML list of [duration, v_cmd, omega_cmd] rows.')
    parser.add_argument('--world', help='world name under config/worlds/ or a path '
                        '(default: the params file\'s "world")')
    parser.add_argument('--params', default=None,
                        help='sim_node params file for robot.*, odom.*, lidar.* (default: '
                             'config/sim.yaml)')
    parser.add_argument('--script', help='YAML list of [duration s, v m/s, omega rad/s] rows')
    parser.add_argument('--seed', type=int, help='noise seed (default: the params file\'s)')
    parser.add_argument('--dt', type=float, default=0.01, help='step length (s, default 0.01)')
    parser.add_argument('--scan-rate', type=float, default=10.0,
                        help='lidar scans per simulated second (default 10; 0 = none)')
    parser.add_argument('--plot', metavar='PNG', help='write a plot: world, true and odometry paths')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the scripted drive and print what happened; returns the exit status."""
    args = _parser().parse_args(argv)
    if not args.dt > 0 or args.scan_rate < 0:
        print('diffopt-ros sim: --dt must be > 0 and --scan-rate >= 0', file=sys.stderr)
        return 2
    try:
        params_path = args.params or config_path('sim.yaml')
        values = read_sim_params(params_path)
        world = World.load(args.world or values.get('world', 'loop'))
        robot, sensors = robot_params(values), sensor_params(values)
        world.check_start(robot.radius)
        seed = args.seed if args.seed is not None else int(values.get('seed', 0))
        script = read_script(args.script) if args.script else route_script(world.start, world.route,
                                                                           robot)
    except (ValueError, FileNotFoundError, WorldError) as exc:
        print(f'diffopt-ros sim: {exc}', file=sys.stderr)
        return 2
    if not len(script):
        print(f'diffopt-ros sim: world {world.name} has no route; give --script', file=sys.stderr)
        return 2
    commands = expand_script(script, args.dt)
    scan_every = max(1, int(round(1.0 / (args.scan_rate * args.dt)))) if args.scan_rate else 0
    sim = Simulator(world, robot, sensors, seed=seed)

    wall = time.perf_counter()
    rollout = sim.rollout(commands, args.dt, scan_every)
    wall = time.perf_counter() - wall
    scan_cost = _scan_cost(sim)
    _report(world, sim, rollout, script, args, seed, params_path, wall, scan_cost)
    if args.plot:
        _plot(world, sim, rollout, args.plot)
        print(f'  plot: {args.plot}')
    return 0


def _scan_cost(sim: Simulator, repeats: int = 20) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        sim.scan()
    return (time.perf_counter() - start) / repeats


def odom_in_map(start, odometry: np.ndarray) -> np.ndarray:
    """``(T, 3)`` odometry poses mapped into the map frame by the start pose ``(3,)``."""
    c, s = math.cos(start[2]), math.sin(start[2])
    x = start[0] + c * odometry[:, 0] - s * odometry[:, 1]
    y = start[1] + s * odometry[:, 0] + c * odometry[:, 1]
    yaw = wrap_angle(start[2] + odometry[:, 2])
    return np.column_stack([x, y, yaw])


def _report(world, sim, rollout: Rollout, script, args, seed, params_path, wall, scan_cost):
    sim_time = rollout.time[-1] - rollout.time[0]
    true, odom = rollout.true_states[-1], odom_in_map(sim.start_pose, rollout.odometry[-1:])[0]
    drift = math.hypot(odom[0] - true[0], odom[1] - true[1])
    drift_yaw = wrap_angle(odom[2] - true[2])
    source = args.script or f'route of world {world.name} ({len(world.route)} waypoints)'
    valid = rollout.scans[np.isfinite(rollout.scans)]
    print(f'diffopt-ros sim: world {world.name} ({len(world.walls)} walls, {len(world.discs)} '
          f'round obstacles/posts), params {params_path}, seed {seed}')
    print(f'  script: {len(script)} segments from {source}; {len(rollout.commands)} steps of '
          f'{args.dt} s = {sim_time:.1f} s simulated')
    print(f'  distance travelled: {sim.distance:.2f} m; steps ending at an obstacle: '
          f'{rollout.collisions}')
    print(f'  final true pose (map):     x {true[0]:7.3f} m  y {true[1]:7.3f} m  '
          f'yaw {true[2]:+.3f} rad')
    print(f'  final odometry (into map): x {odom[0]:7.3f} m  y {odom[1]:7.3f} m  '
          f'yaw {odom[2]:+.3f} rad')
    print(f'  odometry drift: {drift:.3f} m ({100 * drift / max(sim.distance, 1e-9):.2f} % of '
          f'distance), {drift_yaw:+.4f} rad')
    if len(rollout.scans):
        print(f'  scans: {len(rollout.scans)} x {sim.sensors.lidar_beams} beams; '
              f'{100 * valid.size / rollout.scans.size:.0f} % returns, mean range '
              f'{valid.mean() if valid.size else math.inf:.2f} m; one scan costs '
              f'{1e3 * scan_cost:.2f} ms')
    else:
        print(f'  scans: none; one scan would cost {1e3 * scan_cost:.2f} ms')
    print(f'  wall time {wall:.2f} s: {sim_time / wall:.0f}x real time '
          f'({1e6 * wall / max(len(rollout.commands), 1):.0f} us per step incl. scans)')


def _plot(world: World, sim: Simulator, rollout: Rollout, path: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 7))
    for x1, y1, x2, y2 in world.walls:
        ax.plot([x1, x2], [y1, y2], 'k-', lw=1.5)
    for x, y, r in world.discs:
        ax.add_patch(plt.Circle((x, y), r, color='0.4'))
    true = rollout.true_states
    odom = odom_in_map(sim.start_pose, rollout.odometry)
    ax.plot(true[:, 0], true[:, 1], 'g-', label='true path (map)')
    ax.plot(odom[:, 0], odom[:, 1], 'r--', label='wheel odometry (start pose + odom)')
    if len(rollout.scans):
        k = rollout.scan_steps[-1]
        x, y, yaw = true[k, :3]
        angles = yaw + sim.sensors.lidar_angles()
        ranges = rollout.scans[-1]
        hit = np.isfinite(ranges)
        ax.plot(x + ranges[hit] * np.cos(angles[hit]), y + ranges[hit] * np.sin(angles[hit]),
                'b.', ms=2, label='last scan')
    ax.set_aspect('equal')
    ax.set_xlabel('x (m)')
    ax.set_ylabel('y (m)')
    ax.set_title(f'diffopt-ros sim: world {world.name}, {sim.distance:.1f} m')
    ax.legend(loc='upper right', fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)
