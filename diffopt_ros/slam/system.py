"""Online 2D SLAM without ROS: keyframes, scan matching, loop closure, re-use of keyframes.

:class:`SlamSystem` takes ``(stamp, odometry pose, scan)``. Scans are used every
``keyframe_distance`` of travel or ``keyframe_angle`` of rotation since the last used one (a
*keyframe step*); at each it

1. **re-uses** an existing keyframe when the predicted pose lies within ``reuse_distance`` and
   ``reuse_angle`` of one: the scan is matched against that keyframe's scan (point-to-line
   ICP, one match) and, when the match is accepted, the robot is *localized* on the map at
   that keyframe's estimate composed with the match; no keyframe is added. When the robot
   arrives there from another keyframe with no edge to it yet (the first pass through a
   junction, the end of a loop), the two keyframes' scans are matched and linked by a loop
   edge. So on a route driven again and again the variables and edges grow with the area
   explored, not with time (as slam_toolbox and Cartographer do by pruning keyframes in
   revisited places), and so do memory and the size of the elimination tree's separators.
2. Otherwise it **adds a keyframe**: an odometry edge from the keyframe last used (the
   odometry increment since then, composed with the match that localized it), a scan edge from
   ICP of the new scan against a local map, that keyframe's scan and those of up to
   ``submap_keyframes - 1`` keyframes before it within ``submap_radius``, placed by their
   estimates (kept when the fitness check passes and the correction is plausible), and a
   loop closure to an older keyframe (at least ``loop_min_separation`` keyframes back) within
   ``loop_search_radius`` of the new pose, verified by ICP.
3. Graph changes are folded into the incremental solver of the back end
   (:class:`~diffopt_ros.slam.backend.PoseGraphBackend`); a loop edge that disagrees with the
   estimate (whitened squared residual above ``loop_full_solve_chi2``) is iterated: up to
   ``iterations`` further relinearizing updates until the estimate stops moving.
   :meth:`SlamSystem.solve_full` runs batch Levenberg-Marquardt (the differentiable solver
   that learning uses on :meth:`SlamSystem.graph`; both reach the same optimum).

Scan normals and KD-trees are built only for scans that are matched against (keyframes), on
first use, and kept with the keyframe (re-use matches against any keyframe of the map); the
local map of the keyframe last used is built on the next scan that is not a keyframe step
when the last keyframe step added a keyframe (the next keyframe step matches against it, when
it adds a keyframe; after a localization, when the next step most often localizes again, it is
built only if that step adds a keyframe), so that work is mostly off the keyframe steps. The
front end's per-scan arithmetic (beams to points, voxel filter, normals, the re-use and loop
gates over the keyframe estimates, pose bookkeeping) runs on float64 numpy arrays and Python
floats: a keyframe step handles a few hundred points and a few poses, where torch's per-call
overhead would cost more than the arithmetic.

Frames: the map is anchored by ``initial_pose``, the robot's map pose at the first odometry
pose the system sees (default the origin; a simulator's or a known start pose makes ground
truth, SLAM output and goals share one ``map`` frame). Odometry is taken into the map with the
fixed ``T_anchor = initial_pose * first_odometry^-1`` (keyframe 0 is held at its anchored
odometry pose); ``correction = T_map_odom`` maps raw odometry poses into the map.

Over 400 lines because the three steps above share one front-end state (keyframes, the last
used keyframe, the odometry anchor); settings live in :mod:`.config`, the back end in
:mod:`.backend`, scan/odometry pairing in :mod:`.inputs`.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from diffopt_ros.lie import SE2
from diffopt_ros.slam import planar
from diffopt_ros.slam.backend import PoseGraphBackend
from diffopt_ros.slam.config import SlamConfig
from diffopt_ros.slam.graph import LOOP, ODOM, SCAN, SlamGraph
from diffopt_ros.slam.icp import ScanMatch, ScanTarget, match_scans
from diffopt_ros.slam.occupancy import OccupancyGrid, OccupancyMapper, updated_mapper
from diffopt_ros.slam.odometry import StampError
from diffopt_ros.slam.scan import as_array, scan_to_points, voxel_downsample

# ICP targets kept, the least recently used dropped (rebuilt from the scan on next use, 0.2 ms):
# a target (normals, KD-tree) takes about 2.5 times the memory of its scan, and a keyframe's is
# used mostly while it is the last keyframe and when a loop closes to it
TARGET_CACHE = 256


@dataclass(frozen=True)
class SlamUpdate:
    """What one call of :meth:`SlamSystem.process` did.

    Attributes:
        stamp: scan stamp (s).
        pose: ``(x, y, yaw)`` of the robot in the map frame at the scan (m, rad).
        keyframe: index of the keyframe added, or None.
        localized: index of the existing keyframe the scan was localized against (re-use),
            or None.
        scan_match: the scan match of a keyframe step (against the keyframe last used, or the
            re-used one); None when no keyframe step or the first keyframe.
        loop_closures: indices of the keyframes linked by a new loop edge (to the new
            keyframe, or to the re-used one).
        full_solve: an iterated update ran (a loop edge disagreed with the estimate).
        unmatched: why the new keyframe has no scan edge from the keyframe last used (its scan
            match was rejected, or corrected the odometry by more than
            ``scan_max_correction_*``): only odometry links it there; '' otherwise.
        seconds: wall time of the update (s).
        cpu_seconds: CPU time of the update on its thread (s; unaffected by other processes):
            of a keyframe step, or of a scan between them that built the local map of the
            keyframe last used (0 for other scans).
        solve_cpu_seconds: of which in the back end's solve (s, thread CPU; the covariance is
            computed when first read).
        skipped: why the scan was not used ('' when it was).
    """

    stamp: float
    pose: tuple[float, float, float]
    keyframe: int | None = None
    localized: int | None = None
    scan_match: ScanMatch | None = None
    loop_closures: tuple[int, ...] = ()
    full_solve: bool = False
    unmatched: str = ''
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    solve_cpu_seconds: float = 0.0
    skipped: str = ''

    @property
    def graph_changed(self) -> bool:
        """A keyframe or an edge was added (the estimate may have moved)."""
        return self.keyframe is not None or bool(self.loop_closures)


class SlamSystem:
    """Online pose-graph SLAM from odometry and 2D scans (no ROS).

    Args:
        config: settings (default ``SlamConfig()``).
        device: where scans and the graph live (``'cpu'`` or ``'cuda'``).
        dtype: float dtype of points and poses (float64 recommended).
        initial_pose: the robot's map pose ``(x, y, yaw)`` at the first odometry pose.

    Example::

        slam = SlamSystem(SlamConfig())
        for stamp, odom_xyyaw, ranges in data:
            update = slam.process(stamp, odom_xyyaw, ranges, angles, 0.12, 12.0)
        slam.estimate          # (K, 3) keyframe poses in the map frame
        slam.graph()           # SlamGraph: edges, measurements, kinds (for offline learning)
    """

    def __init__(self, config: SlamConfig | None = None, device: torch.device | str = 'cpu',
                 dtype: torch.dtype = torch.float64, initial_pose=(0.0, 0.0, 0.0)):
        self.config = config = SlamConfig() if config is None else config
        self.initial_pose = tuple(float(v) for v in initial_pose)
        if len(self.initial_pose) != 3 or not all(math.isfinite(v) for v in self.initial_pose):
            raise ValueError(f'initial_pose must be 3 finite numbers [x, y, yaw], got {initial_pose}')
        self._anchor: tuple[float, float, float] | None = None   # T_anchor, set by anchor()
        self.device, self.dtype = torch.device(device), dtype
        self.backend = PoseGraphBackend(config, self.device, dtype)
        self._points: list[Tensor] = []                  # per keyframe, sensor frame
        # the keyframe last used, the robot's pose relative to it then, and the (anchored)
        # odometry pose then: the robot is at estimate[r] * relative * odom_then^-1 * odom
        self._reference: tuple[int, tuple, tuple] | None = None
        self._local_covariance: Tensor | None = None     # (3, 3) of a localized pose, map axes
        self._last_stamp = -math.inf
        self.correction: tuple[float, float, float] = (0.0, 0.0, 0.0)
        """``T_map_odom`` ``(x, y, yaw)``: map pose = correction composed with odometry pose."""
        self.loop_closures = 0
        self.localizations = 0
        self.unmatched_keyframes = 0
        """Keyframes added without a scan edge (:attr:`SlamUpdate.unmatched`)."""
        self._mapper: OccupancyMapper | None = None
        self._targets: OrderedDict[int, ScanTarget] = OrderedDict()   # keyframe -> target, by use
        self._submap: tuple[tuple, ScanTarget] | None = None   # the local map's key and target
        self._exploring = True      # the last keyframe step added a keyframe (did not localize)
        self._last_revisit = -math.inf    # the last keyframe that closed a loop to an old one

    # ------------------------------------------------------------------ properties
    @property
    def num_keyframes(self) -> int:
        """Number of keyframes K."""
        return self.backend.num_keyframes

    @property
    def num_edges(self) -> int:
        """Number of edges E."""
        return self.backend.num_edges

    @property
    def full_solves(self) -> int:
        """Iterated updates and batch solves so far."""
        return self.backend.full_solves

    @property
    def estimate(self) -> Tensor:
        """``(K, 3)`` keyframe poses ``(x, y, yaw)`` in the map frame (a copy)."""
        return self.backend.estimate.clone()

    @property
    def covariance(self) -> Tensor | None:
        """``(3, 3)`` covariance of the robot's pose at the last keyframe step ``(x, y, yaw)``
        with x, y along the map axes (m², rad²; as in ROS pose covariances), or None before
        the first keyframe: after a new keyframe its marginal from the pose graph; after a
        localization against an existing keyframe, the scan match's covariance (the inverse
        of its information) relative to that keyframe's estimate."""
        if self._local_covariance is not None:
            return self._local_covariance
        body = self.backend.covariance
        if body is None:
            return None
        return _to_map_axes(body, self.backend.estimate[-1, 2])

    def set_config(self, config: SlamConfig) -> None:
        """Replace the settings (applies from the next scan)."""
        self.config = config
        self.backend.config = config

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
            self._anchor = planar.compose(self.initial_pose, planar.inverse(odom))
            self.correction = self._anchor

    def map_pose(self, odom_pose) -> tuple[float, float, float]:
        """Odometry pose ``(x, y, yaw)`` (odom frame) -> map frame, with the current correction."""
        self.anchor(odom_pose)
        return planar.compose(self.correction, tuple(float(v) for v in odom_pose))

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
        odom = planar.compose(self._anchor, raw)     # the graph keeps map-anchored odometry
        if self._reference is not None and not self._is_keyframe_step(odom):
            return self._between_steps(stamp, pose_now, started)
        cpu_started = time.thread_time()    # a system call: only for keyframe steps
        cfg = self.config
        far = range_max if cfg.max_range <= 0 else min(range_max, cfg.max_range)
        points = voxel_downsample(scan_to_points(as_array(ranges), as_array(angles), range_min, far),
                                  cfg.voxel_size)
        if len(points) < cfg.icp.min_points:
            return SlamUpdate(stamp, pose_now, skipped=f'scan has {len(points)} usable points '
                              f'after filtering (need {cfg.icp.min_points})',
                              seconds=time.perf_counter() - started)
        points = torch.from_numpy(points).to(device=self.device, dtype=self.dtype)
        update = (self._localize(stamp, odom, points) if self._reference is not None else None)
        if update is None:
            update = self._add_keyframe(stamp, odom, points)
        return replace(update, pose=self.map_pose(raw), seconds=time.perf_counter() - started,
                       cpu_seconds=time.thread_time() - cpu_started)

    # ------------------------------------------------------------------ front end
    def _between_steps(self, stamp: float, pose, started: float) -> SlamUpdate:
        """A scan that is not a keyframe step: while exploring (the last keyframe step added a
        keyframe), builds the local map of the keyframe last used (:meth:`_submap_target`)
        when it is not built yet, else runs a slice of the back end's reorder in progress
        (:meth:`PoseGraphBackend.prepare`), if any. After a localization the next keyframe
        step most often localizes again, against one keyframe's scan: its local map is built
        only if that step adds a keyframe. One piece of work per scan, so a scan's own work
        stays near a slice's (about 10 ms)."""
        r = self._reference[0]
        build = self._exploring and not self._submap_built(r)
        if not build and not self.backend.preparing:
            return SlamUpdate(stamp, pose, seconds=time.perf_counter() - started)
        cpu_started = time.thread_time()
        if build:
            self._submap_target(r)
        else:
            self.backend.prepare()
        return SlamUpdate(stamp, pose, seconds=time.perf_counter() - started,
                          cpu_seconds=time.thread_time() - cpu_started)

    def _is_keyframe_step(self, odom) -> bool:
        dx, dy, dyaw = planar.between(self._reference[2], odom)
        return (math.hypot(dx, dy) >= self.config.keyframe_distance
                or abs(dyaw) >= self.config.keyframe_angle)

    def _from_reference(self, odom) -> tuple[int, tuple]:
        """The keyframe last used ``r`` and the robot's pose relative to it now,
        ``T_r^-1 T_robot``, from the odometry since then."""
        r, relative, odom_then = self._reference
        return r, planar.compose(relative, planar.between(odom_then, odom))

    def _pose(self, k: int) -> tuple[float, float, float]:
        return tuple(self.backend.estimate[k].tolist())

    def _estimate(self) -> np.ndarray:
        """``(K, 3)`` keyframe estimates as a float64 array (a view of the back end's on the CPU
        in float64; read it before the back end changes)."""
        return as_array(self.backend.estimate)

    def _tensor(self, pose) -> Tensor:
        return torch.tensor(pose, dtype=self.dtype, device=self.device)

    def _localize(self, stamp: float, odom, points: Tensor) -> SlamUpdate | None:
        """Re-use the existing keyframe nearest the predicted pose, if one lies within the
        re-use gates and the scan matches it; None when a keyframe is to be added."""
        cfg = self.config
        if cfg.reuse_distance <= 0:
            return None
        r, relative = self._from_reference(odom)
        predicted = planar.compose(self._pose(r), relative)
        estimate = self._estimate()
        distance2 = np.square(estimate[:, 0] - predicted[0]) + np.square(estimate[:, 1] - predicted[1])
        heading = np.remainder(estimate[:, 2] - predicted[2] + math.pi, 2 * math.pi) - math.pi
        score = distance2 / cfg.reuse_distance ** 2 + np.square(heading / cfg.reuse_angle)
        score[(distance2 >= cfg.reuse_distance ** 2) | (np.abs(heading) >= cfg.reuse_angle)] = math.inf
        i = int(np.argmin(score))
        if not math.isfinite(score[i]):
            return None
        start = tuple(estimate[i].tolist())
        guess = planar.between(start, predicted)
        match = match_scans(points, self._target(i), self._tensor(guess), cfg.icp)
        matched = tuple(match.pose.tolist())
        if not match.accepted or _implausible(guess, matched, cfg):
            return None
        self.localizations += 1
        self._reference, self._exploring = (i, matched, odom), False
        information = match.information + 1e-9 * torch.eye(3, dtype=self.dtype, device=self.device)
        self._local_covariance = _to_map_axes(torch.linalg.inv(information), start[2])
        linked, disagree, solve_seconds = (), False, 0.0
        if i != r and not self.backend.linked(r, i):
            linked, disagree = self._link(r, i)
            if linked:
                solve_started = time.thread_time()
                self.backend.solve(disagree)
                solve_seconds = time.thread_time() - solve_started
        self._update_correction()
        return SlamUpdate(stamp, predicted, localized=i, scan_match=match, loop_closures=linked,
                          full_solve=disagree, solve_cpu_seconds=solve_seconds)

    def _link(self, r: int, i: int) -> tuple[tuple[int, ...], bool]:
        """Match keyframe scans ``r`` and ``i`` (the newer one against the older) and add a loop
        edge when the match is accepted; returns ``((other keyframe,) or (), disagrees)``."""
        old, new = min(r, i), max(r, i)
        guess = planar.between(self._pose(old), self._pose(new))
        match = match_scans(self._points[new], self._target(old), self._tensor(guess),
                            self.config.loop_icp)
        if not match.accepted:
            return (), False
        return (r,), self._add_loop(old, new, match, guess)

    def _add_loop(self, old: int, new: int, match: ScanMatch, guess: tuple) -> bool:
        """Add loop edge ``old -> new`` (``guess``: ``T_old^-1 T_new`` at the estimate); returns
        whether it disagrees with the estimate."""
        self.backend.add_edge(old, new, match.pose, LOOP, match.inlier_ratio,
                              match.degenerate_directions)
        self.loop_closures += 1
        information = self.backend.edge_information(self.backend.num_edges - 1)
        residual = SE2.log(self._tensor(planar.between(tuple(match.pose.tolist()), guess)))
        return float(residual @ information @ residual) > self.config.loop_full_solve_chi2

    def _add_keyframe(self, stamp: float, odom, points: Tensor) -> SlamUpdate:
        cfg = self.config
        backend = self.backend
        self._local_covariance, self._exploring = None, True
        if self._reference is None:
            k = backend.add_keyframe(stamp, odom, self._tensor(odom))
            self._points.append(points)
            self._reference = (k, (0.0, 0.0, 0.0), odom)
            solve_started = time.thread_time()
            backend.solve(False)
            solve_seconds = time.thread_time() - solve_started
            self._update_correction()
            return SlamUpdate(stamp, odom, keyframe=k, solve_cpu_seconds=solve_seconds)
        r, relative = self._from_reference(odom)
        delta, start = self._tensor(relative), self._pose(r)
        target = self._submap_target(r)
        k = backend.add_keyframe(stamp, odom, self._tensor(planar.compose(start, relative)))
        self._points.append(points)
        self._reference = (k, (0.0, 0.0, 0.0), odom)
        backend.add_edge(r, k, delta, ODOM, 1.0)
        match = match_scans(points, target, delta, cfg.icp)
        matched = tuple(match.pose.tolist())
        unmatched = match.reason or _implausible(relative, matched, cfg)
        if not unmatched:
            backend.add_edge(r, k, match.pose, SCAN, match.inlier_ratio,
                             match.degenerate_directions)
            # the scan match is the better guess (it also makes the loop test below
            # measure the drift of the map, not the odometry error of one step)
            backend.estimate[k] = self._tensor(planar.compose(start, matched))
        else:
            self.unmatched_keyframes += 1
        loops, disagree = self._close_loops(k)
        solve_started = time.thread_time()
        backend.solve(disagree)
        solve_seconds = time.thread_time() - solve_started
        self._update_correction()
        return SlamUpdate(stamp, odom, keyframe=k, scan_match=match, loop_closures=tuple(loops),
                          full_solve=disagree, unmatched=unmatched, solve_cpu_seconds=solve_seconds)

    def _target(self, k: int) -> ScanTarget:
        """Keyframe ``k``'s scan as an ICP target (normals, KD-tree; built on first use, kept
        while among the ``TARGET_CACHE`` most recently used)."""
        target = self._targets.get(k)
        if target is not None:
            self._targets.move_to_end(k)
            return target
        target = self._targets[k] = ScanTarget(self._points[k])
        if len(self._targets) > TARGET_CACHE:
            self._targets.popitem(last=False)
        return target

    def _submap_key(self, r: int) -> tuple:
        """What the local map of keyframe ``r`` depends on: ``r``, the estimates (they change
        only in a solve, after new edges or in an iterated or full solve) and the settings."""
        cfg = self.config
        return (r, self.backend.num_edges, self.backend.full_solves, cfg.submap_keyframes,
                cfg.submap_radius, cfg.voxel_size)

    def _submap_built(self, r: int) -> bool:
        """Whether the local map kept is keyframe ``r``'s as of the current estimates."""
        return self._submap is not None and self._submap[0] == self._submap_key(r)

    def _submap_target(self, r: int) -> ScanTarget:
        """The ICP target of a new keyframe's scan: keyframe ``r``'s scan and those of up to
        ``submap_keyframes - 1`` keyframes before it (by index) within ``submap_radius`` of it,
        moved into ``r``'s frame by the estimates and down-sampled together (just ``r``'s
        target when there are none). The last one built is kept until the estimates change."""
        if self._submap_built(r):
            return self._submap[1]
        cfg = self.config
        estimate = self._estimate()
        near = [j for j in range(r - 1, max(r - 4 * cfg.submap_keyframes, 0) - 1, -1)
                if math.hypot(estimate[j, 0] - estimate[r, 0], estimate[j, 1] - estimate[r, 1])
                <= cfg.submap_radius][:cfg.submap_keyframes - 1]
        if not near:
            target = self._target(r)
        else:
            base = tuple(estimate[r].tolist())
            clouds = [as_array(self._points[r])] + [
                planar.transform(planar.between(base, tuple(estimate[j].tolist())),
                                 as_array(self._points[j])) for j in near]
            target = ScanTarget(voxel_downsample(np.concatenate(clouds), cfg.voxel_size))
        self._submap = (self._submap_key(r), target)
        return target

    def _close_loops(self, k: int) -> tuple[list[int], bool]:
        """Verify loop candidates of the new keyframe ``k``; returns the matched keyframes and
        whether the new loop edge disagrees with the current estimate."""
        cfg = self.config
        older = k - cfg.loop_min_separation
        if older <= 0 or k - self._last_revisit < cfg.loop_interval:
            return [], False
        estimate = self._estimate()
        distance2 = np.square(estimate[:older, :2] - estimate[k, :2]).sum(axis=1)
        near = np.flatnonzero(distance2 < cfg.loop_search_radius ** 2)
        new = tuple(estimate[k].tolist())
        for i in near[:cfg.loop_max_candidates].tolist():       # the oldest first
            guess = planar.between(tuple(estimate[i].tolist()), new)
            match = match_scans(self._points[k], self._target(i), self._tensor(guess), cfg.loop_icp)
            if match.accepted:     # one verified loop closure per keyframe
                if i <= k - 2 * cfg.loop_min_separation:     # not on the path just driven
                    self._last_revisit = k
                return [i], self._add_loop(i, k, match, guess)
        return [], False

    def _update_correction(self) -> None:
        r, relative, odom_then = self._reference
        robot = planar.compose(self._pose(r), relative)
        self.correction = planar.compose(planar.compose(robot, planar.inverse(odom_then)),
                                         self._anchor)

    # ------------------------------------------------------------------ back end, outputs
    def solve_full(self) -> None:
        """Re-solve the whole graph with batch Levenberg-Marquardt (see
        :meth:`~diffopt_ros.slam.backend.PoseGraphBackend.solve_full`). Call it before saving
        the graph or the map for the batch optimum; the online updates reach the same optimum
        when iterated, not necessarily after each keyframe."""
        if self.num_keyframes < 2:
            return
        self.backend.solve_full()
        self._update_correction()

    def graph(self) -> SlamGraph:
        """The pose graph as data (a snapshot; see :class:`~diffopt_ros.slam.graph.SlamGraph`)."""
        return self.backend.graph()

    def occupancy_grid(self, resolution: float = 0.05) -> OccupancyGrid:
        """Occupancy grid of all keyframe scans at their current estimates.

        Kept between calls (:class:`~diffopt_ros.slam.occupancy.OccupancyMapper`): a call
        casts the new keyframes and those that moved by more than a tenth of a cell since they
        were cast, so its cost does not grow with the map (except after a full re-solve)."""
        self._mapper = updated_mapper(self._mapper, resolution, *self.map_inputs())
        return self._mapper.grid()

    def map_inputs(self) -> tuple[Tensor, list]:
        """What the occupancy grid is cast from: the keyframe estimates ``(K, 3)`` (a copy) and
        the keyframe scans (points ``(N_k, 2)`` in each keyframe's sensor frame, never changed
        once stored; a new list). Taken under the caller's lock, they can be cast on another
        thread (:func:`~diffopt_ros.slam.occupancy.updated_mapper`) while SLAM goes on."""
        return self.backend.estimate.detach().clone(), list(self._points)

    def save_g2o(self, path) -> None:
        """Write the graph (current estimate, edges, information from the weights) as g2o."""
        self.backend.save_g2o(path)


def _implausible(guess: tuple, matched: tuple, config: SlamConfig) -> str:
    """Why a scan match ``(x, y, yaw)`` differs from its guess by more than
    ``scan_max_correction_*`` ('' when it does not)."""
    dx, dy, dyaw = planar.between(guess, matched)
    if math.hypot(dx, dy) > config.scan_max_correction_xy or abs(dyaw) > config.scan_max_correction_yaw:
        return (f'correction {math.hypot(dx, dy):.3f} m, {abs(dyaw):.3f} rad beyond '
                f'scan_max_correction ({config.scan_max_correction_xy} m, '
                f'{config.scan_max_correction_yaw} rad)')
    return ''


def _to_map_axes(covariance: Tensor, yaw) -> Tensor:
    """``(3, 3)`` covariance of ``(x, y, yaw)`` with x, y along a frame of heading ``yaw``
    (rad, a float or a 0-d tensor) -> along the map axes: ``J C J^T``, ``J = blockdiag(R(yaw), 1)``."""
    c, s = math.cos(float(yaw)), math.sin(float(yaw))
    rotate = covariance.new_tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return rotate @ covariance @ rotate.T
