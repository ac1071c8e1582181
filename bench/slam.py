"""SLAM update time per keyframe step over a long run (many laps of the loop world), and memory.

    .venv/bin/python bench/slam.py [--laps 6] [--no-peers]
    .venv/bin/python bench/slam.py --stream w10000 [--poses N] [--phases] [--relinearize-max N]
    .venv/bin/python bench/slam.py --soak MINUTES [--no-reuse] [--loop-interval N] [--report-every STEPS]
                                   [--gc-period S]

Modes: the default sim-driven run (below); ``--stream``: a pose-graph file (gtsam's
``w10000.graph`` or a path) fed in order, each new pose with its edges, to our incremental
smoother and to GTSAM's iSAM2 in the same run, in turns of 100 poses (median / p99 / max update
time, total, final error against batch Levenberg-Marquardt); ``--soak``: MINUTES of simulated
driving round the loop world, streamed (no rollout kept), with the occupancy grid updated every
2 s as slam_node does, reporting keyframes, edges, resident memory and update time against the
number of keyframe steps, then the back end against iSAM2 on the same graph changes (with
``--no-reuse`` every keyframe step adds a keyframe, as a robot does that maps without
localizing on its map: a graph of thousands of keyframes within minutes, where every keyframe
after the first lap could close a loop and ``loop.keyframe_interval`` (``--loop-interval``)
sets how many do; full garbage
collections run between scans every ``--gc-period`` simulated seconds, as slam_node runs them
when idle, or with ``--gc-period 0`` on Python's own schedule, inside the updates).

A *keyframe step* is a scan that moved the robot ``keyframe.distance`` / ``keyframe.angle``
from the last one used: it adds a keyframe, or (in a revisited place) is localized against an
existing one. Drives ``--laps`` laps of the loop world in the simulator (10 Hz scans,
drifting odometry), runs :class:`diffopt_ros.slam.SlamSystem` on it and prints, per lap, the
update time per keyframe step (front end + back end), the new keyframes, and the back-end
solve time per graph change (median, 90th percentile, maximum), with the iterated updates
(loop edges that disagreed with the estimate) and loop edges; then the front end alone for
new keyframes and for localizations (and the scans between keyframe steps that build the ICP
target of the keyframe last used or run a slice of the back end's reorder in progress, work
kept off the keyframe steps), and the ATE of the
keyframe estimates and of the robot pose the updates gave at every keyframe step.

Peers replay the SAME graph changes (same keyframes and edges in the same updates, same
weights and Huber loss) in the same run: a full Levenberg-Marquardt re-solve of the whole
graph per change (the same nlls solver, warm-started, same iteration cap), and GTSAM's iSAM2
(incremental smoothing, C++, with the back end's relinearization and wildfire thresholds,
relinearization checked at every update as ours does; neither computes a covariance per
change). Ratios are of the median back-end time per change, ours / peer
(< 1: ours faster); ATE is the RMSE of the keyframe positions (m) against the truth. Ours is
timed twice: in the online run (each solve between the front end's scan matching) and
replayed into a fresh back end like the peers (the changes back to back); iSAM2 too, once
replayed and once online: fed each change right after ours in the sim-driven run, so that
both solvers run between the same front-end work (their data and code no longer in the
caches, as on a robot).
The occupancy grid is updated every 20 scans (slam_node's default map.publish_period, 2 s);
its time per update is printed per lap. Times are thread CPU time (``time.thread_time``),
so other processes on a shared machine do not inflate them; single torch thread and single
BLAS thread for numpy (``OPENBLAS_NUM_THREADS=1`` unless set: the incremental smoother's dense
blocks are numpy, and a second OpenBLAS thread on a busy machine makes the calling thread
spin-wait for it, CPU time that is counted; GTSAM's iSAM2 runs on one thread).
"""
from __future__ import annotations

import os

os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')  # read when numpy loads OpenBLAS: set first

import argparse
import gc
import resource
import time
from dataclasses import replace

import numpy as np
import torch

from diffopt_ros.idle_gc import IdleCollector
from diffopt_ros.lie import SE2
from diffopt_ros.nlls import Optimizer
from diffopt_ros.params.slam import SCHEMA as SLAM_SCHEMA
from diffopt_ros.sim import Rollout, SensorParams, Simulator, World
from diffopt_ros.slam import planar
from diffopt_ros.slam.backend import PoseGraphBackend
from diffopt_ros.slam.config import SlamConfig
from diffopt_ros.slam.graph import ODOM, SlamGraph, build_objective, information_by_kind
from diffopt_ros.slam.system import SlamSystem


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


