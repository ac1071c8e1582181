"""Obstacle-aware navigation: success, collisions, clearance and control-loop cost per world and robot.

    .venv/bin/python bench/navigation.py [--pairs 50] [--worlds loop corridors clutter]
        [--robots diff_drive ackermann] [--controllers ilqr cem] [--seed 0] [--json out.json]

For each world and robot, ``--pairs`` random start/goal pairs are drawn (seeded): both at least
0.3 m beyond the robot radius from any obstacle, 3-12 m apart, the goal reachable on the world's
grid (the same :class:`~diffopt_ros.planning.GridPlanner` the robot plans with). Each pair is
driven by :func:`diffopt_ros.drive.drive` (simulator + SLAM + MPC in lock-step at 20 Hz, the
MPC of config/mpc.yaml with the obstacle cost) and by the same loop with the CEM sampler on the
same model and costs. Reported per world, robot and controller: reached %, collisions (simulator
steps in contact, summed), minimum clearance (m, robot centre to obstacle surface; the footprint
touches at the robot radius, 0.2 m), mean path length and time of the reached goals, tick
times (ms; SLAM + planning + solve): the median of the runs' p50 and the largest run p99.

Solve time with the obstacle cost vs without: on points along each pair's planned path
(heading along it, moving at the reference speed), a cold solve and then a warm-started one
(the cold plan shifted by one control period) are run for both cost variants, interleaved in
the same process; the warm-started solve times are compared (p50 of each and the p50 of the
per-point ratio). Threads: 1 (``torch.set_num_threads(1)``).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffopt_ros.drive import drive, sim_robot  # noqa: E402
from diffopt_ros.learn.controller import mpc_params  # noqa: E402
from diffopt_ros.maps import world_grid  # noqa: E402
from diffopt_ros.mpc.receding import MpcSettings, advance_plan, path_reference  # noqa: E402
from diffopt_ros.navigation import Navigator, NavSettings  # noqa: E402
from diffopt_ros.sim import World  # noqa: E402


def random_pairs(world: World, planner, n: int, radius: float, rng: np.random.Generator,
                 min_distance: float = 3.0, max_distance: float = 12.0):
    """``n`` (start pose (3,), goal (2,)) pairs: free (0.3 m beyond ``radius``), reachable, apart."""
    xmin, ymin, xmax, ymax = world.bounds
    pairs, tries = [], 0
    while len(pairs) < n:
        tries += 1
        if tries > 2000 * n:
            raise RuntimeError(f'{world.name}: found only {len(pairs)} of {n} reachable pairs')
        start, goal = rng.uniform([xmin, ymin], [xmax, ymax], (2, 2))
        if min(world.clearance(start), world.clearance(goal)) < radius + 0.3:
            continue
        if not min_distance <= math.hypot(*(goal - start)) <= max_distance:
            continue
        plan = planner.plan(start, goal)
        if not plan.reachable:
            continue
        pairs.append((np.array([*start, rng.uniform(-math.pi, math.pi)]), goal, plan))
    return pairs


def solve_times(navigator: Navigator, plan, points: int = 6) -> list[tuple[float, float]]:
    """Warm-started solve times (s) with and without the obstacle cost, interleaved, at
    ``points`` states along ``plan``'s path."""
    s, nav = navigator.settings, navigator.nav
    path = plan.path
    out = []
    for k in np.linspace(0, len(path) - 2, points).astype(int):
        heading = math.atan2(*(path[k + 1] - path[k])[::-1])
        state = np.array([*path[k], heading, nav.reference_speed, 0.0])
        x = torch.as_tensor(navigator.model_state(state))[None]
        reference, _ = path_reference(state, path, 0.0, s.horizon, s.dt, nav.reference_speed)
        target = torch.as_tensor(np.concatenate([x.numpy(), reference], 0))[None]
        target[:, 1:, 4] = 0.0
        pair = []
        for on in (True, False):
            navigator.use_obstacles(on)
            with torch.no_grad():
                cold = navigator.mpc(x, target=target)
                warm = torch.as_tensor(advance_plan(cold.controls[0].numpy(), 0.05, s.dt))[None]
                started = time.perf_counter()
                navigator.mpc(x, target=target, u_init=warm, u_prev=cold.controls[:, 0])
                pair.append(time.perf_counter() - started)
        out.append(tuple(pair))
    navigator.use_obstacles(True)
    return out


