"""SLAM settings (:class:`SlamConfig`) and their mapping to and from ``slam_node`` parameters.

:data:`PARAMETERS` names, for each ``slam_node`` parameter that configures the core, the
:class:`SlamConfig` fields it sets (dotted paths into nested settings: ``icp.max_rms``);
:func:`config_from_params` and :func:`config_to_params` convert in both directions, so the
node's defaults (``diffopt_ros/params/slam.py``) are written once, here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from diffopt_ros.slam.graph import SlamWeights
from diffopt_ros.slam.icp import IcpConfig


@dataclass(frozen=True)
class SlamConfig:
    """SLAM settings (m, rad, s).

    Attributes:
        keyframe_distance: new keyframe after this much translation since the last keyframe
            (or the last scan localized against an existing keyframe).
        keyframe_angle: ... or this much rotation.
        reuse_distance: a keyframe step whose pose lies within this distance of an existing
            keyframe (and within ``reuse_angle`` of its heading) is matched against that
            keyframe's scan; when the match is accepted no keyframe is added (the robot is
            localized on the map: variables grow with the area explored, not with time).
            0 disables re-use.
        reuse_angle: heading gate of re-use (rad).
        voxel_size: scan down-sampling cell.
        max_range: beams longer than this are dropped (0: the scan's own ``range_max``).
        submap_keyframes: the scan of a new keyframe is matched against a local map, the scan
            of the keyframe last used and those of up to this many - 1 keyframes before it
            (within ``submap_radius`` of it), placed by their current estimates (as slam_toolbox
            matches against its scan buffer): more of the scene than one scan, so a consecutive
            match drifts less. 1: the one scan.
        submap_radius: keyframes of the local map lie within this distance of the last used one.
        icp: scan matching between consecutive keyframes and against a re-used keyframe (the
            guess, odometry over one keyframe step, is good to a few cm: the pairing gate
            shrinks in two iterations, so a match takes ~4 iterations instead of ~9).
        scan_max_correction_xy, scan_max_correction_yaw: largest disagreement of a consecutive
            scan match with the odometry increment that is still believed.
        loop_search_radius: loop candidates lie within this distance of the new keyframe.
        loop_min_separation: candidates are at least this many keyframes older.
        loop_max_candidates: ICP is tried on up to this many candidates, oldest first, until
            one matches (at most one loop closure per keyframe).
        loop_interval: after a keyframe closes a loop with a *revisit* (a keyframe at least
            ``2 * loop_min_separation`` back, not on the path just driven), the next
            ``loop_interval - 1`` keyframes search for none (1: every keyframe searches). On a
            route driven again without keyframe re-use every keyframe would close a loop with
            the first pass; consecutive closures are nearly redundant (the keyframes between
            are linked by scan matches), and each costs an ICP match and a re-elimination of
            the path back to the first pass. Closures with the path just driven (which keep a
            corner's heading error from drifting the next corridor) start no interval, and
            until a revisit is closed every keyframe searches, so the first closure of a
            revisit comes as early as with 1.
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
        relinearize_max: most keyframes relinearized per update, those lowest in the
            Bayes tree first (0: all that moved beyond ``relinearize_threshold``); a bound on an update's
            latency on large maps, where one loop closure can move thousands of keyframes
            (:class:`~diffopt_ros.nlls.incremental.IncrementalSmoother`).
        weights: factor information and robust scale.
    """

    keyframe_distance: float = 0.5
    keyframe_angle: float = 0.4
    reuse_distance: float = 0.3
    reuse_angle: float = 0.3
    voxel_size: float = 0.05
    max_range: float = 0.0
    submap_keyframes: int = 3
    submap_radius: float = 2.0
    icp: IcpConfig = IcpConfig(shrink_iterations=2)
    scan_max_correction_xy: float = 0.3
    scan_max_correction_yaw: float = 0.2
    loop_search_radius: float = 3.0
    loop_min_separation: int = 5
    loop_max_candidates: int = 3
    loop_interval: int = 3
    loop_icp: IcpConfig = IcpConfig(max_iterations=40, max_correspondence_distance=1.0,
                                    min_inlier_ratio=0.6)
    loop_full_solve_chi2: float = 3.0
    iterations: int = 5
    full_iterations: int = 20
    max_solve_time: float = 1.0
    relinearize_threshold: float = 0.01
    wildfire_threshold: float = 1e-3
    relinearize_max: int = 300
    weights: SlamWeights = field(default_factory=SlamWeights)


PARAMETERS: dict[str, tuple[str, ...]] = {
    'keyframe.distance': ('keyframe_distance',),
    'keyframe.angle': ('keyframe_angle',),
    'keyframe.reuse_distance': ('reuse_distance',),
    'keyframe.reuse_angle': ('reuse_angle',),
    'scan.voxel_size': ('voxel_size',),
    'scan.max_range': ('max_range',),
    'scan.submap_keyframes': ('submap_keyframes',),
    'scan.submap_radius': ('submap_radius',),
    'icp.max_iterations': ('icp.max_iterations',),
    'icp.max_correspondence_distance': ('icp.max_correspondence_distance',),
    'icp.min_inlier_ratio': ('icp.min_inlier_ratio',),
    'icp.max_rms': ('icp.max_rms', 'loop_icp.max_rms'),
    'icp.inlier_distance': ('icp.inlier_distance', 'loop_icp.inlier_distance'),
    'icp.degeneracy_threshold': ('icp.degeneracy_threshold', 'loop_icp.degeneracy_threshold'),
    'loop.search_radius': ('loop_search_radius',),
    'loop.min_separation': ('loop_min_separation',),
    'loop.max_candidates': ('loop_max_candidates',),
    'loop.keyframe_interval': ('loop_interval',),
    'loop.min_inlier_ratio': ('loop_icp.min_inlier_ratio',),
    'loop.full_solve_chi2': ('loop_full_solve_chi2',),
    'optimizer.iterations': ('iterations',),
    'optimizer.full_iterations': ('full_iterations',),
    'optimizer.max_time': ('max_solve_time',),
    'optimizer.relinearize_max': ('relinearize_max',),
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
