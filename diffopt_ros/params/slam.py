"""Parameters of ``slam_node`` (online 2D pose-graph SLAM). The defaults of the parameters that
configure the SLAM core are those of :class:`~diffopt_ros.slam.config.SlamConfig` (written once,
there; :data:`~diffopt_ros.slam.config.PARAMETERS` maps the names)."""
from __future__ import annotations

import math

from diffopt_ros.params.schema import NodeSchema, Param
from diffopt_ros.slam.config import SlamConfig, config_to_params

NODE_NAME = 'slam_node'
_BIG = 1e12
_CORE = config_to_params(SlamConfig())   # defaults of the core's settings


def _core(name: str, description: str, low: float, high: float, unit: str = '',
          learnable: str | None = None) -> Param:
    """A parameter of the core's :class:`SlamConfig` (default from there)."""
    return Param(name, _CORE[name], description, low, high, unit=unit, learnable=learnable)


def _check_combination(values: dict) -> str | None:
    """``icp.inlier_distance`` <= ``icp.max_correspondence_distance``.

    Returns why a full set of values breaks that rule, or None."""
    if values['icp.inlier_distance'] > values['icp.max_correspondence_distance']:
        return (f'icp.inlier_distance ({values["icp.inlier_distance"]}) must not exceed '
                f'icp.max_correspondence_distance ({values["icp.max_correspondence_distance"]})')
    return None


SCHEMA = NodeSchema(NODE_NAME, (
    Param('device', 'cpu', 'torch device of scan matching and the solver (cuda falls back to '
          'cpu)', choices=('cpu', 'cuda'), read_only=True),
    Param('torch_threads', 1, 'threads of torch and of the BLAS of numpy/scipy in this process '
          '(small problems: 1)',
          1, 64, read_only=True),
    _core('keyframe.distance', 'new keyframe after this translation', 0.01, 100.0, 'm'),
    _core('keyframe.angle', 'new keyframe after this rotation', 0.01, 2 * math.pi, 'rad'),
    _core('keyframe.reuse_distance', 'a scan this close to an existing keyframe is localized '
          'against it instead of adding a keyframe (0 = off)', 0.0, 100.0, 'm'),
    _core('keyframe.reuse_angle', 'heading gate of keyframe re-use', 0.01, math.pi, 'rad'),
    _core('scan.voxel_size', 'scan down-sampling cell (0 = none)', 0.0, 1.0, 'm'),
    _core('scan.max_range', "ignore beams beyond this (0 = the scan's range_max)", 0.0, 1000.0,
          'm'),
    _core('scan.submap_keyframes', 'a new keyframe\'s scan is matched against the scans of '
          'the keyframe last used and up to this many - 1 before it (a local map; 1 = one scan)',
          1, 50),
    _core('scan.submap_radius', 'keyframes of that local map lie within this distance of the '
          'last used one', 0.0, 100.0, 'm'),
    _core('icp.max_iterations', 'ICP iterations (consecutive keyframes)', 1, 500),
    _core('icp.max_correspondence_distance', 'initial ICP pairing gate', 0.01, 10.0, 'm'),
    _core('icp.min_inlier_ratio', 'fitness: least inlier fraction of a scan match', 0.0, 1.0),
    _core('icp.max_rms', 'fitness: largest RMS point-to-line residual', 1e-4, 10.0, 'm'),
    _core('icp.inlier_distance', 'a point within this of the other scan is an inlier',
          1e-3, 10.0, 'm'),
    _core('icp.degeneracy_threshold', 'scan-matching directions whose normalised Hessian '
          'eigenvalue is below this keep the odometry, and the scan edge carries no information '
          'along them (a corridor\'s axis; 0 = off)', 0.0, 1.0),
    _core('loop.search_radius', 'loop candidates within this distance (0 = off)', 0.0, 1000.0,
          'm'),
    _core('loop.min_separation', 'loop candidates at least this many keyframes back', 1,
          1_000_000),
    _core('loop.max_candidates', 'ICP tries per keyframe, oldest candidates first', 0, 100),
    _core('loop.keyframe_interval', 'after a keyframe closes a loop with one at least 2 x '
          'min_separation back (a revisit), the next keyframe_interval - 1 keyframes do not '
          'search for one (1 = every keyframe searches)', 1, 1_000_000),
    _core('loop.min_inlier_ratio', 'fitness of a loop closure: least inlier fraction', 0.0, 1.0),
    _core('loop.full_solve_chi2', 'loop closure residual (whitened, squared) above which the '
          'incremental update is iterated until the estimate stops moving', 0.0, _BIG),
    _core('optimizer.iterations', 'most incremental (relinearizing) updates per keyframe', 1,
          1000),
    _core('optimizer.full_iterations', 'LM iterations of a full batch solve (before saving)', 1,
          10000),
    _core('optimizer.max_time', 'wall-time cap of one solve', 1e-3, 600.0, 's'),
    _core('optimizer.relinearize_max', 'most keyframes relinearized per update, those lowest '
          'in the tree first; the others in the next updates (0 = all): bounds the latency of '
          'an update after a loop closure on a large map', 0, 1_000_000),
    _core('weights.odom_xy', 'information of odometry edges, x and y', 1e-9, _BIG, '1/m^2',
          'weights'),
    _core('weights.odom_yaw', 'information of odometry edges, yaw', 1e-9, _BIG, '1/rad^2',
          'weights'),
    _core('weights.scan_xy', 'information of scan-match and loop edges, x and y', 1e-9, _BIG,
          '1/m^2', 'weights'),
    _core('weights.scan_yaw', 'information of scan-match and loop edges, yaw', 1e-9, _BIG,
          '1/rad^2', 'weights'),
    _core('robust.scale', 'Huber scale of scan and loop edges (whitened units)', 1e-6, _BIG,
          learnable='weights'),
    Param('sync_tolerance', 0.1, 'largest gap between a scan and the odometry used for it',
          1e-4, 10.0, unit='s'),
    Param('future_stamp_tolerance', 0.5, 'odometry or a scan stamped further ahead of the node '
          'clock than this is rejected', 0.0, 3600.0, unit='s'),
    Param('gc.full_collection_period', 30.0, "wall seconds between the process's full garbage "
          'collections, run by the SLAM worker when no scan is waiting instead of inside '
          "whichever update allocates then (0 = Python's own schedule)", 0.0, 3600.0, unit='s',
          read_only=True),
    Param('map.resolution', 0.05, 'occupancy grid cell', 0.005, 10.0, unit='m'),
    Param('map.publish_period', 2.0, 'wall seconds between /map updates', 0.05, 3600.0, unit='s'),
    Param('initial_pose', [0.0, 0.0, 0.0], "the robot's pose [x, y, yaw] in the map at the "
          'first odometry message: anchors the map frame (the simulator\'s start pose makes '
          'ground truth, SLAM output and goals agree)', length=3, read_only=True,
          unit='m, m, rad'),
    Param('frames.map', 'map', 'map frame id', read_only=True),
    Param('frames.odom', 'odom', 'odometry frame id', read_only=True),
    Param('frames.base', 'base_link', 'robot frame id', read_only=True),
    Param('save.directory', '.', 'folder of the files written by ~/save_graph and ~/save_map',
          read_only=True),
    Param('learned_params_file', '',
          'YAML from offline learning; its slam_node.ros__parameters override these',
          read_only=True),
), summary='online 2D pose-graph SLAM', combination=_check_combination)