def _mean(goals, key: str) -> float:
    """Mean of ``key`` over goal results (NaN for none)."""
    return float(np.mean([getattr(g, key) for g in goals])) if goals else math.nan


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--pairs', type=int, default=50, help='start/goal pairs per world and robot')
    parser.add_argument('--worlds', nargs='+', default=['loop', 'corridors', 'clutter'])
    parser.add_argument('--robots', nargs='+', default=['diff_drive', 'ackermann'])
    parser.add_argument('--controllers', nargs='+', default=['ilqr', 'cem'])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', help='write all rows (and per-pair results) to this file')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    values = mpc_params()
    settings = MpcSettings.from_params(values)
    rows = []
    print(f'# {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, '
          f'{args.pairs} pairs per world and robot')
    for world_name in args.worlds:
        world = World.load(world_name)
        grid = world_grid(world, 0.05)
        for robot in args.robots:
            true = sim_robot(robot)
            nav = NavSettings(robot=robot, radius=true.radius, wheelbase=true.wheelbase,
                              max_steer=true.max_steer, max_steer_rate=true.max_steer_rate)
            navigator = Navigator(grid, settings, nav)
            rng = np.random.default_rng(args.seed)
            pairs = random_pairs(world, navigator.planner, args.pairs, nav.radius, rng)
            ratios = [t for _, _, plan in pairs for t in solve_times(navigator, plan)]
            with_obs, without = np.array(ratios).T
            for controller in args.controllers:
                results = []
                for i, (start, goal, _) in enumerate(pairs):
                    r = drive(world, [goal], robot=robot, seed=args.seed + i, start=start, grid=grid,
                              mpc_values=values, nav=nav, controller=controller, true_robot=true)
                    results.append(r)
                goals = [r.goals[0] for r in results]
                reached = [g for g in goals if g.reached]
                all_ticks = np.array([r.tick_p50_ms for r in results])
                row = dict(world=world_name, robot=robot, controller=controller, pairs=len(pairs),
                           reached_pct=100.0 * len(reached) / len(goals),
                           collisions=int(sum(g.collisions for g in goals)),
                           min_clearance=float(min(g.min_clearance for g in goals)),
                           path_length=_mean(reached, 'path_length'), time=_mean(reached, 'time'),
                           tick_p50_ms=float(np.median(all_ticks)),
                           tick_p99_ms=float(max(r.tick_p99_ms for r in results)),
                           solve_obstacles_ms=float(np.median(with_obs) * 1e3),
                           solve_plain_ms=float(np.median(without) * 1e3),
                           solve_ratio=float(np.median(with_obs / without)),
                           goals=[g.__dict__ for g in goals])
                rows.append(row)
                print(f'{world_name:10s} {robot:10s} {controller:5s} reached {row["reached_pct"]:5.1f} % '
                      f'collisions {row["collisions"]} min clearance {row["min_clearance"]:.3f} m '
                      f'length {row["path_length"]:.2f} m time {row["time"]:.1f} s '
                      f'tick p50 {row["tick_p50_ms"]:.1f} p99 {row["tick_p99_ms"]:.1f} ms | warm solve '
                      f'{row["solve_obstacles_ms"]:.1f} vs {row["solve_plain_ms"]:.1f} ms without obstacles '
                      f'(ratio p50 {row["solve_ratio"]:.2f})', flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + '\n', encoding='utf-8')
    return 0


if __name__ == '__main__':
    sys.exit(main())
