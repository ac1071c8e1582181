"""SLAM update time per keyframe over a long run (many laps of the loop world), and how it grows.

    .venv/bin/python bench/slam.py [--laps 6] [--no-peers]

Drives ``--laps`` laps of the loop world in the simulator (10 Hz scans, drifting odometry),
runs :class:`diffopt_ros.slam.SlamSystem` on it and prints, per lap, the per-keyframe update
time (front end + back end) and the back-end solve time: median, 90th percentile and maximum,
with the number of full re-solves and loop closures. A least-squares line through the local
(windowed) solve times against the number of keyframes gives their growth per 100 keyframes.

Peers, on the SAME graph replayed keyframe by keyframe (same edges, weights and Huber loss),
in the same run: a full Levenberg-Marquardt re-solve of the whole graph per keyframe (the same
nlls solver, warm-started, same iteration cap), and GTSAM's iSAM2 (incremental smoothing,
C++). Ratios are back-end time per keyframe in the last lap, ours / peer (< 1: ours faster),
and the absolute trajectory error (RMSE of keyframe positions, m) of each against the truth.
The occupancy grid is updated every 20 scans (slam_node's default map.publish_period, 2 s);
its time per update is printed per lap (it grows after a full re-solve, which moves every
keyframe). Times are thread CPU time (``time.thread_time``), so other processes on a shared
machine do not inflate them; single torch thread.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from diffopt_ros.lie import SE2, wrap_angle
from diffopt_ros.nlls import Optimizer
from diffopt_ros.sim import Rollout, SensorParams, Simulator, World
from diffopt_ros.slam.graph import ODOM, SlamGraph, build_objective, information_by_kind
from diffopt_ros.slam.system import SlamConfig, SlamSystem


def simulate(laps: int, seed: int):
    """``laps`` laps of the loop world's route, driven closed-loop on the TRUE pose (a simple
    turn-then-drive waypoint follower: open-loop commands drift into the walls over many
    laps). Steps of 0.05 s, a scan every 0.1 s. Returns the world and a Rollout."""
    world = World.load('loop')
    sim = Simulator(world, seed=seed)
    route = np.tile(np.asarray(world.route), (laps, 1))
    dt, target = 0.05, 0
    time_, truth, odometry, scans, scan_steps, commands = [], [], [], [], [], []
    while target < len(route):
        k = len(time_)
        state = sim.true_state
        time_.append(sim.time)
        truth.append(state)
        odometry.append(sim.odometry)
        if k % 2 == 0:
            scans.append(sim.scan())
            scan_steps.append(k)
        dx, dy = route[target] - state[:2]
        if np.hypot(dx, dy) < 0.25:
            target += 1
            continue
        error = wrap_angle(np.arctan2(dy, dx) - state[2])
        command = (0.0 if abs(error) > 0.3 else 0.5, float(np.clip(2.0 * error, -1.0, 1.0)))
        commands.append(command)
        sim.step(command, dt)
    return world, Rollout(time=np.array(time_), true_states=np.array(truth),
                          odometry=np.array(odometry), commands=np.array(commands),
                          scan_steps=np.array(scan_steps), scans=np.array(scans),
                          collisions=sim.collisions)


def run_slam(rollout, config: SlamConfig, map_every: int = 20):
    """Process every scan, and update the occupancy grid every ``map_every`` scans (what
    slam_node does every map.publish_period = 2 s); returns the system, one row per keyframe
    and one row ``(keyframes, thread CPU s)`` per map update."""
    slam = SlamSystem(config)
    angles, sensors = SensorParams().lidar_angles(), SensorParams()
    rows, steps, maps = [], [], []
    for n, (step, ranges) in enumerate(zip(rollout.scan_steps, rollout.scans)):
        update = slam.process(float(rollout.time[step]), rollout.odometry[step, :3], ranges,
                              angles, sensors.lidar_range_min, sensors.lidar_range_max)
        if update.keyframe is not None:
            rows.append((update.keyframe, update.cpu_seconds, update.solve_cpu_seconds, update.full_solve,
                         len(update.loop_closures)))
            steps.append(step)
        if map_every and n % map_every == map_every - 1:
            started = time.thread_time()
            slam.occupancy_grid()
            maps.append((slam.num_keyframes, time.thread_time() - started))
    return slam, np.array(rows, dtype=np.float64), steps, np.array(maps, dtype=np.float64)


def ate(poses: torch.Tensor, truth: torch.Tensor) -> float:
    """RMSE of positions (m)."""
    return float((poses[:, :2] - truth[:, :2]).norm(dim=1).square().mean().sqrt())


def full_resolve_peer(graph: SlamGraph, config: SlamConfig):
    """Replay: per keyframe, add its edges and re-solve the whole graph (warm start)."""
    by_kind = config.weights.information_by_kind()
    estimate = graph.odom_poses[:1].clone()
    times = []
    order = graph.edges[:, 1]
    for k in range(1, len(graph.stamps)):
        odom_edge = graph.measurements[(order == k) & (graph.kinds == ODOM)][0]
        estimate = torch.cat((estimate, SE2.compose(estimate[-1], odom_edge)[None]))
        keep = order <= k
        sub = SlamGraph(graph.stamps[:k + 1], graph.odom_poses[:k + 1], estimate,
                        graph.edges[keep], graph.measurements[keep], graph.kinds[keep],
                        graph.fitness[keep])
        started = time.thread_time()
        with torch.no_grad():
            objective, _ = build_objective(sub, by_kind, config.weights.robust_scale)
            optimizer = Optimizer(objective, max_iterations=config.iterations, dense_max=300)
            estimate = optimizer.solve()['poses'][0].clone()
        times.append(time.thread_time() - started)
    return estimate, np.array(times)


def isam2_peer(graph: SlamGraph, config: SlamConfig):
    """Replay into GTSAM iSAM2 with the same factors (Huber on scan and loop edges)."""
    import gtsam

    weights = config.weights
    by_kind = information_by_kind(*(torch.tensor(v, dtype=torch.float64) for v in (
        weights.odom_xy, weights.odom_yaw, weights.scan_xy, weights.scan_yaw))).numpy()
    noise = []
    for kind, info in enumerate(by_kind):
        base = gtsam.noiseModel.Diagonal.Precisions(info)
        noise.append(base if kind == ODOM else gtsam.noiseModel.Robust.Create(
            gtsam.noiseModel.mEstimator.Huber.Create(weights.robust_scale), base))
    isam = gtsam.ISAM2()
    edges, z, kinds = graph.edges.numpy(), graph.measurements.numpy(), graph.kinds.numpy()
    first = graph.odom_poses[0].numpy()
    factors, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
    factors.add(gtsam.PriorFactorPose2(0, gtsam.Pose2(*first),
                                       gtsam.noiseModel.Isotropic.Sigma(3, 1e-3)))
    values.insert(0, gtsam.Pose2(*first))
    isam.update(factors, values)
    estimate = isam.calculateEstimate()
    times = []
    for k in range(1, len(graph.stamps)):
        started = time.thread_time()
        factors, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        for e in np.nonzero(edges[:, 1] == k)[0]:
            i = int(edges[e, 0])
            factors.add(gtsam.BetweenFactorPose2(i, k, gtsam.Pose2(*z[e]), noise[kinds[e]]))
            if kinds[e] == ODOM:
                values.insert(k, estimate.atPose2(i).compose(gtsam.Pose2(*z[e])))
        isam.update(factors, values)
        estimate = isam.calculateEstimate()
        times.append(time.thread_time() - started)
    poses = np.array([[p.x(), p.y(), p.theta()] for p in
                      (estimate.atPose2(k) for k in range(len(graph.stamps)))])
    return torch.tensor(poses), np.array(times)


def summary(values: np.ndarray) -> str:
    """``median / p90 / max`` in ms."""
    if len(values) == 0:
        return '      -'
    return (f'{1e3 * np.median(values):6.1f} / {1e3 * np.percentile(values, 90):6.1f} / '
            f'{1e3 * values.max():6.1f}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--laps', type=int, default=6, help='laps of the loop world')
    parser.add_argument('--seed', type=int, default=0, help='simulator noise seed')
    parser.add_argument('--no-peers', action='store_true', help='skip the full-resolve and iSAM2 peers')
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f'bench/slam.py: {args.laps} laps of the loop world, seed {args.seed}, '
          f'torch {torch.__version__}, 1 thread, {os.cpu_count()} CPUs')
    started = time.perf_counter()
    world, rollout = simulate(args.laps, args.seed)
    print(f'simulated {rollout.time[-1]:.0f} s ({len(rollout.scans)} scans, '
          f'{rollout.collisions} collisions) in '
          f'{time.perf_counter() - started:.1f} s')
    config = SlamConfig()
    started = time.perf_counter()
    slam, rows, steps, maps = run_slam(rollout, config)
    wall = time.perf_counter() - started
    truth = SE2.between(torch.tensor(world.start), torch.tensor(rollout.true_states[steps, :3]))
    odometry = torch.tensor(rollout.odometry[steps, :3])
    K = len(rows)
    print(f'SLAM: {K} keyframes, {slam.loop_closures} loop closures, {slam.full_solves} full '
          f're-solves, {wall:.1f} s for all {len(rollout.scans)} scans '
          f'({rollout.time[-1] / wall:.1f}x real time)\n')
    per_lap = max(K // args.laps, 1)
    print('lap  keyframes   update ms (median / p90 / max)   local solve ms (median / p90 / max)'
          '   full solves (ms each)   loops   map update ms (median / max)')
    for lap in range(args.laps):
        part = rows[lap * per_lap:(lap + 1) * per_lap if lap < args.laps - 1 else K]
        local = part[part[:, 3] == 0, 2]
        full = part[part[:, 3] == 1, 2]
        full_text = ', '.join(f'{1e3 * t:.0f}' for t in full) or '-'
        in_lap = maps[(maps[:, 0] > part[0, 0]) & (maps[:, 0] <= part[-1, 0] + 1), 1]
        map_text = (f'{1e3 * np.median(in_lap):6.1f} / {1e3 * in_lap.max():6.1f}' if len(in_lap)
                    else '-')
        print(f'{lap + 1:3d}  {int(part[0, 0]):4d}-{int(part[-1, 0]):4d}   {summary(part[:, 1]):>27}'
              f'   {summary(local):>33}   {len(full):3d} ({full_text})   {int(part[:, 4].sum()):5d}'
              f'   {map_text}')
    local = rows[rows[:, 3] == 0]
    slope, intercept = np.polyfit(local[:, 0], local[:, 2], 1)
    print(f'\nlocal solve time vs keyframes K (least squares): {1e3 * intercept:.1f} ms + '
          f'{1e5 * slope:.2f} ms per 100 keyframes (window {config.window})')
    if slam.full_solves:
        full = rows[rows[:, 3] == 1]
        print(f'full re-solves (after a loop closure that disagrees with the estimate): {len(full)}, '
              f'at K = {", ".join(str(int(k)) for k in full[:, 0])}')
    ours = ate(slam.estimate, truth)
    print(f'\nATE (keyframe positions, m): raw odometry {ate(odometry, truth):.3f}, SLAM {ours:.3f}')
    if args.no_peers:
        return
    graph = slam.graph()
    last = rows[-per_lap:, 2]
    print('\npeers on the same graph, back-end time per keyframe in the last lap '
          '(median / p90 / max ms), ratio ours / peer of the medians, ATE:')
    print(f'  ours (window {config.window}, full re-solve on loop corrections): {summary(last)}'
          f'   ATE {ours:.3f}')
    started = time.perf_counter()
    peer_poses, peer_times = full_resolve_peer(graph, config)
    print(f'  full LM re-solve per keyframe (nlls):  {summary(peer_times[-per_lap:])}   ratio '
          f'{np.median(last) / np.median(peer_times[-per_lap:]):.2f}   ATE '
          f'{ate(peer_poses, truth):.3f}   ({time.perf_counter() - started:.0f} s in all)')
    try:
        isam_poses, isam_times = isam2_peer(graph, config)
    except ImportError:
        print('  GTSAM iSAM2: gtsam not installed')
        return
    print(f'  GTSAM iSAM2 (C++):                     {summary(isam_times[-per_lap:])}   ratio '
          f'{np.median(last) / np.median(isam_times[-per_lap:]):.2f}   ATE {ate(isam_poses, truth):.3f}')
    print('  growth over the run (median of the first lap -> last lap): ours '
          f'{summary(rows[:per_lap, 2]).split(" /")[0].strip()} -> {np.median(last) * 1e3:.1f} ms, '
          f'full re-solve {np.median(peer_times[:per_lap]) * 1e3:.1f} -> '
          f'{np.median(peer_times[-per_lap:]) * 1e3:.1f} ms, iSAM2 '
          f'{np.median(isam_times[:per_lap]) * 1e3:.1f} -> {np.median(isam_times[-per_lap:]) * 1e3:.1f} ms')


if __name__ == '__main__':
    main()
