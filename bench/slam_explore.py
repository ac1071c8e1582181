"""An exploration without loop closures, then links to the newest pose: ours against iSAM2.

    .venv/bin/python bench/slam_explore.py [--poses 4000] [--back 2 10 50 200] [--no-peer]

A robot that explores new ground adds one pose after another, each joined only to the previous
one (an odometry edge and a scan-match edge with a Huber loss, as slam_node's back end adds
them), for ``--poses`` poses; then, one update each, a new pose with its edges to the newest
and a link from it to the pose ``--back`` poses before (a local scan match, a short loop).
Both :class:`~diffopt_ros.nlls.incremental.IncrementalSmoother` and GTSAM iSAM2 (when
installed; its Python binding and factor construction included) get the same factors and
relinearization / wildfire thresholds, start each new pose at its odometry edge composed onto
their own estimate of the previous one, and read back the estimate of all poses after each
change (iSAM2's ``calculateEstimate``); each runs the whole sequence alone (interleaved, each
would leave the CPU caches cold for the other). Reported: thread CPU per update over the
exploration (median / p99 / max / total) and of each link's update, with the variables our
update re-eliminated, and the largest position difference between the two final estimates.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from diffopt_ros.nlls.incremental import IncrementalSmoother
from diffopt_ros.slam.planar import between, compose

ODOM_INFO = np.diag([400.0, 400.0, 2500.0])      # (m^-2, m^-2, rad^-2)
SCAN_INFO = np.diag([2500.0, 2500.0, 10000.0])
HUBER = 1.0                                       # whitened units
STEP = 0.5                                        # m between poses


def _walk(poses: int, seed: int):
    """True poses ``(N, 3)`` of a meandering walk and noisy odometry and scan-match
    measurements ``(N - 1, 3)`` of each step."""
    rng = np.random.default_rng(seed)
    turn = 0.3 * np.sin(np.arange(poses) / 40.0) * STEP
    truth = np.zeros((poses, 3))
    for k in range(1, poses):
        x, y, t = truth[k - 1]
        truth[k] = (x + STEP * np.cos(t), y + STEP * np.sin(t), t + turn[k])
    step = np.c_[np.full(poses - 1, STEP), np.zeros(poses - 1), turn[1:]]
    odom = step + rng.normal(0, [0.02, 0.02, 0.01], step.shape)
    scan = step + rng.normal(0, [0.005, 0.005, 0.003], step.shape)
    return truth, odom, scan


class _Ours:
    def __init__(self, first):
        self.smoother = IncrementalSmoother()
        self.smoother.add_variable(0, first)
        self.smoother.add_prior(0, first, 1e6 * np.eye(3))
        self.smoother.update()

    def change(self, k: int, edges: list) -> tuple[float, int]:
        """Add pose ``k`` (its guess: the first edge composed onto the estimate of its source)
        and ``edges`` ``(i, j, z, information, huber)``, update; thread CPU s, re-eliminated."""
        started = time.thread_time()
        self.smoother.add_variable(k, compose(self.smoother.estimate_of(edges[0][0]).tolist(), edges[0][2]))
        for i, j, z, info, huber in edges:
            self.smoother.add_between(i, j, z, info, huber)
        stats = self.smoother.update()
        self.estimate = self.smoother.estimate()      # a copy of all poses, as iSAM2's below
        return time.thread_time() - started, stats.eliminated


class _Isam2:
    def __init__(self, first):
        import gtsam
        self.gtsam = gtsam
        self.noise = {}
        params = gtsam.ISAM2Params()
        params.setRelinearizeThreshold(0.1)
        params.relinearizeSkip = 1
        params.setOptimizationParams(gtsam.ISAM2GaussNewtonParams(1e-3))
        self.isam = gtsam.ISAM2(params)
        graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        graph.add(gtsam.PriorFactorPose2(0, gtsam.Pose2(*first), gtsam.noiseModel.Isotropic.Sigma(3, 1e-3)))
        values.insert(0, gtsam.Pose2(*first))
        self.isam.update(graph, values)
        self.estimate = self.isam.calculateEstimate()

    def _noise(self, info, huber):
        key = (info.tobytes(), huber)
        if key not in self.noise:
            base = self.gtsam.noiseModel.Diagonal.Precisions(np.diag(info))
            self.noise[key] = base if huber <= 0 else self.gtsam.noiseModel.Robust.Create(
                self.gtsam.noiseModel.mEstimator.Huber.Create(huber), base)
        return self.noise[key]

    def change(self, k: int, edges: list) -> tuple[float, int]:
        """:meth:`_Ours.change` for iSAM2 (re-eliminated variables not counted: 0)."""
        gtsam = self.gtsam
        started = time.thread_time()
        graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        values.insert(k, self.estimate.atPose2(edges[0][0]).compose(gtsam.Pose2(*edges[0][2])))
        for i, j, z, info, huber in edges:
            graph.add(gtsam.BetweenFactorPose2(i, j, gtsam.Pose2(*z), self._noise(info, huber)))
        self.isam.update(graph, values)
        self.estimate = self.isam.calculateEstimate()
        return time.thread_time() - started, 0

    def poses(self, count):
        return np.array([[p.x(), p.y(), p.theta()] for p in (self.estimate.atPose2(k) for k in range(count))])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--poses', type=int, default=4000, help='poses of the exploration (default 4000)')
    p.add_argument('--back', type=int, nargs='+', default=[2, 10, 50, 200],
                   help='links from a new pose to the pose this many before (default 2 10 50 200)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-peer', action='store_true', help='skip GTSAM iSAM2')
    args = p.parse_args(argv)
    if args.poses < 2:
        p.error(f'--poses {args.poses}: give at least 2')
    if not all(1 <= back < args.poses for back in args.back):
        p.error(f'--back {args.back}: each between 1 and --poses - 1 ({args.poses - 1})')
    truth, odom, scan = _walk(args.poses + len(args.back), args.seed)
    solvers = {'ours': _Ours(truth[0])}
    if not args.no_peer:
        try:
            solvers['iSAM2'] = _Isam2(truth[0])
        except ImportError:
            print('gtsam not installed: no peer')
    times, links = {}, {}
    for name, solver in solvers.items():        # one after the other: neither cools the other's caches
        times[name] = [solver.change(k, [(k - 1, k, odom[k - 1], ODOM_INFO, 0.0),
                                         (k - 1, k, scan[k - 1], SCAN_INFO, HUBER)])[0]
                       for k in range(1, args.poses)]
        links[name] = []
        for k, back in enumerate(args.back, start=args.poses):
            link = between(truth[k - back], truth[k])
            links[name].append(solver.change(k, [(k - 1, k, odom[k - 1], ODOM_INFO, 0.0),
                                                 (k - 1, k, scan[k - 1], SCAN_INFO, HUBER),
                                                 (k - back, k, link, SCAN_INFO, HUBER)]))
    print(f'bench/slam_explore.py: {args.poses} poses, each joined to the previous one only '
          f'(odometry, and a scan match with a Huber loss)')
    print('per update over the exploration, thread CPU ms (median / p99 / max / total):')
    for name, t in times.items():
        t = 1e3 * np.array(t)
        print(f'  {name:6s} {np.median(t):7.3f} / {np.percentile(t, 99):7.3f} / {t.max():7.2f} / '
              f'{t.sum():8.1f}')
    print('then one update each: a new pose joined to the newest, and a link from it to the pose '
          'BACK before, ms (ours: variables re-eliminated):')
    for n, back in enumerate(args.back):
        row = [f'{name} {1e3 * links[name][n][0]:7.2f}' + (f' ({links[name][n][1]} re-eliminated)'
                                                          if name == 'ours' else '') for name in solvers]
        print(f'  BACK {back:4d}: ' + ',  '.join(row))
    k = args.poses + len(args.back)
    if 'iSAM2' in solvers:
        ours, theirs = solvers['ours'].estimate, solvers['iSAM2'].poses(k)
        print(f'largest position difference ours / iSAM2 at the end: '
              f'{np.abs(ours[:, :2] - theirs[:, :2]).max():.2e} m')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