def run_slam(rollout, config: SlamConfig, map_every: int = 20, on_change=None):
    """Process every scan, and update the occupancy grid every ``map_every`` scans (what
    slam_node does every map.publish_period = 2 s). Returns the system; one row per keyframe
    step ``(keyframes after it, thread CPU s, solve CPU s, iterated, loop edges, new keyframe,
    graph changed)``; the rollout steps of the keyframe steps; the robot poses the updates
    gave then ``(steps, 3)``; the graph changes ``(K, E)`` after each; and one row
    ``(keyframes, thread CPU s)`` per map update; and the thread CPU s of each scan between
    keyframe steps that built the ICP target of the keyframe last used. ``on_change(slam)``, if
    given, is called after each graph change (untimed)."""
    slam = SlamSystem(config)
    angles, sensors = SensorParams().lidar_angles(), SensorParams()
    rows, steps, poses, changes, maps, targets = [], [], [], [], [], []
    for n, (step, ranges) in enumerate(zip(rollout.scan_steps, rollout.scans)):
        update = slam.process(float(rollout.time[step]), rollout.odometry[step, :3], ranges,
                              angles, sensors.lidar_range_min, sensors.lidar_range_max)
        if update.keyframe is not None or update.localized is not None:
            rows.append((slam.num_keyframes, update.cpu_seconds, update.solve_cpu_seconds,
                         update.full_solve, len(update.loop_closures),
                         update.keyframe is not None, update.graph_changed))
            steps.append(step)
            poses.append(update.pose)
            if update.graph_changed:
                changes.append((slam.num_keyframes, slam.num_edges))
                if on_change is not None:
                    on_change(slam)
        elif update.cpu_seconds:
            targets.append(update.cpu_seconds)
        if map_every and n % map_every == map_every - 1:
            started = time.thread_time()
            slam.occupancy_grid()
            maps.append((slam.num_keyframes, time.thread_time() - started))
    return (slam, np.array(rows, dtype=np.float64), steps, np.array(poses), changes,
            np.array(maps, dtype=np.float64), np.array(targets))


def in_start_frame(world: World, states) -> torch.Tensor:
    """True poses ``(N, 3)`` (world frame, the first three of each state) in the frame of the
    world's start pose, where SLAM's map starts: what the ATE compares against."""
    return SE2.between(torch.tensor(world.start), torch.tensor(np.asarray(states)[:, :3]))


def ate(poses: torch.Tensor, truth: torch.Tensor) -> float:
    """RMSE of positions (m)."""
    return float((poses[:, :2] - truth[:, :2]).norm(dim=1).square().mean().sqrt())


def _initial(graph: SlamGraph, k: int, estimate: torch.Tensor) -> torch.Tensor:
    """Keyframe ``k``'s initial value: its odometry edge composed onto the estimate ``(k, 3)``
    of its source, as the online system guesses it."""
    e = int(torch.nonzero((graph.edges[:, 1] == k) & (graph.kinds == ODOM))[0])
    return SE2.compose(estimate[int(graph.edges[e, 0])], graph.measurements[e])


def full_resolve_peer(graph: SlamGraph, config: SlamConfig, changes):
    """Replay the graph changes ``(K, E)`` of the online run: per change, add its keyframes and
    edges and re-solve the whole graph (warm start)."""
    by_kind = config.weights.information_by_kind()
    estimate = graph.odom_poses[:1].clone()
    times = []
    for K, E in changes:
        for k in range(len(estimate), K):
            estimate = torch.cat((estimate, _initial(graph, k, estimate)[None]))
        sub = SlamGraph(graph.stamps[:K], graph.odom_poses[:K], estimate, graph.edges[:E],
                        graph.measurements[:E], graph.kinds[:E], graph.fitness[:E],
                        graph.degenerate[:E])
        started = time.thread_time()
        with torch.no_grad():
            objective, _ = build_objective(sub, by_kind, config.weights.robust_scale)
            optimizer = Optimizer(objective, max_iterations=config.iterations, dense_max=300)
            estimate = optimizer.solve()['poses'][0].clone()
        times.append(time.thread_time() - started)
    return estimate, np.array(times)


def backend_replay(graph: SlamGraph, config: SlamConfig, changes, iterated):
    """Replay the graph changes ``(K, E)`` of the online run into a fresh
    :class:`~diffopt_ros.slam.backend.PoseGraphBackend` as the peers get them (new keyframes
    at their odometry edge composed onto the estimate, one solve per change, iterated where the
    online run iterated), the changes back to back: the back end timed like the peers, without
    the front end's work between solves."""
    backend = PoseGraphBackend(config, graph.odom_poses.device, graph.odom_poses.dtype)
    times, K0, E0 = [], 0, 0
    for (K, E), iterate in zip(changes, iterated):
        for k in range(K0, K):
            pose = graph.odom_poses[0] if k == 0 else _initial(graph, k, backend.estimate)
            backend.add_keyframe(float(graph.stamps[k]), graph.odom_poses[k].tolist(), pose)
        for e in range(E0, E):
            backend.add_edge(int(graph.edges[e, 0]), int(graph.edges[e, 1]), graph.measurements[e],
                             int(graph.kinds[e]), float(graph.fitness[e]))
        started = time.thread_time()
        backend.solve(bool(iterate))
        times.append(time.thread_time() - started)
        K0, E0 = K, E
    return backend.estimate, np.array(times)


