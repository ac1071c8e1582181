"""The SLAM back end's small updates on the sim course's graph changes, three ways.

    .venv/bin/python bench/slam_updates.py [--laps 6] [--copies 30]

1. *Hot*: before each graph change (not an iterated one), ``--copies`` deep copies of the
   back end are made and the change is solved on each (the first 6 warm up, untimed); per
   change the median thread CPU time of a solve, then the median over the changes. The same
   changes and back-end states every run: what an A/B of two versions of the library compares
   (``PYTHONPATH=<other checkout> .venv/bin/python bench/slam_updates.py`` runs this script on
   that checkout's library).
2. *Calls*: the change whose hot time is that median, solved on 100 more copies under
   ``cProfile``: Python-level calls per solve.
3. *Online against replayed*: ``IncrementalSmoother.update`` timed (thread CPU) in the sim-driven
   run (each update between two scan matches) and in ``backend_replay`` (the changes back to
   back, as ``bench/slam.py`` times its peers): median, and how many updates relinearize;
   and GTSAM iSAM2's median per change on the same changes (``bench/slam.py``'s peer, its
   Python binding included), when ``gtsam`` is installed.
"""
from __future__ import annotations

import argparse
import copy
import cProfile
import os
import pstats
import time

import numpy as np
import slam as slam_bench  # bench/slam.py, the script's folder
import torch

from diffopt_ros.nlls.incremental import IncrementalSmoother
from diffopt_ros.slam.backend import PoseGraphBackend
from diffopt_ros.slam.config import SlamConfig

WARM_UP = 6


def _hot_times(graph, config: SlamConfig, changes, iterated, copies: int):
    """Per non-iterated change: its index, the median thread CPU seconds of a solve on deep
    copies of the back end, and one spare copy (for the profile)."""
    backend = PoseGraphBackend(config, graph.odom_poses.device, graph.odom_poses.dtype)
    rows, K0, E0 = [], 0, 0
    for c, ((K, E), iterate) in enumerate(zip(changes, iterated)):
        for k in range(K0, K):
            pose = graph.odom_poses[0] if k == 0 else slam_bench._initial(graph, k, backend.estimate)
            backend.add_keyframe(float(graph.stamps[k]), graph.odom_poses[k].tolist(), pose)
        for e in range(E0, E):
            backend.add_edge(int(graph.edges[e, 0]), int(graph.edges[e, 1]), graph.measurements[e],
                             int(graph.kinds[e]), float(graph.fitness[e]))
        if not iterate:
            times = []
            for n, solver in enumerate([copy.deepcopy(backend) for _ in range(copies)]):
                started = time.thread_time_ns()
                solver.solve(False)
                if n >= WARM_UP:
                    times.append(time.thread_time_ns() - started)
            rows.append((c, 1e-9 * float(np.median(times)), copy.deepcopy(backend)))
        backend.solve(iterate)
        K0, E0 = K, E
    return rows


def _calls(backend: PoseGraphBackend, repeat: int = 100) -> tuple[float, float]:
    """Python-level calls per solve of ``backend``'s pending change, and its median thread CPU
    seconds without the profiler (each on its own deep copy)."""
    copies = [copy.deepcopy(backend) for _ in range(2 * repeat)]
    times = []
    for solver in copies[:repeat]:
        started = time.thread_time_ns()
        solver.solve(False)
        times.append(time.thread_time_ns() - started)
    profile = cProfile.Profile()
    for solver in copies[repeat:]:
        profile.enable()
        solver.solve(False)
        profile.disable()
    calls = sum(row[1] for row in pstats.Stats(profile).stats.values())
    return calls / repeat, 1e-9 * float(np.median(times))


def _online_and_replayed(rollout, config: SlamConfig):
    """``IncrementalSmoother.update`` in the sim-driven run and replayed: ``(thread CPU s,
    variables relinearized)`` per update, for each."""
    log = []
    update = IncrementalSmoother.update

    def timed(self, *args, **kwargs):
        started = time.thread_time()
        stats = update(self, *args, **kwargs)
        log.append((time.thread_time() - started, stats.relinearized))
        return stats

    IncrementalSmoother.update = timed
    try:
        slam, rows, _, _, changes, _, _ = slam_bench.run_slam(rollout, config)
        online = np.array(log)
        log.clear()
        iterated = [bool(row[3]) for row in rows if row[6] == 1]
        slam_bench.backend_replay(slam.graph(), config, changes, iterated)
        return online, np.array(log)
    finally:
        IncrementalSmoother.update = update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--laps', type=int, default=6, help='laps of the loop world (default 6)')
    parser.add_argument('--copies', type=int, default=30,
                        help=f'solves per change on deep copies, the first {WARM_UP} untimed (default 30)')
    args = parser.parse_args()
    if args.laps < 1:
        parser.error(f'--laps {args.laps}: must be at least 1')
    if args.copies <= WARM_UP:
        parser.error(f'--copies {args.copies}: must exceed the {WARM_UP} warm-up solves')
    torch.set_num_threads(1)
    import diffopt_ros
    print(f'bench/slam_updates.py: {args.laps} laps of the loop world, library '
          f'{os.path.dirname(diffopt_ros.__file__)}, torch {torch.__version__}, 1 thread')
    _, rollout = slam_bench.simulate(args.laps, 0)
    config = SlamConfig()
    slam, rows, _, _, changes, _, _ = slam_bench.run_slam(rollout, config)
    iterated = [bool(row[3]) for row in rows if row[6] == 1]
    graph = slam.graph()
    hot = _hot_times(graph, config, changes, iterated, args.copies)
    times = np.array([seconds for _, seconds, _ in hot])
    middle = int(np.argmin(np.abs(times - np.median(times))))
    print(f'hot: {len(hot)} changes, {args.copies - WARM_UP} timed solves each on deep copies; '
          f'median over the changes {1e6 * np.median(times):.1f} µs (mean {1e6 * times.mean():.1f})')
    calls, seconds = _calls(hot[middle][2])
    print(f'calls: change {hot[middle][0]} (at that median): {calls:.0f} Python-level calls per '
          f'solve, {1e6 * seconds:.1f} µs without the profiler')
    online, replayed = _online_and_replayed(rollout, config)
    for label, log in (('online', online), ('replayed', replayed)):
        print(f'{label}: {len(log)} updates, median {1e6 * np.median(log[:, 0]):.1f} µs, '
              f'{int((log[:, 1] == 0).sum())} relinearize nothing')
    try:
        import gtsam  # noqa: F401  (the peer's own import)
    except ImportError:
        print('GTSAM iSAM2: not installed (pip install gtsam), skipped')
        return
    _, peer = slam_bench.isam2_peer(graph, config, changes)
    print(f'GTSAM iSAM2: {len(peer)} changes, median {1e6 * np.median(peer):.1f} µs')


if __name__ == '__main__':
    main()
