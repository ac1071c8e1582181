"""Obstacle-aware navigation: success, collisions, clearance and control-loop cost per world and robot.

    .venv/bin/python bench/navigation.py --out runs/nav [--pairs 50] [--jobs 2]
        [--worlds loop corridors clutter] [--robots diff_drive ackermann]
        [--controllers ilqr cem] [--seed 0] [--solve-points 3] [--json summary.json] [--summary-only]

For each world and robot, ``--pairs`` random start/goal pairs are drawn (seeded): both at least
0.3 m beyond the robot radius from any obstacle, 3-12 m apart, the goal reachable on the world's
grid (the same :class:`~diffopt_ros.planning.GridPlanner` the robot plans with). Each pair is
driven by :func:`diffopt_ros.drive.drive` (simulator + SLAM + MPC in lock-step at 20 Hz, the
MPC of config/mpc.yaml with the obstacle cost) with each of ``--controllers``: ``ilqr`` (the
MPC) and ``cem`` (the CEM sampler on the same model and costs). The drive has no wall-clock
deadline (the solver's iteration cap bounds a tick), so whether a pair succeeds does not depend
on the machine's load; tick times do, and each pair's file holds the load average around it.

Each drive is one task of a pool of ``--jobs`` processes (1 torch thread each) and writes
``OUT/<world>_<robot>_<controller>_<seed>_<pair>.json`` (goal result, tick figures, load);
existing files are kept, so an interrupted sweep resumes where it stopped. Pairs run in order
of their index across worlds, robots and controllers, so a sweep stopped early has the same
pairs of each (``--summary-only`` then summarises the files there are). The summary (rows,
printed and written to ``--json``) is built from the files of the pairs asked for: per world,
robot and controller: reached, collisions (simulator steps in contact, summed), stop-zone
ticks (the MPC's speed cut by ``navigation.stop_margin``, summed), minimum
clearance (m, robot centre to obstacle surface; the footprint touches at the robot radius,
0.2 m), mean path length and time of the reached goals, and in ms the median of the drives'
p50 and the largest drive p99 of: the tick (wall time; SLAM + planning + solve), the control
part (planning + solve), SLAM (p99 only) and the tick's CPU time (``time.thread_time``); and
the tick CPU time's p50 / p99 over every tick of every pair (each file keeps its ticks' CPU
times, ``tick_cpu_ms``).

Solve time with the obstacle cost vs without (``--solve-points`` per pair, on the first 10 pairs;
one task per world and robot): on points along the pair's planned path (heading along it,
moving at the reference speed), a cold solve and then a warm-started one (the cold plan shifted
by one control period) are run for both cost variants, interleaved in the same process; the
warm-started solve times are compared (p50 of each and the p50 of the per-point ratio).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffopt_ros.drive import drive, sim_robot  # noqa: E402
from diffopt_ros.drive import nav_settings as drive_nav_settings  # noqa: E402
from diffopt_ros.learn.controller import mpc_params  # noqa: E402
from diffopt_ros.maps import world_grid  # noqa: E402
from diffopt_ros.mpc.receding import MpcSettings, advance_plan, path_reference  # noqa: E402
from diffopt_ros.navigation import Navigator, NavSettings  # noqa: E402
from diffopt_ros.sim import World  # noqa: E402
from diffopt_ros.threads import limit_threads  # noqa: E402

RESOLUTION = 0.05            # m: the map every drive plans and avoids obstacles on
SOLVE_PAIRS = 10             # pairs of a world and robot whose paths the solve-time task samples


def random_pairs(world: World, planner, n: int, radius: float, rng: np.random.Generator,
                 min_distance: float = 3.0, max_distance: float = 12.0):
    """``n`` (start pose (3,), goal (2,), plan) triples: free (0.3 m beyond ``radius``), reachable, apart."""
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


def nav_settings(robot: str) -> NavSettings:
    """The navigation settings of ``robot`` in a drive with config/mpc.yaml
    (:func:`diffopt_ros.drive.nav_settings`)."""
    return drive_nav_settings(robot, mpc_params(), sim_robot(robot))


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


def _write(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically (a killed sweep leaves no half-written file)."""
    partial = path.with_suffix('.part')
    partial.write_text(json.dumps(data, indent=1) + '\n', encoding='utf-8')
    partial.replace(path)


