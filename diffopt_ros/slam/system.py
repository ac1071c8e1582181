"""Online 2D SLAM without ROS: keyframes, scan matching, loop closure, incremental solve.

:class:`SlamSystem` takes ``(stamp, odometry pose, scan)`` and maintains keyframes, the pose
graph and its estimate. Per keyframe it

1. adds an odometry edge to the previous keyframe, and a scan edge from point-to-line ICP of
   the new scan against the previous keyframe's scan (initial guess: the odometry increment;
   kept when the fitness check passes and the correction is plausible);
2. looks for loop closures: older keyframes (at least ``loop_min_separation`` keyframes back)
   within ``loop_search_radius`` of the new pose in the current estimate, verified by ICP;
3. updates the estimate with an incremental solver
   (:class:`~diffopt_ros.nlls.incremental.IncrementalSmoother`, iSAM2-style): the new
   keyframe's edges are folded into the eliminated pose graph, only the top of the
   elimination tree that they (and the keyframes whose estimate moved from their
   linearization point) touch is re-eliminated, and the solution is back-substituted
   down to where it stops changing. A loop closure that disagrees with the estimate
   (whitened squared residual above ``loop_full_solve_chi2``) is iterated: up to
   ``iterations`` further relinearizing updates until the estimate stops moving. The cost
   per keyframe does not grow with the map on a trajectory (only the loop's path up the
   tree is re-eliminated at a loop closure); :meth:`SlamSystem.solve_full` runs batch
   Levenberg-Marquardt (the differentiable solver that learning uses; both reach the same
   optimum) and re-seeds the incremental solver from it.

Frames: the map is anchored by ``initial_pose``, the robot's map pose at the first odometry
pose the system sees (default the origin; a simulator's or a known start pose makes ground
truth, SLAM output and goals share one ``map`` frame). Odometry is taken into the map with the
fixed ``T_anchor = initial_pose * first_odometry^-1`` (keyframe 0 is held at its anchored
odometry pose); ``correction = T_map_odom`` maps raw odometry poses into the map.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import Optimizer
from diffopt_ros.nlls.incremental import IncrementalSmoother
from diffopt_ros.nlls.io import write_g2o
from diffopt_ros.slam.graph import (
    LOOP,
    ODOM,
    PRIOR_INFORMATION,
    SCAN,
    SlamGraph,
    SlamWeights,
    build_objective,
    to_g2o_data,
)
from diffopt_ros.slam.icp import IcpConfig, ScanMatch, ScanTarget, match_scans
from diffopt_ros.slam.occupancy import OccupancyGrid, OccupancyMapper
from diffopt_ros.slam.odometry import StampError
from diffopt_ros.slam.scan import point_normals, scan_to_points, voxel_downsample

TARGET_CACHE = 16
"""Keyframe scans kept as ICP targets (KD-trees) between keyframes."""


@dataclass(frozen=True)
class SlamConfig:
    """SLAM settings (m, rad, s).

    Attributes:
        keyframe_distance: new keyframe after this much translation since the last one.
        keyframe_angle: ... or this much rotation.
        voxel_size: scan down-sampling cell.
        max_range: beams longer than this are dropped (0: the scan's own ``range_max``).
        icp: scan matching between consecutive keyframes.
        scan_max_correction_xy, scan_max_correction_yaw: largest disagreement of a consecutive
            scan match with the odometry increment that is still believed.
        loop_search_radius: loop candidates lie within this distance of the new keyframe.
        loop_min_separation: candidates are at least this many keyframes older.
        loop_max_candidates: ICP is tried on up to this many candidates, oldest first, until
            one matches (at most one loop closure per keyframe).
        loop_icp: scan matching for loop closures (stricter fitness, wider initial gate).
        loop_full_solve_chi2: a loop closure whose whitened squared residual at the current
            estimate exceeds this is iterated to convergence (up to ``iterations`` updates).
        iterations: most incremental updates per keyframe (the first folds in the new edges,
            the others relinearize what moved, after a disagreeing loop closure).
        full_iterations: LM iterations of :meth:`SlamSystem.solve_full`.
        max_solve_time: wall-time cap of the extra updates of one keyframe and of a full
            solve (s).
        relinearize_threshold: a keyframe is relinearized when its estimate moved more than
            this from its linearization point (m and rad).
        wildfire_threshold: back-substitution stops where the solution changes by less
            than this (m and rad).
        weights: factor information and robust scale.
    """

    keyframe_distance: float = 0.5
    keyframe_angle: float = 0.4
    voxel_size: float = 0.05
    max_range: float = 0.0
    icp: IcpConfig = IcpConfig()
    scan_max_correction_xy: float = 0.3
    scan_max_correction_yaw: float = 0.2
    loop_search_radius: float = 3.0
    loop_min_separation: int = 5
    loop_max_candidates: int = 3
    loop_icp: IcpConfig = IcpConfig(max_iterations=40, max_correspondence_distance=1.0,
                                    min_inlier_ratio=0.6)
    loop_full_solve_chi2: float = 3.0
    iterations: int = 5
    full_iterations: int = 20
    max_solve_time: float = 1.0
    relinearize_threshold: float = 0.01
    wildfire_threshold: float = 1e-3
    weights: SlamWeights = field(default_factory=SlamWeights)


PARAMETERS: dict[str, tuple[str, ...]] = {
    'keyframe.distance': ('keyframe_distance',),
    'keyframe.angle': ('keyframe_angle',),
    'scan.voxel_size': ('voxel_size',),
    'scan.max_range': ('max_range',),
    'icp.max_iterations': ('icp.max_iterations',),
    'icp.max_correspondence_distance': ('icp.max_correspondence_distance',),
    'icp.min_inlier_ratio': ('icp.min_inlier_ratio',),
    'icp.max_rms': ('icp.max_rms', 'loop_icp.max_rms'),
    'icp.inlier_distance': ('icp.inlier_distance', 'loop_icp.inlier_distance'),
    'loop.search_radius': ('loop_search_radius',),
    'loop.min_separation': ('loop_min_separation',),
    'loop.max_candidates': ('loop_max_candidates',),
    'loop.min_inlier_ratio': ('loop_icp.min_inlier_ratio',),
    'loop.full_solve_chi2': ('loop_full_solve_chi2',),
    'optimizer.iterations': ('iterations',),
    'optimizer.full_iterations': ('full_iterations',),
    'optimizer.max_time': ('max_solve_time',),
    **{name: (f'weights.{field}',) for field, name in SlamWeights.PARAMETER_NAMES.items()},
}
"""``slam_node`` parameter name -> the :class:`SlamConfig` fields it sets (dotted paths)."""


def config_from_params(values: dict, base: SlamConfig | None = None) -> SlamConfig:
    """A :class:`SlamConfig` from ``slam_node`` parameters (names of :data:`PARAMETERS`; others
    are ignored, missing ones keep ``base``'s values; default base: ``SlamConfig()``)."""
    config = SlamConfig() if base is None else base
    for name, paths in PARAMETERS.items():
        if name in values:
            for path in paths:
                config = _replace_path(config, path.split('.'), values[name])
    return config


def config_to_params(config: SlamConfig) -> dict:
    """``{slam_node parameter: value}`` of ``config`` (the node's defaults come from here)."""
    values = {}
    for name, paths in PARAMETERS.items():
        value = config
        for part in paths[0].split('.'):
            value = getattr(value, part)
        values[name] = value
    return values


def _replace_path(obj, path: list[str], value):
    if len(path) == 1:
        kind = type(getattr(obj, path[0]))
        return replace(obj, **{path[0]: kind(value)})
    return replace(obj, **{path[0]: _replace_path(getattr(obj, path[0]), path[1:], value)})


@dataclass(frozen=True)
class SlamUpdate:
    """What one call of :meth:`SlamSystem.process` did.

    Attributes:
        stamp: scan stamp (s).
        pose: ``(x, y, yaw)`` of the robot in the map frame at the scan (m, rad).
        keyframe: index of the keyframe added, or None.
        scan_match: the consecutive scan match (None when no keyframe or the first one).
        loop_closures: indices of older keyframes linked by a new loop closure.
        full_solve: a full re-solve ran (else local, or none).
        seconds: wall time of the update (s).
        cpu_seconds: CPU time of the update on its thread (s; unaffected by other processes).
        solve_cpu_seconds: of which in the pose-graph solve and covariance (s, thread CPU).
        skipped: why the scan was not used ('' when it was).
    """

    stamp: float
    pose: tuple[float, float, float]
    keyframe: int | None = None
    scan_match: ScanMatch | None = None
    loop_closures: tuple[int, ...] = ()
    full_solve: bool = False
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    solve_cpu_seconds: float = 0.0
    skipped: str = ''


class SlamSystem:
    """Online pose-graph SLAM from odometry and 2D scans (no ROS).

    Args:
        config: settings.
        device: where scans, ICP and the graph live (``'cpu'`` or ``'cuda'``).
        dtype: float dtype of points and poses (float64 recommended).

    Example::

        slam = SlamSystem(SlamConfig())
        for stamp, odom_xyyaw, ranges in data:
            update = slam.process(stamp, odom_xyyaw, ranges, angles, 0.12, 12.0)
        slam.estimate          # (K, 3) keyframe poses in the map frame
        slam.graph()           # SlamGraph: edges, measurements, kinds (for offline learning)
    """

    def __init__(self, config: SlamConfig = SlamConfig(), device: torch.device | str = 'cpu',
                 dtype: torch.dtype = torch.float64, initial_pose=(0.0, 0.0, 0.0)):
        self.config = config
        self.initial_pose = tuple(float(v) for v in initial_pose)
        if len(self.initial_pose) != 3 or not all(math.isfinite(v) for v in self.initial_pose):
            raise ValueError(f'initial_pose must be 3 finite numbers [x, y, yaw], got {initial_pose}')
        self._anchor: tuple[float, float, float] | None = None   # T_anchor, set by anchor()
        self.device, self.dtype = torch.device(device), dtype
        self._stamps: list[float] = []
        self._odom: list[tuple[float, float, float]] = []
        self._points: list[Tensor] = []
        self._normals: list[Tensor] = []
        self._covariance: Tensor | None = None           # (3, 3) marginal of the newest keyframe
        self._estimate = torch.zeros(0, 3, dtype=dtype, device=self.device)
        self._edges: list[tuple[int, int]] = []         # appended in order of j (the new keyframe)
        self._measurements: list[Tensor] = []
        self._kinds: list[int] = []
        self._fitness: list[float] = []
        self._last_stamp = -math.inf
        self.correction: tuple[float, float, float] = (0.0, 0.0, 0.0)
        """``T_map_odom`` ``(x, y, yaw)``: map pose = correction composed with odometry pose."""
        self.loop_closures = 0
        self.full_solves = 0
        self._mapper: OccupancyMapper | None = None
        self._targets: OrderedDict[int, ScanTarget] = OrderedDict()   # recently matched scans
        self._smoother: IncrementalSmoother | None = None
        self._smoother_settings: tuple = ()             # what its factors were built with
        self._sent_edges = 0                            # edges already in the smoother

    # ------------------------------------------------------------------ properties
    @property
    def num_keyframes(self) -> int:
        """Number of keyframes K."""
        return len(self._stamps)

    @property
    def estimate(self) -> Tensor:
        """``(K, 3)`` keyframe poses ``(x, y, yaw)`` in the map frame (a copy)."""
        return self._estimate.clone()

    @property
    def covariance(self) -> Tensor | None:
        """``(3, 3)`` marginal covariance of the newest keyframe pose ``(x, y, yaw)`` with x, y
        along the map axes (m², rad²; as in ROS pose covariances), or None before the first
        keyframe. The solver's covariance is in the body frame (right perturbation); it is
        rotated by the keyframe's yaw here."""
        if self._covariance is None:
            return None
        rotate = SE2.matrix(self._estimate[-1])
        rotate[2, :2] = 0.0     # blockdiag(R(yaw), 1)
        rotate[:2, 2] = 0.0
        return rotate @ self._covariance @ rotate.T

    def set_config(self, config: SlamConfig) -> None:
        """Replace the settings (applies from the next scan)."""
        self.config = config

    def restart_time(self) -> None:
        """Accept scan stamps from a new time line (the clock jumped back: a simulator reset,
        a bag played in a loop); the graph is kept."""
        self._last_stamp = -math.inf

    # ------------------------------------------------------------------ poses
    def anchor(self, odom_pose) -> None:
        """Anchor the map at the first odometry pose seen (later calls do nothing): that pose
        is at ``initial_pose`` in the map. :meth:`process` and :meth:`map_pose` call it."""
        if self._anchor is None:
            odom = tuple(float(v) for v in odom_pose)
            self._anchor = _compose(self.initial_pose, _inverse(odom))
            self.correction = self._anchor

    def map_pose(self, odom_pose) -> tuple[float, float, float]:
        """Odometry pose ``(x, y, yaw)`` (odom frame) -> map frame, with the current correction."""
        self.anchor(odom_pose)
        return _compose(self.correction, tuple(float(v) for v in odom_pose))

    # ------------------------------------------------------------------ main entry
    def process(self, stamp: float, odom_pose, ranges, angles, range_min: float,
                range_max: float) -> SlamUpdate:
        """Use one scan and the odometry pose at its stamp.

        Args:
            stamp: scan time (s); must increase from call to call.
            odom_pose: ``(3,)`` odometry ``(x, y, yaw)`` at ``stamp`` (m, rad, odom frame).
            ranges: ``(R,)`` ranges (m); NaN, Inf and out-of-range beams are ignored.
            angles: ``(R,)`` beam angles in the robot frame (rad).
            range_min: the sensor's shortest valid range (m).
            range_max: the sensor's longest valid range (m).

        Returns:
            A :class:`SlamUpdate` (``skipped`` says why a scan was not used).

        Raises:
            StampError: ``stamp`` is not after the previous scan's.
            ValueError: the odometry pose or the stamp is not finite.
        """
        started = time.perf_counter()
        raw = tuple(float(v) for v in odom_pose)
        if not (math.isfinite(stamp) and all(math.isfinite(v) for v in raw)):
            raise ValueError(f'scan at t={stamp}: non-finite stamp or odometry pose {raw}')
        if stamp <= self._last_stamp:
            raise StampError(f'scan stamp {stamp:.9f} s is not after the previous scan '
                             f'{self._last_stamp:.9f} s')
        self._last_stamp = stamp
        pose_now = self.map_pose(raw)
        odom = _compose(self._anchor, raw)     # the graph keeps map-anchored odometry
        if self._stamps and not self._is_keyframe(odom):
            return SlamUpdate(stamp, pose_now, seconds=time.perf_counter() - started)
        cpu_started = time.thread_time()    # a system call: only for keyframes
        cfg = self.config
        ranges = torch.as_tensor(ranges, dtype=self.dtype, device=self.device)
        angles = torch.as_tensor(angles, dtype=self.dtype, device=self.device)
        far = range_max if cfg.max_range <= 0 else min(range_max, cfg.max_range)
        points = voxel_downsample(scan_to_points(ranges, angles, range_min, far), cfg.voxel_size)
        if points.shape[0] < cfg.icp.min_points:
            return SlamUpdate(stamp, pose_now, skipped=f'scan has {points.shape[0]} usable points '
                              f'after filtering (need {cfg.icp.min_points})',
                              seconds=time.perf_counter() - started)
        update = self._add_keyframe(stamp, odom, points)
        return replace(update, pose=self.map_pose(raw), seconds=time.perf_counter() - started,
                       cpu_seconds=time.thread_time() - cpu_started)

    # ------------------------------------------------------------------ front end
    def _is_keyframe(self, odom) -> bool:
        dx, dy, dyaw = _between(self._odom[-1], odom)
        return (math.hypot(dx, dy) >= self.config.keyframe_distance
                or abs(dyaw) >= self.config.keyframe_angle)

    def _add_keyframe(self, stamp: float, odom, points: Tensor) -> SlamUpdate:
        cfg = self.config
        k = self.num_keyframes
        normals = point_normals(points)[0]
        if k == 0:
            first = torch.tensor([odom], dtype=self.dtype, device=self.device)
            self._append_keyframe(stamp, odom, points, normals, first)
            self.correction = self._anchor
            solve_started = time.thread_time()
            self._solve_incremental(False)
            return SlamUpdate(stamp, odom, keyframe=0,
                              solve_cpu_seconds=time.thread_time() - solve_started)
        delta = torch.tensor(_between(self._odom[-1], odom), dtype=self.dtype, device=self.device)
        guess = SE2.compose(self._estimate[-1], delta)[None]
        self._append_keyframe(stamp, odom, points, normals, guess)
        self._add_edge(k - 1, k, delta, ODOM, 1.0)
        match = match_scans(points, self._target(k - 1), delta, cfg.icp)
        if match.accepted:
            error = SE2.between(delta, match.pose)
            if (float(error[:2].norm()) <= cfg.scan_max_correction_xy
                    and abs(float(error[2])) <= cfg.scan_max_correction_yaw):
                self._add_edge(k - 1, k, match.pose, SCAN, match.inlier_ratio)
                # the scan match is the better guess (it also makes the loop test below
                # measure the drift of the map, not the odometry error of one step)
                self._estimate[k] = SE2.compose(self._estimate[k - 1], match.pose)
        loops, disagree = self._close_loops(k)
        solve_started = time.thread_time()
        self._solve_incremental(disagree)
        self.full_solves += int(disagree)
        return SlamUpdate(stamp, odom, keyframe=k, scan_match=match, loop_closures=tuple(loops),
                          full_solve=disagree, solve_cpu_seconds=time.thread_time() - solve_started)

    def _append_keyframe(self, stamp, odom, points, normals, pose: Tensor):
        self._stamps.append(stamp)
        self._odom.append(odom)
        self._points.append(points)
        self._normals.append(normals)
        self._estimate = torch.cat((self._estimate, pose))

    def _add_edge(self, i: int, j: int, measurement: Tensor, kind: int, fitness: float):
        self._edges.append((i, j))
        self._measurements.append(measurement.detach())
        self._kinds.append(kind)
        self._fitness.append(float(fitness))

    def _target(self, k: int) -> ScanTarget:
        """Keyframe ``k``'s scan as an ICP target (KD-tree), from a cache of the
        ``TARGET_CACHE`` most recently used ones (consecutive matches and the loop candidates
        of nearby keyframes re-use them; an old one costs a tree build, ~0.05 ms)."""
        target = self._targets.pop(k, None)
        if target is None:
            target = ScanTarget(self._points[k], self._normals[k])
        self._targets[k] = target
        while len(self._targets) > TARGET_CACHE:
            self._targets.popitem(last=False)
        return target

    def _close_loops(self, k: int) -> tuple[list[int], bool]:
        """Verify loop candidates of keyframe ``k``; returns the matched keyframes and whether
        any of the new loop edges disagrees with the current estimate."""
        cfg = self.config
        older = k - cfg.loop_min_separation
        if older <= 0:
            return [], False
        distance = (self._estimate[:older, :2] - self._estimate[k, :2]).norm(dim=1)
        near = torch.nonzero(distance < cfg.loop_search_radius).flatten()
        near = near[:cfg.loop_max_candidates].tolist()      # the oldest first
        info = self.config.weights.information_by_kind(self.dtype, self.device)[LOOP]
        found, disagree = [], False
        for i in near:
            guess = SE2.between(self._estimate[i], self._estimate[k])
            match = match_scans(self._points[k], self._target(i), guess, cfg.loop_icp)
            if not match.accepted:
                continue
            self._add_edge(i, k, match.pose, LOOP, match.inlier_ratio)
            residual = SE2.log(SE2.between(match.pose, guess))
            disagree = float((residual * info * residual).sum()) > cfg.loop_full_solve_chi2
            found.append(i)
            break     # one verified loop closure per keyframe (the nearest that matches)
        self.loop_closures += len(found)
        return found, disagree

    # ------------------------------------------------------------------ back end
    def _by_kind(self) -> Tensor:
        return self.config.weights.information_by_kind(self.dtype, self.device)

    def _optimizer(self, objective, iterations: int) -> Optimizer:
        return Optimizer(objective, method='lm', max_iterations=iterations,
                         max_time=self.config.max_solve_time, dense_max=300)

    def _settings(self) -> tuple:
        cfg = self.config
        return (cfg.weights, cfg.relinearize_threshold, cfg.wildfire_threshold)

    def _sync_smoother(self) -> IncrementalSmoother:
        """The incremental solver with every keyframe and edge of the graph: new ones are
        added (keyframes at their current estimate); a new solver is built (at the current
        estimate) when the weights or thresholds changed since its factors were made."""
        cfg = self.config
        if self._smoother is None or self._smoother_settings != self._settings():
            self._smoother = IncrementalSmoother(SE2, cfg.relinearize_threshold,
                                                 cfg.wildfire_threshold)
            self._smoother_settings = self._settings()
            self._sent_edges = 0
        smoother = self._smoother
        K = self.num_keyframes
        if smoother.num_variables < K:
            first = smoother.num_variables
            for k, pose in enumerate(self._estimate[first:].detach().cpu().numpy(), first):
                smoother.add_variable(k, pose)
            if first == 0:
                smoother.add_prior(0, self._odom[0], PRIOR_INFORMATION * np.eye(3))
        if self._sent_edges < len(self._edges):
            information = self._by_kind().detach().cpu().numpy()
            for e in range(self._sent_edges, len(self._edges)):
                i, j = self._edges[e]
                kind = self._kinds[e]
                smoother.add_between(i, j, self._measurements[e].detach().cpu().numpy(),
                                     np.diag(information[kind]),
                                     0.0 if kind == ODOM else float(cfg.weights.robust_scale))
            self._sent_edges = len(self._edges)
        return smoother

    def _solve_incremental(self, iterate: bool) -> None:
        """Fold the new keyframe and edges into the incremental solver; when ``iterate`` (a
        loop closure that disagrees with the estimate), run up to ``iterations - 1`` further
        updates that relinearize what moved, until nothing moves or ``max_solve_time``."""
        cfg = self.config
        smoother = self._sync_smoother()
        started = time.perf_counter()
        smoother.update()
        for _ in range(cfg.iterations - 1 if iterate else 0):
            if time.perf_counter() - started > cfg.max_solve_time:
                break
            if smoother.update().eliminated == 0:
                break
        self._read_smoother()

    def _read_smoother(self) -> None:
        smoother = self._smoother
        K = self.num_keyframes
        self._estimate = torch.as_tensor(smoother.estimate(), dtype=self.dtype).to(self.device)
        covariance = smoother.marginal_covariance(K - 1)
        self._covariance = torch.as_tensor(0.5 * (covariance + covariance.T),
                                           dtype=self.dtype).to(self.device)
        self._update_correction()

    def solve_full(self) -> None:
        """Re-solve the whole graph with batch Levenberg-Marquardt (``full_iterations``, the
        differentiable solver), warm-started from the estimate, and re-seed the incremental
        solver at its solution (every factor relinearized there, the tree re-ordered).

        Call it before saving the graph or the map for the batch optimum; the online updates
        reach the same optimum when iterated, not necessarily after each keyframe."""
        if self.num_keyframes < 2:
            return
        objective, _ = build_objective(self.graph(), self._by_kind(),
                                       self.config.weights.robust_scale)
        optimizer = self._optimizer(objective, self.config.full_iterations)
        with torch.no_grad():
            result = optimizer.solve()
        self._estimate = result['poses'][0].detach().clone()
        self.full_solves += 1
        self._smoother = None
        smoother = self._sync_smoother()
        smoother.update(relinearize=False)
        self._read_smoother()

    def _update_correction(self) -> None:
        last = tuple(float(v) for v in self._estimate[-1].tolist())
        self.correction = _compose(_compose(last, _inverse(self._odom[-1])), self._anchor)

    # ------------------------------------------------------------------ outputs
    def graph(self) -> SlamGraph:
        """The pose graph as data (a snapshot; see :class:`~diffopt_ros.slam.graph.SlamGraph`)."""
        long = dict(dtype=torch.int64, device=self.device)
        return SlamGraph(
            stamps=torch.tensor(self._stamps, dtype=torch.float64, device=self.device),
            odom_poses=torch.tensor(self._odom, dtype=self.dtype, device=self.device).reshape(-1, 3),
            estimate=self._estimate.clone(),
            edges=torch.tensor(self._edges, **long).reshape(-1, 2),
            measurements=(torch.stack(self._measurements) if self._measurements else
                          torch.zeros(0, 3, dtype=self.dtype, device=self.device)),
            kinds=torch.tensor(self._kinds, **long),
            fitness=torch.tensor(self._fitness, dtype=self.dtype, device=self.device))

    def occupancy_grid(self, resolution: float = 0.05) -> OccupancyGrid:
        """Occupancy grid of all keyframe scans at their current estimates.

        Kept between calls (:class:`~diffopt_ros.slam.occupancy.OccupancyMapper`): a call
        casts the new keyframes and those that moved by more than a tenth of a cell since they
        were cast, so its cost does not grow with the map (except after a full re-solve)."""
        if self._mapper is None or self._mapper.resolution != float(resolution):
            self._mapper = OccupancyMapper(resolution)
        self._mapper.update(self._estimate, self._points)
        return self._mapper.grid()

    def save_g2o(self, path) -> None:
        """Write the graph (current estimate, edges, information from the weights) as g2o."""
        if not self._edges:
            raise ValueError(f'{path}: the graph has no edges yet (fewer than 2 keyframes)')
        write_g2o(path, to_g2o_data(self.graph(), self._by_kind()))


# ---------------------------------------------------------------------- float SE(2) helpers
# Per-scan bookkeeping on Python floats: a few scalar ops, where torch's per-call overhead
# would dominate (the tensor versions are diffopt_ros.lie.SE2).
def _compose(a, b) -> tuple[float, float, float]:
    c, s = math.cos(a[2]), math.sin(a[2])
    return (a[0] + c * b[0] - s * b[1], a[1] + s * b[0] + c * b[1],
            math.remainder(a[2] + b[2], 2 * math.pi))


def _inverse(a) -> tuple[float, float, float]:
    c, s = math.cos(a[2]), math.sin(a[2])
    return (-c * a[0] - s * a[1], s * a[0] - c * a[1], -a[2])


def _between(a, b) -> tuple[float, float, float]:
    return _compose(_inverse(a), b)