class Isam2Peer:
    """GTSAM iSAM2 fed graph changes ``(K, E)`` with the back end's factors (Huber on scan and
    loop edges) and settings (relinearization threshold ``config.relinearize_threshold``,
    checked at every update; wildfire ``config.wildfire_threshold``): per change one
    ``update`` and one ``calculateEstimate`` of all poses (ours: the update and the estimate
    read back to torch; neither side computes a covariance). New poses start at their
    odometry edge composed onto iSAM2's estimate of its source. ``first``: keyframe 0's pose
    ``(3,)``, held by a tight prior."""

    def __init__(self, config: SlamConfig, first: np.ndarray):
        import gtsam

        self._gtsam = gtsam
        weights = config.weights
        by_kind = information_by_kind(*(torch.tensor(v, dtype=torch.float64) for v in (
            weights.odom_xy, weights.odom_yaw, weights.scan_xy, weights.scan_yaw))).numpy()
        self._noise = []
        for kind, info in enumerate(by_kind):
            base = gtsam.noiseModel.Diagonal.Precisions(info)
            self._noise.append(base if kind == ODOM else gtsam.noiseModel.Robust.Create(
                gtsam.noiseModel.mEstimator.Huber.Create(weights.robust_scale), base))
        parameters = gtsam.ISAM2Params()
        parameters.setRelinearizeThreshold(config.relinearize_threshold)
        parameters.relinearizeSkip = 1
        parameters.setOptimizationParams(gtsam.ISAM2GaussNewtonParams(config.wildfire_threshold))
        self._isam = gtsam.ISAM2(parameters)
        factors, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        factors.add(gtsam.PriorFactorPose2(0, gtsam.Pose2(*first),
                                           gtsam.noiseModel.Isotropic.Sigma(3, 1e-3)))
        values.insert(0, gtsam.Pose2(*first))
        self._isam.update(factors, values)
        self._estimate = self._isam.calculateEstimate()
        self._K0, self._E0 = 1, 0

    def change(self, edges: np.ndarray, z: np.ndarray, kinds: np.ndarray, K: int, E: int) -> float:
        """Add keyframes up to ``K`` and the edges ``edges[E0:E] (., 2)`` with measurements
        ``z (., 3)`` and ``kinds (.,)`` (arrays of at least ``E`` rows), update; returns the
        thread CPU seconds of the change (the factors built, the update and the estimate)."""
        gtsam = self._gtsam
        started = time.thread_time()
        factors, values, guesses = gtsam.NonlinearFactorGraph(), gtsam.Values(), {}
        for e in range(self._E0, E):
            i, j = int(edges[e, 0]), int(edges[e, 1])
            factors.add(gtsam.BetweenFactorPose2(i, j, gtsam.Pose2(*z[e]), self._noise[kinds[e]]))
            if kinds[e] == ODOM and j >= self._K0:
                source = guesses[i] if i in guesses else self._estimate.atPose2(i)
                guesses[j] = source.compose(gtsam.Pose2(*z[e]))
                values.insert(j, guesses[j])
        self._isam.update(factors, values)
        self._estimate = self._isam.calculateEstimate()
        seconds = time.thread_time() - started
        self._K0, self._E0 = K, E
        return seconds

    def poses(self) -> torch.Tensor:
        """``(K, 3)`` the estimate of the keyframes added so far."""
        return torch.tensor([[p.x(), p.y(), p.theta()] for p in
                             (self._estimate.atPose2(k) for k in range(self._K0))])


def isam2_peer(graph: SlamGraph, config: SlamConfig, changes):
    """Replay the graph changes ``(K, E)`` of the online run into GTSAM iSAM2
    (:class:`Isam2Peer`), back to back; returns its estimate and the seconds per change."""
    peer = Isam2Peer(config, graph.odom_poses[0].numpy())
    edges, z, kinds = graph.edges.numpy(), graph.measurements.numpy(), graph.kinds.numpy()
    times = [peer.change(edges, z, kinds, K, E) for K, E in changes]
    return peer.poses(), np.array(times)


class Isam2Online:
    """GTSAM iSAM2 fed each graph change of the sim-driven run right after ours
    (:func:`run_slam`'s ``on_change``): both solvers then run between the same front-end work
    (scan matching, the simulator), as a robot runs its back end. ``times``: thread CPU
    seconds per change; ``wall``: wall-clock seconds of all calls (the graph read included),
    which the run's own wall time leaves out."""

    def __init__(self, config: SlamConfig):
        self._config, self._peer, self.times, self.wall = config, None, [], 0.0

    def __call__(self, slam: SlamSystem) -> None:
        started = time.perf_counter()
        graph = slam.graph()
        if self._peer is None:
            self._peer = Isam2Peer(self._config, graph.odom_poses[0].numpy())
        self.times.append(self._peer.change(graph.edges.numpy(), graph.measurements.numpy(),
                                            graph.kinds.numpy(), slam.num_keyframes, slam.num_edges))
        self.wall += time.perf_counter() - started