def drive_task(world_name: str, robot: str, controller: str, seed: int, index: int, start, goal,
               path: str) -> str:
    """Drive one pair and write its file (a pool task; returns a progress line)."""
    limit_threads(1)
    world = World.load(world_name)
    load = os.getloadavg()[0]
    began = time.perf_counter()
    r = drive(world, [goal], robot=robot, seed=seed + index, start=np.asarray(start),
              grid=world_grid(world, RESOLUTION), mpc_values=mpc_params(), nav=nav_settings(robot),
              controller=controller, true_robot=sim_robot(robot))
    g = r.goals[0]
    data = dict(world=world_name, robot=robot, controller=controller, seed=seed, pair=index,
                start=list(start), **g.__dict__, ticks=r.ticks,
                tick_p50_ms=r.tick_p50_ms, tick_p99_ms=r.tick_p99_ms, solve_p50_ms=r.solve_p50_ms,
                solve_p99_ms=r.solve_p99_ms, control_p50_ms=r.control_p50_ms,
                control_p99_ms=r.control_p99_ms, slam_p99_ms=r.slam_p99_ms,
                tick_cpu_p50_ms=r.tick_cpu_p50_ms, tick_cpu_p99_ms=r.tick_cpu_p99_ms,
                tick_cpu_ms=[round(t, 2) for t in r.tick_cpu_ms],
                wall_s=time.perf_counter() - began,
                load_before=load, load_after=os.getloadavg()[0])
    _write(Path(path), data)
    return (f'{world_name} {robot} {controller} pair {index}: {g.status}, {g.collisions} collisions, '
            f'{g.stop_zone} stop-zone ticks, '
            f'clearance {g.min_clearance:.3f} m, tick p50 {r.tick_p50_ms:.1f} p99 {r.tick_p99_ms:.1f} ms, '
            f'{data["wall_s"]:.0f} s, load {load:.1f}')


def solve_task(world_name: str, robot: str, seed: int, pairs: int, points: int, path: str) -> str:
    """Solve times with and without the obstacle cost on the first ``pairs`` pairs' paths (a pool task)."""
    limit_threads(1)
    world = World.load(world_name)
    navigator = Navigator(world_grid(world, RESOLUTION), MpcSettings.from_params(mpc_params()),
                          nav_settings(robot))
    load = os.getloadavg()[0]
    plans = random_pairs(world, navigator.planner, pairs, navigator.nav.radius, np.random.default_rng(seed))
    times = np.array([t for _, _, plan in plans for t in solve_times(navigator, plan, points)])
    with_obs, without = times.T
    data = dict(world=world_name, robot=robot, seed=seed, points=len(times),
                solve_obstacles_ms=float(np.median(with_obs) * 1e3),
                solve_plain_ms=float(np.median(without) * 1e3),
                solve_ratio=float(np.median(with_obs / without)),
                load_before=load, load_after=os.getloadavg()[0])
    _write(Path(path), data)
    return f'{world_name} {robot} solve times: ratio {data["solve_ratio"]:.2f}'


def _mean(goals: list[dict], key: str) -> float:
    """Mean of ``key`` over goal results (NaN for none)."""
    return float(np.mean([g[key] for g in goals])) if goals else math.nan


def _stat(statistic, results: list[dict], key: str) -> float:
    """``statistic`` of ``key`` over the results that have it (NaN for none: files of a sweep
    that did not record it)."""
    values = [g[key] for g in results if key in g]
    return float(statistic(values)) if values else math.nan


