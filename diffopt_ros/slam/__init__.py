"""Online 2D pose-graph SLAM on the differentiable least-squares core (no ROS needed).

- :class:`SlamSystem` (:mod:`.system`, the front end): takes ``(stamp, odometry pose, scan)``;
  keyframes, point-to-line ICP (:mod:`.icp`, KD-tree neighbours), loop closures verified by
  ICP, re-use of existing keyframes in revisited places (localization instead of new
  variables), occupancy grid (:mod:`.occupancy`), g2o output.
- :class:`~diffopt_ros.slam.backend.PoseGraphBackend` (:mod:`.backend`): the keyframe graph,
  its incremental iSAM2-style solve per change
  (:class:`~diffopt_ros.nlls.incremental.IncrementalSmoother`), batch Levenberg-Marquardt on
  demand (:mod:`diffopt_ros.nlls`), marginal covariance.
- :class:`SlamConfig` (:mod:`.config`): the settings and their ``slam_node`` parameter names.
- :class:`SlamGraph` / :func:`build_objective`: the graph as data, rebuilt offline with
  learnable weights (:class:`SlamWeights` = the ``slam_node`` parameters ``weights.*``,
  ``robust.scale`` of docs/CONTRACTS.md).

Example::

    from diffopt_ros.slam import SlamSystem, SlamConfig
    slam = SlamSystem(SlamConfig(keyframe_distance=0.5))
    update = slam.process(stamp, (x, y, yaw), ranges, angles, range_min, range_max)
    update.pose            # (x, y, yaw) in the map frame at the scan
    slam.estimate          # (K, 3) keyframe poses;  slam.covariance: (3, 3) of the newest
    graph = slam.graph()   # SlamGraph: stamps, odom_poses, edges, measurements, kinds
"""
from diffopt_ros.slam.config import SlamConfig
from diffopt_ros.slam.graph import (
    EDGE_KINDS,
    SlamGraph,
    SlamWeights,
    build_objective,
    edge_information,
    information_by_kind,
)
from diffopt_ros.slam.icp import IcpConfig, ScanMatch, match_scans
from diffopt_ros.slam.occupancy import (
    OccupancyGrid,
    OccupancyMapper,
    build_occupancy_grid,
    save_map,
)
from diffopt_ros.slam.odometry import OdomBuffer, StampError
from diffopt_ros.slam.system import SlamSystem, SlamUpdate

__all__ = ['EDGE_KINDS', 'IcpConfig', 'OccupancyGrid', 'OccupancyMapper', 'OdomBuffer',
           'ScanMatch', 'SlamConfig', 'SlamGraph', 'SlamSystem', 'SlamUpdate', 'SlamWeights', 'StampError',
           'build_objective', 'build_occupancy_grid', 'edge_information', 'information_by_kind',
           'match_scans', 'save_map']
