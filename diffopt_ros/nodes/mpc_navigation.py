"""``navigation.enabled`` of ``mpc_node``: the map, the scan, the global path and the navigator's tick.

:class:`NodeNavigation` gives the node's :class:`~diffopt_ros.navigation.Navigator` its map
(``map_file``, a map_server YAML, loaded at configure; else the ``map`` topic,
nav_msgs/OccupancyGrid, transient-local, as slam_node publishes it: each map makes a new
navigator and the goal is planned again), the latest ``scan`` (sensor_msgs/LaserScan, the lidar at
the robot centre, turned into map-frame points with the latest state) and the goal, and publishes
the global path on ``plan_global`` (nav_msgs/Path, in the state's frame; empty when the goal is
unreachable) whenever it is planned or replanned. The ROS-free work is
:mod:`diffopt_ros.navigation`.
"""
from __future__ import annotations

import threading

import numpy as np
from nav_msgs.msg import OccupancyGrid, Path
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import LaserScan

from diffopt_ros.maps import load_map
from diffopt_ros.mpc.obstacles import scan_to_world
from diffopt_ros.mpc.receding import MpcSettings
from diffopt_ros.navigation import Navigator, NavSettings, NavStep
from diffopt_ros.nodes import ros_convert
from diffopt_ros.slam.occupancy import OccupancyGrid as Grid


class NodeNavigation:
    """The navigation inputs and outputs of one mpc_node.

    Args:
        node: the mpc_node (a lifecycle node: ``plan_global`` is a lifecycle publisher).
        values: the node's parameter values at configure.
        group: callback group of the map and scan subscriptions.
        pose: ``pose() -> (3,) (x, y, yaw)`` of the latest state, or None.

    Raises:
        diffopt_ros.maps.MapError: ``map_file`` cannot be read (the message names file and key).
    """

    def __init__(self, node, values: dict, group, pose):
        self._node, self._values, self._pose = node, values, pose
        self._lock = threading.Lock()
        self._navigator: Navigator | None = None
        self._new_goal = False      # a goal to plan at the next tick
        self._points = None         # (N, 2) scan points (map frame) for the next tick
        self.publishers = [node.create_lifecycle_publisher(Path, 'plan_global', 10)]
        self.subscriptions = []
        if values['map_file']:
            self.set_map(load_map(values['map_file']))
        else:
            self.subscriptions.append(node.create_subscription(
                OccupancyGrid, 'map', self._on_map,
                QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL), callback_group=group))
        self.subscriptions.append(node.create_subscription(LaserScan, 'scan', self._on_scan,
                                                           qos_profile_sensor_data, callback_group=group))

    def set_map(self, grid: Grid) -> None:
        """A new navigator on ``grid``; the current goal (if any) is planned on it at the next tick."""
        v = self._values
        nav = NavSettings.from_params(v)
        navigator = Navigator(grid, MpcSettings.from_params(v), nav)
        with self._lock:
            self._navigator, self._new_goal = navigator, True

    def new_goal(self) -> None:
        """Plan the node's goal at the next tick."""
        with self._lock:
            self._new_goal = True

    def _on_map(self, msg: OccupancyGrid):
        info = msg.info
        data = np.asarray(msg.data, dtype=np.int8).reshape(info.height, info.width)
        self.set_map(Grid(data=data, resolution=float(info.resolution),
                          origin=(info.origin.position.x, info.origin.position.y)))

    def _on_scan(self, msg: LaserScan):
        ranges, angles = ros_convert.scan_to_ranges(msg)
        with self._lock:
            navigator = self._navigator
        pose = self._pose()
        if navigator is None or pose is None:
            return
        points = scan_to_world(pose, ranges, angles, navigator.nav.scan_range)
        with self._lock:
            self._points = points

    def step(self, now: float, state: np.ndarray, goal: np.ndarray, frame: str, deadline: float,
             latency: float) -> tuple[tuple[float, float], NavStep | None, str]:
        """One tick towards ``goal (2,)`` (m) from ``state (5,)`` (frame ``frame``) at node time
        ``now`` (s): the command ``(v, omega)`` (zero unless tracking; with ``cmd_steering_angle``
        ``(v, steer)``), the navigator's step (None without a map) and the mode (``'no map'``,
        ``'tracking'``, ``'goal reached'``, ``'unreachable'``, ``'blocked'``, ``'no progress'``); the
        solve ends by ``deadline`` (``time.perf_counter()``); ``latency`` (s): from the state's
        stamp to the command's publication at the latest (the stop zone's)."""
        logger = self._node.get_logger()
        with self._lock:
            navigator, new_goal, points = self._navigator, self._new_goal, self._points
            self._new_goal, self._points = False, None
        if navigator is None:
            logger.warning('navigation: no map yet (map_file or the map topic): commanding zero',
                           throttle_duration_sec=2.0)
            return (0.0, 0.0), None, 'no map'
        if points is not None:
            navigator.set_scan_points(points, stride=2)
        if new_goal:
            plan = navigator.set_goal(state[:2], goal)
            self._publish_plan(navigator, frame)
            if not plan.reachable:
                logger.warning(f'goal ({goal[0]:.2f}, {goal[1]:.2f}) is unreachable: {plan.reason}; '
                               'stopping')
        step = navigator.step(state, now, deadline, latency)
        if step.replanned:
            self._publish_plan(navigator, frame)
        if step.mode == 'blocked':
            logger.warning('navigation: the way to the goal is blocked by obstacles the map does '
                           'not have (scan): standing still, planning again', throttle_duration_sec=2.0)
        if step.mode == 'no progress':
            nav = navigator.nav
            logger.warning(f'navigation: the robot has not moved {nav.progress_radius:.2f} m in '
                           f'{nav.progress_timeout:.1f} s towards goal ({goal[0]:.2f}, {goal[1]:.2f}): '
                           'giving it up, commanding zero until the next goal')
        if step.mode != 'tracking':
            return (0.0, 0.0), step, step.mode
        if step.stop_distance is not None:
            logger.warning(f'navigation: a scan point is {step.stop_distance:.3f} m ahead of the '
                           f'stop margin: speed cut to {step.command[0]:.2f} m/s',
                           throttle_duration_sec=2.0)
        if self._values['cmd_steering_angle']:    # the car's control (v_cmd, steer_cmd) itself
            return (float(navigator.last_command[0]), float(navigator.last_command[1])), step, step.mode
        return (float(step.command[0]), float(step.command[1])), step, step.mode

    def _publish_plan(self, navigator: Navigator, frame: str) -> None:
        """The navigator's global path on plan_global (empty when unreachable)."""
        plan = navigator.plan
        path = plan.path if plan is not None and plan.reachable else np.zeros((0, 2))
        poses = np.column_stack([path, np.zeros(len(path))])
        self.publishers[0].publish(ros_convert.poses_to_path(
            poses, self._node.get_clock().now().to_msg(), frame or 'map'))
