"""SLAM update time per keyframe over a long run (many laps of the loop world), and how it grows.

    .venv/bin/python bench/slam.py [--laps 6] [--no-peers]
    .venv/bin/python bench/slam.py --stream w10000 [--poses N]
    .venv/bin/python bench/slam.py --soak MINUTES

Modes: the default sim-driven run (below); ``--stream``: a pose-graph file (gtsam's
``w10000.graph`` or a path) fed in order, each new pose with its edges, to our incremental
smoother and to GTSAM's iSAM2 in the same run (median / p99 / max update time, total, final
error against batch Levenberg-Marquardt); ``--soak``: MINUTES of simulated driving round the
loop world, streamed (no rollout kept), with the occupancy grid updated every 2 s as
slam_node does, reporting resident memory and update time against the number of keyframes.

Drives ``--laps`` laps of the loop world in the simulator (10 Hz scans, drifting odometry),
runs :class:`diffopt_ros.slam.SlamSystem` on it and prints, per lap, the per-keyframe update
time (front end + back end) and the back-end solve time: median, 90th percentile and maximum,
with the number of iterated updates (loop closures that disagreed with the estimate) and loop
closures. A least-squares line through the single-update solve times against the number of
keyframes gives their growth per 100 keyframes.

Peers, on the SAME graph replayed keyframe by keyframe (same edges, weights and Huber loss),
in the same run: a full Levenberg-Marquardt re-solve of the whole graph per keyframe (the same
nlls solver, warm-started, same iteration cap), and GTSAM's iSAM2 (incremental smoothing,
C++). Ratios are back-end time per keyframe in the last lap, ours / peer (< 1: ours faster),
and the absolute trajectory error (RMSE of keyframe positions, m) of each against the truth.
The occupancy grid is updated every 20 scans (slam_node's default map.publish_period, 2 s);
its time per update is printed per lap (it grows after a loop correction, which moves many
keyframe). Times are thread CPU time (``time.thread_time``), so other processes on a shared
machine do not inflate them; single torch thread.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import Optimizer
from diffopt_ros.sim import Rollout, SensorParams, Simulator, World
from diffopt_ros.slam.graph import ODOM, SlamGraph, build_objective, information_by_kind
from diffopt_ros.slam.system import SlamConfig, SlamSystem


def drive(world: World, seed: int, laps: int | None = None, seconds: float | None = None):
    """Yield ``(time, true state, odometry, scan or None, collisions so far)`` every 0.05 s step (a scan every
    0.1 s) while driving the loop world's route closed-loop on the TRUE pose (a simple
    turn-then-drive waypoint follower at 0.5 m/s: open-loop commands drift into the walls
    over many laps), for ``laps`` laps or ``seconds`` of simulated time."""
    sim = Simulator(world, seed=seed)
    route = np.asarray(world.route)
    dt, target, k = 0.05, 0, 0
    while (laps is None or target < laps * len(route)) and (seconds is None or sim.time < seconds):
        state = sim.true_state
        yield sim.time, state, sim.odometry, (sim.scan() if k % 2 == 0 else None), sim.collisions
        k += 1
        dx, dy = route[target % len(route)] - state[:2]
        if np.hypot(dx, dy) < 0.25:
            target += 1
            continue
        error = (np.arctan2(dy, dx) - state[2] + np.pi) % (2 * np.pi) - np.pi
        sim.step((0.0 if abs(error) > 0.3 else 0.5, float(np.clip(2.0 * error, -1.0, 1.0))), dt)


def simulate(laps: int, seed: int):
    """``laps`` laps of the loop world's route, driven closed-loop on the TRUE pose (a simple
    turn-then-drive waypoint follower: open-loop commands drift into the walls over many
    laps). Steps of 0.05 s, a scan every 0.1 s. Returns the world and a Rollout."""
    world = World.load('loop')
    time_, truth, odometry, scans, scan_steps, collisions = [], [], [], [], [], 0
    for k, (now, state, odom, scan, so_far) in enumerate(drive(world, seed, laps=laps)):
        collisions = so_far
        time_.append(now)
        truth.append(state)
        odometry.append(odom)
        if scan is not None:
            scans.append(scan)
            scan_steps.append(k)
    commands = np.zeros((max(len(time_) - 1, 0), 2))     # not recorded (the driver is closed-loop)
    return world, Rollout(time=np.array(time_), true_states=np.array(truth),
                          odometry=np.array(odometry), commands=np.array(commands),
                          scan_steps=np.array(scan_steps), scans=np.array(scans),
                          collisions=collisions)


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


def resident_mib() -> float:
    """Resident set size of this process now (MiB), from /proc/self/statm."""
    with open('/proc/self/statm') as stream:
        return int(stream.read().split()[1]) * resource.getpagesize() / 2 ** 20


def soak(minutes: float, seed: int, config: SlamConfig, report_every: int = 500) -> None:
    """Drive ``minutes`` of simulated time round the loop world (scans streamed, nothing
    kept but the SLAM state), update the occupancy grid every 20 scans (2 s) as slam_node
    does, and print per ``report_every`` keyframes: resident memory, the occupancy grid's own
    bytes, and the keyframe update time (thread CPU)."""
    world = World.load('loop')
    sensors = SensorParams()
    angles = sensors.lidar_angles()
    slam = SlamSystem(config)
    started, scans, rows, bin_times, bin_solves, all_solves = time.perf_counter(), 0, [], [], [], []
    print(f'soak: {minutes:g} simulated minutes of the loop world, seed {seed}\n')
    print(' keyframes  sim time s  RSS MiB  grid MiB  RSS - grid MiB   update ms (median / p99 / max)'
          '   solve ms (median / max)   wall s')
    for now, _, odom, ranges, _ in drive(world, seed, seconds=60.0 * minutes):
        if ranges is None:
            continue
        update = slam.process(float(now), odom[:3], ranges, angles, sensors.lidar_range_min,
                              sensors.lidar_range_max)
        scans += 1
        if scans % 20 == 0:
            slam.occupancy_grid()
        if update.keyframe is None:
            continue
        bin_times.append(update.cpu_seconds)
        bin_solves.append(update.solve_cpu_seconds)
        all_solves.append(update.solve_cpu_seconds)
        K = slam.num_keyframes
        if K % report_every == 0:
            mapper = slam._mapper
            grid = 0.0 if mapper is None or mapper._hits is None else \
                2 * mapper._hits.numel() * mapper._hits.element_size() / 2 ** 20
            rss = resident_mib()
            times, solves = np.array(bin_times), np.array(bin_solves)
            rows.append((K, rss, grid))
            print(f'{K:10d}  {now:10.0f}  {rss:7.1f}  {grid:8.1f}  {rss - grid:14.1f}   '
                  f'{1e3 * np.median(times):6.1f} / {1e3 * np.percentile(times, 99):6.1f} / '
                  f'{1e3 * times.max():6.1f}   {1e3 * np.median(solves):7.2f} / {1e3 * solves.max():6.1f}'
                  f'   {time.perf_counter() - started:6.0f}', flush=True)
            bin_times, bin_solves = [], []
    rows = np.array(rows)
    if len(rows) >= 4:
        half = rows[len(rows) // 2:]
        slope = np.polyfit(half[:, 0], half[:, 1] - half[:, 2], 1)[0]
        print(f'\n{slam.num_keyframes} keyframes, {slam.loop_closures} loop closures; resident memory '
              f'(without the grid) over the second half: {1024 * slope:.1f} KiB per keyframe')
    try:
        isam_poses, isam_times = isam2_peer(slam.graph(), config)
    except ImportError:
        return
    ours = np.array(all_solves)
    print('\nback-end per keyframe on the same keyframe stream, ours then GTSAM iSAM2 (ms, median / max):')
    for first in range(0, len(ours), report_every):
        part, peer = ours[first:first + report_every], isam_times[max(first - 1, 0):first + report_every - 1]
        print(f'  keyframes {first:5d}-{first + len(part) - 1:5d}:  {1e3 * np.median(part):7.2f} / '
              f'{1e3 * part.max():7.1f}    {1e3 * np.median(peer):7.2f} / {1e3 * peer.max():7.1f}'
              f'    ratio of medians {np.median(part) / np.median(peer):5.1f}')


def stream(name: str, poses: int | None) -> None:
    """Feed a pose-graph file in order (each new pose with its edges, the initial value of a
    pose composed from the previous estimate and its odometry edge) to our incremental
    smoother and to GTSAM's iSAM2 (default parameters: relinearize threshold 0.1, wildfire
    0.001, relinearization checked every 10th update; ours uses the same settings), timing
    each update (thread CPU), then compare the final errors with batch Levenberg-Marquardt
    (GTSAM's, from the file's initial values). The objects alive before the stream (torch's
    and gtsam's modules, the file's data: about 200,000) are moved out of the garbage
    collector's generations (``gc.freeze``, as a latency-sensitive Python process does after
    start-up): otherwise each full collection rescans them, a pause of up to 160 ms that falls
    on whichever update, ours or iSAM2's, allocates at that moment."""
    import gc

    import gtsam

    from diffopt_ros.nlls.incremental import IncrementalSmoother
    from diffopt_ros.nlls.io import read_graph

    path = gtsam.findExampleDataFile(f'{name}.graph') if os.sep not in name else name
    data = read_graph(path)
    if data.group is not SE2:
        raise SystemExit(f'bench/slam.py --stream: {path} is not a 2D pose graph')
    i, j = data.i.numpy(), data.j.numpy()
    z, info = data.measurements.numpy(), data.information.numpy()
    N = len(data.poses) if poses is None else min(poses, len(data.poses))
    newest = np.maximum(i, j)
    edges_of = [[] for _ in range(N)]
    for e in np.nonzero(newest < N)[0]:
        edges_of[newest[e]].append(int(e))
    odometry = []
    for k in range(1, N):
        e = next((e for e in edges_of[k] if min(i[e], j[e]) == k - 1), None)
        if e is None:
            raise SystemExit(f'bench/slam.py --stream: {path}: pose {k} has no edge to pose {k - 1}')
        odometry.append(z[e] if i[e] == k - 1 else SE2.inverse(torch.from_numpy(z[e])).numpy())
    prior = 1e6 * np.eye(3)
    gc.collect()
    gc.freeze()
    print(f'stream: {path}, {N} poses, {sum(map(len, edges_of))} edges, in order, one update per pose')
    # ours
    smoother = IncrementalSmoother(SE2, relinearize_threshold=0.1, wildfire_threshold=1e-3,
                                   relinearize_skip=10)
    ours = []
    started = time.thread_time()
    smoother.add_variable(0, data.poses[0].numpy())
    smoother.add_prior(0, data.poses[0].numpy(), prior)
    smoother.update()
    for k in range(1, N):
        begin = time.thread_time()
        previous = torch.from_numpy(smoother.estimate_of(k - 1))
        smoother.add_variable(k, SE2.compose(previous, torch.from_numpy(odometry[k - 1])).numpy())
        for e in edges_of[k]:
            smoother.add_between(int(i[e]), int(j[e]), z[e], info[e])
        smoother.update()
        ours.append(time.thread_time() - begin)
    ours_total = time.thread_time() - started
    ours_estimate = smoother.estimate()
    # GTSAM iSAM2
    graph = gtsam.NonlinearFactorGraph()
    graph.add(gtsam.PriorFactorPose2(0, gtsam.Pose2(*data.poses[0].numpy()),
                                     gtsam.noiseModel.Gaussian.Information(prior)))
    for k in range(1, N):
        for e in edges_of[k]:
            graph.add(gtsam.BetweenFactorPose2(int(i[e]), int(j[e]), gtsam.Pose2(*z[e]),
                                               gtsam.noiseModel.Gaussian.Information(info[e])))
    factors_of, first = [], 1
    for k in range(1, N):
        factors_of.append(range(first, first + len(edges_of[k])))
        first += len(edges_of[k])
    isam, theirs = gtsam.ISAM2(), []
    started = time.thread_time()
    new, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
    new.add(graph.at(0))
    values.insert(0, gtsam.Pose2(*data.poses[0].numpy()))
    isam.update(new, values)
    last = isam.calculateEstimate([0]).atPose2(0)
    for k in range(1, N):
        begin = time.thread_time()
        new, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        for f in factors_of[k - 1]:
            new.add(graph.at(f))
        values.insert(k, last.compose(gtsam.Pose2(*odometry[k - 1])))
        isam.update(new, values)
        last = isam.calculateEstimate([k]).atPose2(k)
        theirs.append(time.thread_time() - begin)
    theirs_total = time.thread_time() - started
    isam_values = isam.calculateEstimate()
    # batch reference and errors, all with GTSAM's error of the same graph
    initial = gtsam.Values()
    for k in range(N):
        initial.insert(k, gtsam.Pose2(*data.poses[k].numpy()))
    batch = gtsam.LevenbergMarquardtOptimizer(graph, initial).optimize()
    ours_values = gtsam.Values()
    for k in range(N):
        ours_values.insert(k, gtsam.Pose2(*ours_estimate[k]))
    reference = graph.error(batch)
    ours, theirs = np.array(ours), np.array(theirs)
    print('\n                      update ms (median / p99 / max)   total s   final error   vs batch LM')
    for label, times, total, values in (('ours (incremental)', ours, ours_total, ours_values),
                                        ('GTSAM iSAM2 (C++)', theirs, theirs_total, isam_values)):
        error = graph.error(values)
        relative = (error - reference) / reference
        print(f'  {label:18}  {1e3 * np.median(times):7.2f} / {1e3 * np.percentile(times, 99):7.2f} / '
              f'{1e3 * times.max():7.1f}   {total:7.2f}   {error:11.4f}   {relative:+.2e}')
    print(f'  GTSAM batch LM: final error {reference:.4f}')
    print(f'\nratios ours / iSAM2: median {np.median(ours) / np.median(theirs):.2f}, '
          f'p99 {np.percentile(ours, 99) / np.percentile(theirs, 99):.2f}, '
          f'max {ours.max() / theirs.max():.2f}, total {ours_total / theirs_total:.2f}')


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
    parser.add_argument('--stream', metavar='GRAPH', help="stream a 2D pose-graph file ('w10000': "
                        "gtsam's example data, or a path) into ours and GTSAM iSAM2")
    parser.add_argument('--poses', type=int, help='--stream: only the first POSES poses')
    parser.add_argument('--soak', type=float, metavar='MINUTES',
                        help='drive MINUTES of simulated time; report memory and update time')
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.stream:
        print(f'bench/slam.py --stream {args.stream}: torch {torch.__version__}, 1 thread, '
              f'{os.cpu_count()} CPUs')
        stream(args.stream, args.poses)
        return
    if args.soak:
        soak(args.soak, args.seed, SlamConfig())
        return
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
    print(f'SLAM: {K} keyframes, {slam.loop_closures} loop closures, {slam.full_solves} iterated '
          f'updates, {wall:.1f} s for all {len(rollout.scans)} scans '
          f'({rollout.time[-1] / wall:.1f}x real time)\n')
    per_lap = max(K // args.laps, 1)
    print('lap  keyframes   update ms (median / p90 / max)   solve ms (median / p90 / max)'
          '   iterated (ms each)   loops   map update ms (median / max)')
    for lap in range(args.laps):
        part = rows[lap * per_lap:(lap + 1) * per_lap if lap < args.laps - 1 else K]
        local = part[part[:, 3] == 0, 2]
        full = part[part[:, 3] == 1, 2]
        full_text = ', '.join(f'{1e3 * t:.0f}' for t in full) or '-'
        in_lap = maps[(maps[:, 0] > part[0, 0]) & (maps[:, 0] <= part[-1, 0] + 1), 1]
        map_text = (f'{1e3 * np.median(in_lap):6.1f} / {1e3 * in_lap.max():6.1f}' if len(in_lap)
                    else '-')
        print(f'{lap + 1:3d}  {int(part[0, 0]):4d}-{int(part[-1, 0]):4d}   {summary(part[:, 1]):>27}'
              f'   {summary(local):>27}   {len(full):3d} ({full_text})   {int(part[:, 4].sum()):5d}'
              f'   {map_text}')
    local = rows[rows[:, 3] == 0]
    slope, intercept = np.polyfit(local[:, 0], local[:, 2], 1)
    print(f'\nsolve time vs keyframes K (least squares, single updates): {1e3 * intercept:.1f} ms + '
          f'{1e5 * slope:.2f} ms per 100 keyframes')
    if slam.full_solves:
        full = rows[rows[:, 3] == 1]
        print(f'iterated updates (after a loop closure that disagrees with the estimate): {len(full)}, '
              f'at K = {", ".join(str(int(k)) for k in full[:, 0])}')
    ours = ate(slam.estimate, truth)
    print(f'\nATE (keyframe positions, m): raw odometry {ate(odometry, truth):.3f}, SLAM {ours:.3f}')
    if args.no_peers:
        return
    graph = slam.graph()
    last = rows[-per_lap:, 2]
    print('\npeers on the same graph, back-end time per keyframe in the last lap '
          '(median / p90 / max ms), ratio ours / peer of the medians, ATE:')
    print(f'  ours (incremental smoother):           {summary(last)}'
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