def _pooled_cpu(results: list[dict]) -> dict:
    """Tick CPU p50 / p99 (ms) over every tick of every pair (``tick_cpu_ms`` of the pair files;
    empty when a file lacks it: a sweep of an older version)."""
    if not results or not all('tick_cpu_ms' in g for g in results):
        return {}
    ticks = np.concatenate([np.asarray(g['tick_cpu_ms'], dtype=float) for g in results])
    return dict(tick_cpu_all_p50_ms=float(np.percentile(ticks, 50)),
                tick_cpu_all_p99_ms=float(np.percentile(ticks, 99)))


def summary_row(world: str, robot: str, controller: str, results: list[dict], solve: dict | None) -> dict:
    """One summary row from a world, robot and controller's per-pair results."""
    reached = [g for g in results if g['reached']]
    loads = [g[k] for g in results for k in ('load_before', 'load_after')]
    row = dict(world=world, robot=robot, controller=controller, pairs=len(results), reached=len(reached),
               reached_pct=100.0 * len(reached) / len(results),
               collisions=int(sum(g['collisions'] for g in results)),
               stop_zone=_stat(sum, results, 'stop_zone'),
               min_clearance=float(min(g['min_clearance'] for g in results)),
               path_length=_mean(reached, 'path_length'), time=_mean(reached, 'time'),
               tick_p50_ms=float(np.median([g['tick_p50_ms'] for g in results])),
               tick_p99_ms=float(max(g['tick_p99_ms'] for g in results)),
               control_p50_ms=float(np.median([g['control_p50_ms'] for g in results])),
               control_p99_ms=float(max(g['control_p99_ms'] for g in results)),
               slam_p99_ms=float(max(g['slam_p99_ms'] for g in results)),
               tick_cpu_p50_ms=_stat(np.median, results, 'tick_cpu_p50_ms'),
               tick_cpu_p99_ms=_stat(max, results, 'tick_cpu_p99_ms'),
               **_pooled_cpu(results),
               load_min=float(min(loads)), load_max=float(max(loads)),
               failed=[dict(pair=g['pair'], status=g['status'], collisions=g['collisions'])
                       for g in results if not g['reached'] or g['collisions']])
    if solve is not None and controller == 'ilqr':
        row.update({k: solve[k] for k in ('solve_obstacles_ms', 'solve_plain_ms', 'solve_ratio')})
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='folder of the per-pair JSON files (resumable)')
    parser.add_argument('--pairs', type=int, default=50, help='start/goal pairs per world and robot')
    parser.add_argument('--worlds', nargs='+', default=['loop', 'corridors', 'clutter'])
    parser.add_argument('--robots', nargs='+', default=['diff_drive', 'ackermann'],
                        choices=['diff_drive', 'ackermann'])
    parser.add_argument('--controllers', nargs='+', default=['ilqr', 'cem'], choices=['ilqr', 'cem'])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--jobs', type=int, default=2, help='worker processes (default 2)')
    parser.add_argument('--solve-points', type=int, default=3,
                        help='solve-time points per pair on the first 10 pairs (0: no solve-time task)')
    parser.add_argument('--json', help='write the summary rows to this file')
    parser.add_argument('--summary-only', action='store_true',
                        help='run nothing: summarise the pair files there are (of a sweep stopped early)')
    args = parser.parse_args(argv)
    limit_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f'# {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread per job, '
          f'{args.jobs} jobs, {args.pairs} pairs per world and robot, load {os.getloadavg()[0]:.1f}',
          flush=True)
    tasks, files = [], {}
    for world_name in args.worlds:
        world = World.load(world_name)
        for robot in args.robots:
            nav = nav_settings(robot)
            planner = Navigator(world_grid(world, RESOLUTION), MpcSettings(), nav).planner
            pairs = random_pairs(world, planner, args.pairs, nav.radius, np.random.default_rng(args.seed))
            if args.solve_points > 0:
                path = out / f'solve_{world_name}_{robot}_{args.seed}.json'
                files[world_name, robot, 'solve'] = [path]
                if not path.exists():
                    tasks.append((solve_task, world_name, robot, args.seed, min(SOLVE_PAIRS, args.pairs),
                                  args.solve_points, str(path)))
            for controller in args.controllers:
                paths = files.setdefault((world_name, robot, controller), [])
                for i, (start, goal, _) in enumerate(pairs):
                    path = out / f'{world_name}_{robot}_{controller}_{args.seed}_{i}.json'
                    paths.append(path)
                    if not path.exists():
                        tasks.append((drive_task, world_name, robot, controller, args.seed, i,
                                      start.tolist(), goal.tolist(), str(path)))
    # solve-time tasks first, then pair 0 of every world, robot and controller, then pair 1, ...:
    # a sweep stopped early has the same pairs of each
    tasks.sort(key=lambda task: -1 if task[0] is solve_task else task[5])
    if args.summary_only:
        tasks = []
    print(f'# {len(tasks)} tasks to run', flush=True)
    if tasks:
        with ProcessPoolExecutor(args.jobs) as pool:
            for line in pool.map(_call, tasks):
                print(line, flush=True)
    rows, missing = [], 0
    for (world_name, robot, controller), paths in files.items():
        done = [p for p in paths if p.exists()]
        missing += len(paths) - len(done)
        if controller == 'solve' or not done:
            continue
        solve_path = files.get((world_name, robot, 'solve'), [None])[0]
        solve = json.loads(solve_path.read_text()) if solve_path is not None and solve_path.exists() else None
        row = summary_row(world_name, robot, controller, [json.loads(p.read_text()) for p in done], solve)
        rows.append(row)
        ratio = f' | warm solve ratio {row["solve_ratio"]:.2f}' if 'solve_ratio' in row else ''
        pooled = (f', all ticks p50 {row["tick_cpu_all_p50_ms"]:.1f} p99 {row["tick_cpu_all_p99_ms"]:.1f}'
                  if 'tick_cpu_all_p99_ms' in row else '')
        print(f'{world_name:10s} {robot:10s} {controller:5s} reached {row["reached"]}/{row["pairs"]} '
              f'collisions {row["collisions"]} stop-zone ticks {row["stop_zone"]:.0f} '
              f'min clearance {row["min_clearance"]:.3f} m '
              f'length {row["path_length"]:.2f} m time {row["time"]:.1f} s | ms: tick p50 '
              f'{row["tick_p50_ms"]:.1f} p99 {row["tick_p99_ms"]:.1f}, control p50 '
              f'{row["control_p50_ms"]:.1f} p99 {row["control_p99_ms"]:.1f}, SLAM p99 '
              f'{row["slam_p99_ms"]:.1f}, tick CPU p50 {row["tick_cpu_p50_ms"]:.1f} (median pair) p99 '
              f'{row["tick_cpu_p99_ms"]:.1f} (worst pair){pooled} (load {row["load_min"]:.1f}-'
              f'{row["load_max"]:.1f}){ratio}', flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + '\n', encoding='utf-8')
    if missing:
        print(f'# {missing} pair files missing ({"not run" if args.summary_only else "failed, see above"}); '
              'rerun to run them', flush=True)
    return 1 if missing and not args.summary_only else 0


def _call(task: tuple) -> str:
    """Run a pool task ``(function, *args)``; an error is reported (its file stays missing, so a
    rerun retries it) without stopping the other tasks."""
    try:
        return task[0](*task[1:])
    except Exception as exc:           # noqa: BLE001 - reported, and the summary then fails loudly
        return f'FAILED {task[0].__name__}{task[1:-1]}: {type(exc).__name__}: {exc}'



if __name__ == '__main__':
    sys.exit(main())