def resident_mib() -> float:
    """Resident set size of this process now (MiB), from /proc/self/statm."""
    with open('/proc/self/statm') as stream:
        return int(stream.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _freeze_start_up() -> None:
    """Move every object alive now out of the garbage collector's generations, as the nodes
    do once started (``diffopt_ros/nodes/runner.py``): a full collection then scans only
    what was made since (without this, about 0.1 s per full collection for torch's modules
    alone, on whichever update allocates then)."""
    gc.collect()
    gc.freeze()


def soak(minutes: float, seed: int, config: SlamConfig, report_every: int = 500,
         gc_period: float = SLAM_SCHEMA['gc.full_collection_period'].default) -> None:
    """Drive ``minutes`` of simulated time round the loop world (scans streamed, nothing
    kept but the SLAM state), update the occupancy grid every 20 scans (2 s) as slam_node
    does, and print per ``report_every`` keyframe steps (scans used: new keyframes and
    localizations on existing ones): keyframes and edges in the graph, resident memory, the
    occupancy grid's own bytes, and the keyframe-step update time (thread CPU). The objects
    alive before the drive are frozen out of the garbage collector, and full collections run
    between scans every ``gc_period`` s of simulated time (untimed; 0: Python's own schedule,
    inside whichever step allocates), as slam_node does."""
    world = World.load('loop')
    sensors = SensorParams()
    angles = sensors.lidar_angles()
    slam = SlamSystem(config)
    _freeze_start_up()
    clock = [0.0]
    collector = IdleCollector(gc_period, clock=lambda: clock[0]) if gc_period > 0 else None
    full = [0]

    def count_full(phase, info):
        full[0] += phase == 'start' and info['generation'] == 2
    gc.callbacks.append(count_full)
    if collector is not None:
        collector.start()
    started, scans, rows, bin_times, bin_solves, solves, changes, steps, between, idle = \
        time.perf_counter(), 0, [], [], [], [], [], [], [], []
    print(f'soak: {minutes:g} simulated minutes of the loop world, seed {seed}\n')
    print('     steps  keyframes   edges  sim time s  RSS MiB  grid MiB  RSS - grid MiB'
          '   update ms (median / p99 / max)   solve ms (median / max)   between scans ms (max)'
          '   wall s')
    truth = []      # the true pose at each new keyframe (ATE)
    for now, state, odom, ranges, _ in drive(world, seed, seconds=60.0 * minutes):
        if ranges is None:
            continue
        update = slam.process(float(now), odom[:3], ranges, angles, sensors.lidar_range_min,
                              sensors.lidar_range_max)
        if update.keyframe is not None:
            truth.append(state[:3].copy())
        scans += 1
        if scans % 20 == 0:
            slam.occupancy_grid()
        clock[0] = float(now)
        if collector is not None:
            collector.idle()
        if update.keyframe is None and update.localized is None:
            between.append(update.cpu_seconds)       # ICP targets built ahead, reorder slices
            idle.append(update.cpu_seconds)
            continue
        bin_times.append(update.cpu_seconds)
        steps.append(update.cpu_seconds)
        if update.graph_changed:
            bin_solves.append(update.solve_cpu_seconds)
            solves.append(update.solve_cpu_seconds)
            changes.append((slam.num_keyframes, slam.num_edges))
        count = len(rows) * report_every + len(bin_times)
        if len(bin_times) == report_every:
            mapper = slam._mapper
            grid = 0.0 if mapper is None or mapper._hits is None else \
                2 * mapper._hits.numel() * mapper._hits.element_size() / 2 ** 20
            rss = resident_mib()
            times, solved = np.array(bin_times), np.array(bin_solves or [0.0])
            rows.append((count, rss, grid, slam.num_keyframes))
            print(f'{count:10d}  {slam.num_keyframes:9d}  {slam.num_edges:6d}  {now:10.0f}  '
                  f'{rss:7.1f}  {grid:8.1f}  {rss - grid:14.1f}   '
                  f'{1e3 * np.median(times):6.1f} / {1e3 * np.percentile(times, 99):6.1f} / '
                  f'{1e3 * times.max():6.1f}   {1e3 * np.median(solved):7.2f} / {1e3 * solved.max():6.1f}'
                  f'   {1e3 * max(between, default=0.0):22.1f}'
                  f'   {time.perf_counter() - started:6.0f}', flush=True)
            bin_times, bin_solves, between = [], [], []
    gc.callbacks.remove(count_full)
    if collector is not None:
        collector.stop()
        print(f'\nfull garbage collections between scans, every {gc_period:g} s of simulated time '
              f'(slam_node\'s gc.full_collection_period): {collector.collections}, thread CPU '
              f'{1e3 * collector.seconds / max(collector.collections, 1):.1f} ms each on average, '
              f'longest {1e3 * collector.longest:.1f} ms; full collections elsewhere (inside '
              f'updates): {full[0] - collector.collections}')
    else:
        print(f'\nfull garbage collections (Python\'s schedule, inside updates): {full[0]}')
    steps = np.sort(steps)[::-1]
    print(f'keyframe steps: {len(steps)}, over 30 ms: {int((steps > 0.03).sum())}, over 50 ms: '
          f'{int((steps > 0.05).sum())}; the ten longest (ms): '
          f'{", ".join(f"{1e3 * t:.1f}" for t in steps[:10])}')
    idle = np.sort(idle)[::-1]
    print(f'scans between keyframe steps with work (ICP targets built ahead, reorder slices): '
          f'{int((idle > 0).sum())}, over 30 ms: {int((idle > 0.03).sum())}, over 50 ms: '
          f'{int((idle > 0.05).sum())}; the ten longest (ms): '
          f'{", ".join(f"{1e3 * t:.1f}" for t in idle[:10])}')
    rows = np.array(rows)
    if len(rows) >= 4:
        half = rows[len(rows) // 2:]
        slope = np.polyfit(half[:, 0], half[:, 1] - half[:, 2], 1)[0]
        grew = half[-1, 3] - half[0, 3] >= 0.5 * (half[-1, 0] - half[0, 0])   # mostly new keyframes
        per_keyframe = (f', {1024 * np.polyfit(half[:, 3], half[:, 1] - half[:, 2], 1)[0]:.1f} KiB per '
                        f'keyframe' if grew else '')
        smoother = slam.backend._smoother
        print(f'\n{slam.num_keyframes} keyframes, {slam.num_edges} edges, {slam.loop_closures} '
              f'loop edges (loop.keyframe_interval {config.loop_interval}), {slam.localizations} '
              f'localizations, '
              f'{0 if smoother is None else smoother.reorders} reorders of the Bayes tree; resident '
              f'memory (without the grid) over the second half: {1024 * slope:.1f} KiB per keyframe '
              f'step{per_keyframe}')
    truth = in_start_frame(world, truth)
    print(f'ATE of the keyframe positions (m): online estimate {ate(slam.estimate, truth):.4f}')
    try:
        isam_poses, isam_times = isam2_peer(slam.graph(), config, changes)
    except ImportError:
        return
    print(f'ATE of the keyframe positions (m): GTSAM iSAM2 on the same changes '
          f'{ate(isam_poses, truth):.4f}')
    ours = np.array(solves)
    print(f'\nback-end per graph change ({len(ours)} changes), ours then GTSAM iSAM2 on the same '
          f'changes: median {1e3 * np.median(ours):.2f} / {1e3 * np.median(isam_times):.2f} ms, '
          f'max {1e3 * ours.max():.1f} / {1e3 * isam_times.max():.1f} ms, ratio of medians '
          f'{np.median(ours) / np.median(isam_times):.2f}')


def _phase_timers() -> list[dict[str, float]]:
    """Wrap the steps of an incremental update (linearization, ordering, clique formation,
    elimination of large and small tops, back-substitution, and the dense step of each clique
    inside them) with thread-CPU accumulators; returns the list that gets one dict per update
    (``seconds by step``) when :func:`_phase_mark` is called after it."""
    from diffopt_ros.nlls import bayes_tree
    from diffopt_ros.nlls.factor_store import FactorStore

    current: dict[str, float] = {}

    def timed(owner, name):
        inner = getattr(owner, name)

        def wrapper(*args, **kwargs):
            begin = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                current[name] = current.get(name, 0.0) + time.thread_time() - begin
        setattr(owner, name, wrapper)

    for name in ('_order', '_cliques', '_factorize', '_factorize_small', 'solve'):
        timed(bayes_tree.BayesTree, name)
    timed(bayes_tree, '_eliminate_clique')
    timed(FactorStore, 'linearize')
    return [current]


def _phase_mark(timers: list[dict[str, float]]) -> None:
    """Close the current update's phase times (see :func:`_phase_timers`)."""
    timers.append(dict(timers[0]))
    timers[0].clear()


class _CollectionTimes:
    """Wall time and objects freed of each garbage collection that starts while ``active``,
    by generation (a ``gc.callbacks`` entry: :meth:`record`)."""

    def __init__(self):
        self.pauses = {0: [], 1: [], 2: []}
        self.freed = {0: 0, 1: 0, 2: 0}
        self.active = False
        self._started = None

    def record(self, phase: str, info: dict) -> None:
        if phase == 'start':
            self._started = time.perf_counter() if self.active else None
        elif self._started is not None:
            self.pauses[info['generation']].append(time.perf_counter() - self._started)
            self.freed[info['generation']] += info['collected']


_STREAM_BLOCK = 100      # --stream: poses per turn of each solver


def _isam2_stream_graph(data, edges_of: list[list[int]], N: int, prior: np.ndarray):
    """GTSAM's factor graph of the first ``N`` poses of a 2D pose-graph file: the prior on pose
    0, then each pose's edges (``edges_of``) in stream order; returns it and, per pose from 1,
    the range of its factors' indices."""
    import gtsam

    i, j = data.i.numpy(), data.j.numpy()
    z, info = data.measurements.numpy(), data.information.numpy()
    graph = gtsam.NonlinearFactorGraph()
    graph.add(gtsam.PriorFactorPose2(0, gtsam.Pose2(*data.poses[0].numpy()),
                                     gtsam.noiseModel.Gaussian.Information(prior)))
    factors_of, first = [], 1
    for k in range(1, N):
        for e in edges_of[k]:
            graph.add(gtsam.BetweenFactorPose2(int(i[e]), int(j[e]), gtsam.Pose2(*z[e]),
                                               gtsam.noiseModel.Gaussian.Information(info[e])))
        factors_of.append(range(first, first + len(edges_of[k])))
        first += len(edges_of[k])
    return graph, factors_of


def stream(name: str, poses: int | None, phases: bool = False,
           relinearize_max: int = SlamConfig().relinearize_max) -> None:
    """Feed a pose-graph file in order (each new pose with its edges, the initial value of a
    pose composed from the previous estimate and its odometry edge) to our incremental smoother
    and to GTSAM's iSAM2 (default parameters: relinearize threshold 0.1, wildfire 0.001,
    relinearization checked every 10th update; ours uses the same settings), timing each update
    (thread CPU: the new pose's initial value, composed on Python floats for ours and with
    ``gtsam.Pose2`` for iSAM2, its factors, the update and the new pose's estimate). The two
    take turns, ``_STREAM_BLOCK`` poses each (every update of a block runs after the previous
    one of the same solver, as it would alone, and the turns are seconds apart), so that a
    drift of the shared machine's speed during the run (iSAM2's total moved by 40 % between
    runs when the two ran one after the other) weighs on both alike. Then the final errors are
    compared with batch Levenberg-Marquardt (GTSAM's, from the file's initial values). The
    objects alive before the stream (torch's and gtsam's modules, the file's data: about
    200,000) are moved out of the garbage collector's generations (``gc.freeze``, as a latency-
    sensitive Python process does after start-up): otherwise each full collection rescans them,
    a pause of up to 160 ms that falls on whichever update, ours or iSAM2's, allocates at that
    moment. The collections during ours are reported (count, time, longest, objects freed: what
    a long-running node would pause for). ``phases``: ours only, with the thread CPU time of
    each step of its updates (total and in the longest updates). ``relinearize_max``: ours
    relinearizes at most this many poses per update (default slam_node's; 0: all at once; iSAM2
    has no such bound)."""
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
        odometry.append(tuple(z[e].tolist()) if i[e] == k - 1 else planar.inverse(z[e].tolist()))
    prior = 1e6 * np.eye(3)
    _freeze_start_up()
    print(f'stream: {path}, {N} poses, {sum(map(len, edges_of))} edges, in order, one update per pose'
          + (f'; ours relinearizes at most {relinearize_max} poses per update' if relinearize_max else ''))
    timers = _phase_timers() if phases else None
    smoother = IncrementalSmoother(SE2, relinearize_threshold=0.1, wildfire_threshold=1e-3,
                                   relinearize_skip=10, relinearize_max=relinearize_max)
    collections = _CollectionTimes()
    gc.callbacks.append(collections.record)
    collections.active = True
    started = time.thread_time()
    smoother.add_variable(0, data.poses[0].numpy())
    smoother.add_prior(0, data.poses[0].numpy(), prior)
    smoother.update()
    ours_total = time.thread_time() - started
    collections.active = False
    if timers is None:
        graph, factors_of = _isam2_stream_graph(data, edges_of, N, prior)
        isam = gtsam.ISAM2()
        started = time.thread_time()
        new, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        new.add(graph.at(0))
        values.insert(0, gtsam.Pose2(*data.poses[0].numpy()))
        isam.update(new, values)
        last = isam.calculateEstimate([0]).atPose2(0)
        theirs_total = time.thread_time() - started
    ours, theirs = [], []
    for first in range(1, N, _STREAM_BLOCK):       # the two in turn, a block of poses each
        block = range(first, min(first + _STREAM_BLOCK, N))
        for k in block:
            collections.active = True
            begin = time.thread_time()
            previous = smoother.estimate_of(k - 1).tolist()
            smoother.add_variable(k, planar.compose(previous, odometry[k - 1]))
            for e in edges_of[k]:
                smoother.add_between(int(i[e]), int(j[e]), z[e], info[e])
            stats = smoother.update()
            ours.append(time.thread_time() - begin)
            collections.active = False
            if timers is not None:
                _phase_mark(timers)
                timers[-1]['stats'] = stats
        if timers is not None:
            continue
        for k in block:
            begin = time.thread_time()
            new, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
            for f in factors_of[k - 1]:
                new.add(graph.at(f))
            values.insert(k, last.compose(gtsam.Pose2(*odometry[k - 1])))
            isam.update(new, values)
            last = isam.calculateEstimate([k]).atPose2(k)
            theirs.append(time.thread_time() - begin)
    gc.callbacks.remove(collections.record)
    ours_total += sum(ours)
    for generation in (0, 1, 2):
        pauses = np.array(collections.pauses[generation] or [0.0])
        print(f'garbage collections of generation {generation} during ours: '
              f'{len(collections.pauses[generation])}, {1e3 * pauses.sum():.0f} ms in all, '
              f'longest {1e3 * pauses.max():.1f} ms, {collections.freed[generation]} objects freed')
    if timers is not None:
        per_update = timers[1:]
        steps = sorted({key for row in per_update for key in row} - {'stats'})
        print(f'ours: {ours_total:.2f} s thread CPU over {N - 1} updates; by step (s; '
              '_eliminate_clique is inside _factorize and _factorize_small):')
        print('  ' + ', '.join(f'{key} {sum(row.get(key, 0.0) for row in per_update):.2f}' for key in steps))
        print('longest updates (ms by step; variables relinearized / re-eliminated / solved):')
        for k in np.argsort(ours)[::-1][:8]:
            row = per_update[k]
            print(f'  pose {k + 1}: {1e3 * ours[k]:.1f} ms; '
                  + ', '.join(f'{key} {1e3 * row[key]:.1f}' for key in steps if key in row)
                  + f'; {row["stats"].relinearized} / {row["stats"].eliminated} / {row["stats"].solved}')
        return
    theirs_total += sum(theirs)
    ours_estimate = smoother.estimate()
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
    return (f'{1e3 * np.median(values):6.2f} / {1e3 * np.percentile(values, 90):6.2f} / '
            f'{1e3 * values.max():6.2f}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--laps', type=int, default=6, help='laps of the loop world')
    parser.add_argument('--seed', type=int, default=0, help='simulator noise seed')
    parser.add_argument('--no-peers', action='store_true', help='skip the full-resolve and iSAM2 peers')
    parser.add_argument('--stream', metavar='GRAPH', help="stream a 2D pose-graph file ('w10000': "
                        "gtsam's example data, or a path) into ours and GTSAM iSAM2")
    parser.add_argument('--poses', type=int, help='--stream: only the first POSES poses')
    parser.add_argument('--relinearize-max', type=int, default=SlamConfig().relinearize_max, metavar='N',
                        help='--stream: ours relinearizes at most N poses per update, those '
                        "lowest in the tree first (default: slam_node's, %(default)s; 0: all at once)")
    parser.add_argument('--phases', action='store_true',
                        help='--stream: ours only, thread CPU time of each step of its updates')
    parser.add_argument('--soak', type=float, metavar='MINUTES',
                        help='drive MINUTES of simulated time; report memory and update time')
    parser.add_argument('--no-reuse', action='store_true',
                        help='--soak: keyframe.reuse_distance 0 (every keyframe step adds a keyframe)')
    parser.add_argument('--gc-period', type=float, metavar='SECONDS',
                        default=SLAM_SCHEMA['gc.full_collection_period'].default,
                        help="--soak: simulated seconds between full garbage collections run "
                        "between scans, as slam_node's gc.full_collection_period (default "
                        "%(default)s; 0: Python's own schedule)")
    parser.add_argument('--loop-interval', type=int, default=SlamConfig().loop_interval, metavar='N',
                        help="--soak: slam_node's loop.keyframe_interval (default %(default)s; 1: "
                        "every keyframe searches for a loop closure)")
    parser.add_argument('--report-every', type=int, default=500, metavar='STEPS',
                        help='--soak: keyframe steps per printed row (default 500)')
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.stream:
        print(f'bench/slam.py --stream {args.stream}: torch {torch.__version__}, 1 thread, '
              f'{os.cpu_count()} CPUs')
        if args.relinearize_max < 0:
            parser.error(f'--relinearize-max {args.relinearize_max}: must be 0 (all) or positive')
        stream(args.stream, args.poses, args.phases, args.relinearize_max)
        return
    if args.soak:
        if args.loop_interval < 1:
            parser.error(f'--loop-interval {args.loop_interval}: must be at least 1')
        config = replace(SlamConfig(), loop_interval=args.loop_interval)
        if args.report_every < 1:
            parser.error(f'--report-every {args.report_every}: must be at least 1')
        if not args.gc_period >= 0:
            parser.error(f'--gc-period {args.gc_period}: must be 0 (Python\'s schedule) or positive')
        soak(args.soak, args.seed, replace(config, reuse_distance=0.0) if args.no_reuse else config,
             args.report_every, args.gc_period)
        return
    print(f'bench/slam.py: {args.laps} laps of the loop world, seed {args.seed}, '
          f'torch {torch.__version__}, 1 thread, {os.cpu_count()} CPUs')
    started = time.perf_counter()
    world, rollout = simulate(args.laps, args.seed)
    print(f'simulated {rollout.time[-1]:.0f} s ({len(rollout.scans)} scans, '
          f'{rollout.collisions} collisions) in '
          f'{time.perf_counter() - started:.1f} s')
    config = SlamConfig()
    online_peer = None
    if not args.no_peers:
        try:
            import gtsam  # noqa: F401  (the peer's own import, before the run)
            online_peer = Isam2Online(config)
        except ImportError:
            pass
    started = time.perf_counter()
    slam, rows, steps, poses, changes, maps, targets = run_slam(rollout, config, on_change=online_peer)
    wall = time.perf_counter() - started - (online_peer.wall if online_peer else 0.0)
    truth_of = lambda at: in_start_frame(world, rollout.true_states[at])  # noqa: E731
    new = rows[:, 5] == 1
    keyframe_steps = [s for s, is_new in zip(steps, new) if is_new]
    truth = truth_of(keyframe_steps)
    odometry = torch.tensor(rollout.odometry[keyframe_steps, :3])
    K = len(rows)
    print(f'SLAM: {slam.num_keyframes} keyframes, {slam.num_edges} edges, {slam.loop_closures} '
          f'loop edges, {slam.localizations} localizations on existing keyframes, '
          f'{slam.full_solves} iterated updates, {wall:.1f} s for all {len(rollout.scans)} scans '
          f'({rollout.time[-1] / wall:.1f}x real time)\n')
    per_lap = max(K // args.laps, 1)
    print('lap  keyframe steps  new   update ms (median / p90 / max)   solve ms per graph change '
          '(median / p90 / max)   changes   iterated (ms each)   loops   map update ms (median / max)')
    for lap in range(args.laps):
        first, end = lap * per_lap, (lap + 1) * per_lap if lap < args.laps - 1 else K
        part = rows[first:end]
        changed = part[(part[:, 6] == 1) & (part[:, 3] == 0), 2]
        full = part[part[:, 3] == 1, 2]
        full_text = ', '.join(f'{1e3 * t:.0f}' for t in full) or '-'
        in_lap = maps[(maps[:, 0] >= part[0, 0]) & (maps[:, 0] <= part[-1, 0]), 1]
        map_text = (f'{1e3 * np.median(in_lap):6.1f} / {1e3 * in_lap.max():6.1f}' if len(in_lap)
                    else '-')
        print(f'{lap + 1:3d}  {first:5d}-{end - 1:5d}  {int(part[:, 5].sum()):5d}   '
              f'{summary(part[:, 1]):>27}   {summary(changed):>27}   {int(part[:, 6].sum()):5d}'
              f'   {len(full):3d} ({full_text})   {int(part[:, 4].sum()):5d}   {map_text}')
    print(f'all {K} keyframe steps: update ms (median / p90 / max) {summary(rows[:, 1])}')
    front = rows[:, 1] - rows[:, 2]
    print(f'\nfront end (update minus solve) per keyframe step, ms (median / p90 / max): '
          f'new keyframes {summary(front[new])}, localizations {summary(front[~new])}; '
          f'work between keyframe steps (ICP targets built ahead, reorder slices) on '
          f'{len(targets)} scans, ms (median / p90 / max): {summary(targets)}')
    ours = ate(slam.estimate, truth)
    tracking = ate(torch.tensor(poses), truth_of(steps))
    print(f'\nATE (m): keyframe positions: raw odometry {ate(odometry, truth):.3f}, SLAM {ours:.3f};'
          f' the robot pose of every keyframe step: SLAM {tracking:.3f}')
    if args.no_peers:
        return
    graph = slam.graph()
    solves = rows[rows[:, 6] == 1, 2]
    last = len(changes) - len(changes) // args.laps
    print(f'\npeers replaying the same {len(changes)} graph changes, back-end time per change '
          '(median / p90 / max ms) over all changes, ratio ours / peer of the medians, ATE:')
    print(f'  ours (incremental smoother):           {summary(solves)}   ATE {ours:.3f}')
    replay_poses, replay_times = backend_replay(graph, config, changes,
                                                rows[rows[:, 6] == 1, 3])
    print(f'  ours replayed like the peers:          {summary(replay_times)}   ATE '
          f'{ate(replay_poses, truth):.3f}')
    started = time.perf_counter()
    peer_poses, peer_times = full_resolve_peer(graph, config, changes)
    print(f'  full LM re-solve per change (nlls):    {summary(peer_times)}   ratio '
          f'{np.median(solves) / np.median(peer_times):.2f}   ATE '
          f'{ate(peer_poses, truth):.3f}   ({time.perf_counter() - started:.0f} s in all)')
    try:
        isam_poses, isam_times = isam2_peer(graph, config, changes)
    except ImportError:
        print('  GTSAM iSAM2: gtsam not installed')
        return
    print(f'  GTSAM iSAM2 (C++):                     {summary(isam_times)}   ratio '
          f'{np.median(solves) / np.median(isam_times):.2f} (replayed: '
          f'{np.median(replay_times) / np.median(isam_times):.2f})   ATE {ate(isam_poses, truth):.3f}')
    online = np.array(online_peer.times)
    print(f'  GTSAM iSAM2 online (each change right after ours, in the sim-driven run): '
          f'{summary(online)}   ratio ours online / iSAM2 online {np.median(solves) / np.median(online):.2f}')
    print(f'  the last {len(changes) - last} changes: ours {summary(solves[last:])} (replayed '
          f'{summary(replay_times[last:])}), iSAM2 {summary(isam_times[last:])}, ratio of medians '
          f'{np.median(solves[last:]) / np.median(isam_times[last:]):.2f} (replayed: '
          f'{np.median(replay_times[last:]) / np.median(isam_times[last:]):.2f})')


if __name__ == '__main__':
    main()
