"""``slam_node``: online 2D pose-graph SLAM (:mod:`diffopt_ros.slam`) as a ROS 2 node.

Subscribes ``odom`` (``nav_msgs/Odometry``) and ``scan`` (``sensor_msgs/LaserScan``,
sensor-data QoS). Callbacks only convert, check and queue: scan matching and optimization run
on a worker thread, so the callbacks never block. Publishes

* ``slam/pose`` (``geometry_msgs/PoseWithCovarianceStamped``, frame ``map``) per processed scan,
  covariance (map-aligned x, y, yaw) from :attr:`~diffopt_ros.slam.system.SlamSystem.covariance`
  at the last keyframe step;
* ``slam/odom`` (``nav_msgs/Odometry``, frame ``map``) per odometry message: the odometry pose
  composed with the map->odom correction, so the corrected state comes at odometry rate;
* ``slam/path`` (``nav_msgs/Path``): the keyframe estimates (each stamped with its keyframe's
  scan stamp), whenever the graph changed;
* ``map`` (``nav_msgs/OccupancyGrid``, transient-local) every ``map.publish_period`` s of wall
  time when the graph changed, cast on a thread of its own (the SLAM lock is held only to copy
  the estimates), so a long cast after a loop closure never delays the next scan;
* ``/diagnostics``: update time, keyframes, loop closures, rejected and skipped inputs,
  keyframes without a scan match to the one before (``unmatched_keyframes``; each also logged
  with its reason: only odometry links them there, so their heading error stays in the map
  until a loop closure), full garbage collections;
* TF ``map`` -> ``odom`` when ``tf2_ros`` is importable.

The process's full garbage collections run on the worker when no scan is waiting, at most every
``gc.full_collection_period`` s (:class:`~diffopt_ros.idle_gc.IdleCollector`), not inside
whichever keyframe update allocates then.

Services (``std_srvs/Trigger``): ``~/save_graph`` re-solves the whole graph and writes
``<save.directory>/slam_graph.g2o``
and ``slam_graph.npz`` (:class:`~diffopt_ros.slam.graph.SlamGraph`, for offline learning);
``~/save_map`` re-solves too and writes ``map.pgm`` + ``map.yaml`` (map_server format).

Bad inputs: odometry with NaN/Inf, a zero quaternion or a stamp not after the previous one is
rejected (logged, counted); scans that go back in time or whose beam geometry is inconsistent
(``angle_increment`` 0 or not finite, ``angle_min + (N - 1) angle_increment`` not
``angle_max``, bad range limits) are rejected; odometry and scans stamped more than
``future_stamp_tolerance`` ahead of the node clock are rejected (they would lock every later
message out); a node clock that jumps back (sim reset, bag loop) restarts the stamp checks.
Scans without usable beams are skipped with a throttled warning.

The pairing of scans with odometry (stamp order, a scan waiting for odometry, clock jumps) is
ROS-free in :class:`~diffopt_ros.slam.inputs.ScanSync`; what is here is the ROS side: message
checks and conversions, six outputs, two services, the worker thread and its shutdown. That
is why the module is over 400 lines (~490).
"""
from __future__ import annotations

import array
import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import OccupancyGrid as OccupancyGridMsg
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import LaserScan
from std_srvs.srv import Trigger

from diffopt_ros.idle_gc import IdleCollector
from diffopt_ros.nodes import ros_convert
from diffopt_ros.nodes.device import available_device
from diffopt_ros.nodes.params import ParameterError, apply_learned_params_file, declare_params
from diffopt_ros.nodes.runner import run_node
from diffopt_ros.params.slam import NODE_NAME, SCHEMA
from diffopt_ros.slam.config import config_from_params
from diffopt_ros.slam.inputs import ScanSync
from diffopt_ros.slam.occupancy import OccupancyGrid, OccupancyMapper, save_map, updated_mapper
from diffopt_ros.slam.odometry import StampError
from diffopt_ros.slam.system import SlamSystem
from diffopt_ros.threads import limit_threads

try:  # TF is optional: tf2_ros is not on PyPI
    from geometry_msgs.msg import TransformStamped
    from tf2_ros import TransformBroadcaster
except ImportError:
    TransformBroadcaster = None

PARAMS = SCHEMA.params


@dataclass
class _Stats:
    """Counters for /diagnostics."""

    scans: int = 0
    keyframes: int = 0
    skipped_scans: int = 0
    rejected_scans: int = 0
    rejected_odom: int = 0
    future_stamps: int = 0
    clock_jumps: int = 0
    dropped_scans: int = 0
    errors: int = 0
    update_time: float = 0.0
    max_update_time: float = 0.0
    last_skip: str = ''


_STOP = object()


class SlamNode(Node):
    """Pose-graph SLAM node; see the module docstring for topics, services and behaviour."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._lock = threading.Lock()          # guards self._slam and self._values
        self._slam: SlamSystem | None = None   # built once the parameters are final
        self._worker: threading.Thread | None = None
        self._map_thread: threading.Thread | None = None
        self._collector: IdleCollector | None = None     # full garbage collections when idle
        self._stopping = threading.Event()
        self._map_wanted = threading.Event()      # the estimate changed since the last /map
        self._values = declare_params(self, PARAMS, on_change=self._on_params)
        reason = SCHEMA.combination(self._values)
        if reason:
            raise ParameterError(f'{self.get_name()}: invalid start-up values: {reason}')
        apply_learned_params_file(self, self._values['learned_params_file'])
        limit_threads(self._values['torch_threads'])
        device = available_device(self, self._values['device'])
        self._slam = SlamSystem(config_from_params(self._values), device=device,
                                initial_pose=self._values['initial_pose'])
        self._input_lock = threading.Lock()    # guards self._sync (both inputs)
        self._sync = ScanSync(horizon=5.0)      # scans paired with odometry
        self._covariance = np.zeros((6, 6))       # of the newest keyframe, map-aligned
        self._path = PathMsg()                    # /slam/path, its poses kept between keyframes
        self._path_xyyaw = np.zeros((0, 3))       # the keyframe estimates in self._path.poses
        self._keyframe_stamps: list = []          # builtin_interfaces/Time of each keyframe
        self._stats = _Stats()
        self._map_lock = threading.Lock()         # guards self._mapper (map thread, save_map)
        self._mapper: OccupancyMapper | None = None
        self._map_stamp = None                    # stamp of the last estimate change
        frames = self._values
        self._map_frame, self._odom_frame = frames['frames.map'], frames['frames.odom']
        self._base_frame = frames['frames.base']

        # One group per input: odometry is never held up by a scan callback (and vice versa)
        # and each topic's messages are handled in order.
        odom_group, scan_group = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        services = MutuallyExclusiveCallbackGroup()
        self._pose_pub = self.create_publisher(PoseWithCovarianceStamped, 'slam/pose', 10)
        self._odom_pub = self.create_publisher(Odometry, 'slam/odom', 10)
        self._path_pub = self.create_publisher(PathMsg, 'slam/path', 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._map_pub = self.create_publisher(OccupancyGridMsg, 'map', latched)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._tf = TransformBroadcaster(self) if TransformBroadcaster is not None else None
        self.create_subscription(Odometry, 'odom', self._on_odom, qos_profile_sensor_data,
                                 callback_group=odom_group)
        self.create_subscription(LaserScan, 'scan', self._on_scan, qos_profile_sensor_data,
                                 callback_group=scan_group)
        self.create_service(Trigger, '~/save_graph', self._on_save_graph, callback_group=services)
        self.create_service(Trigger, '~/save_map', self._on_save_map, callback_group=services)

        self._queue: queue.Queue = queue.Queue(maxsize=4)
        if self._values['gc.full_collection_period'] > 0:
            self._collector = IdleCollector(self._values['gc.full_collection_period'])
            self._collector.start()
        self._worker = threading.Thread(target=self._work, name='slam-worker', daemon=True)
        self._worker.start()
        self._map_thread = threading.Thread(target=self._map_work, name='slam-map', daemon=True)
        self._map_thread.start()

    # ----------------------------------------------------------------- parameters
    def _on_params(self, changes: dict) -> str | None:
        merged, reason = SCHEMA.change(self._values, changes)
        if reason:
            return reason
        with self._lock:
            self._values = merged
            if self._slam is not None:
                self._slam.set_config(config_from_params(merged))
        return None

    # ----------------------------------------------------------------- inputs (never block)
    def _stamp_rejected(self, stamp: float, topic: str) -> str | None:
        """Why a stamp too far ahead of the node clock is rejected (counted; the caller warns, one
        throttled call site per topic), None when accepted; a node clock that went back since the
        last input (sim reset, bag loop) restarts the order checks."""
        now = self.get_clock().now().nanoseconds * 1e-9
        with self._input_lock:
            jump = self._sync.clock(now)
            if jump:
                self._stats.clock_jumps += 1
                self.get_logger().warning(f'node clock jumped back {jump:.3f} s: restarting the '
                                          'stamp order of odometry and scans',
                                          throttle_duration_sec=2.0)
                with self._lock:
                    self._slam.restart_time()
        ahead = stamp - now
        if now > 0.0 and ahead > self._values['future_stamp_tolerance']:
            self._stats.future_stamps += 1
            return (f'{topic} rejected: stamp {stamp:.3f} s is {ahead:.3f} s ahead of the node '
                    f'clock (future_stamp_tolerance {self._values["future_stamp_tolerance"]} s)')
        return None

    def _on_odom(self, msg: Odometry):
        stamp = ros_convert.stamp_to_sec(msg.header.stamp)
        rejected = self._stamp_rejected(stamp, 'odom')
        if rejected:
            self._stats.rejected_odom += 1
            self.get_logger().warning(rejected, throttle_duration_sec=2.0)
            return
        try:
            state = ros_convert.odometry_to_state(msg, 'odom')
            with self._input_lock:
                ready = self._sync.add_odometry(stamp, tuple(state[:3]),
                                                self._values['sync_tolerance'])
        except (ros_convert.MessageError, StampError, ValueError) as exc:
            self._stats.rejected_odom += 1
            self.get_logger().warning(f'odometry rejected: {exc}', throttle_duration_sec=2.0)
            return
        pose = self._slam.map_pose(state[:3])
        self._odom_pub.publish(ros_convert.state_to_odometry(
            (*pose, state[3], state[4]), msg.header.stamp, self._map_frame, self._base_frame,
            pose_covariance=self._covariance, twist_covariance=np.asarray(msg.twist.covariance)))
        if ready is not None:
            self._queue_scan(*ready)

    def _on_scan(self, msg: LaserScan):
        stamp = ros_convert.stamp_to_sec(msg.header.stamp)
        rejected = self._stamp_rejected(stamp, 'scan')
        if rejected:
            self._stats.rejected_scans += 1
            self.get_logger().warning(rejected, throttle_duration_sec=2.0)
            return
        try:
            ranges, angles = ros_convert.scan_to_ranges(msg, 'scan')
        except ros_convert.MessageError as exc:
            self._stats.rejected_scans += 1
            self.get_logger().warning(f'scan rejected: {exc}', throttle_duration_sec=2.0)
            return
        try:
            with self._input_lock:
                self._sync.check_scan_stamp(stamp)
        except StampError as exc:
            self._stats.rejected_scans += 1
            self.get_logger().warning(f'scan rejected: {exc}', throttle_duration_sec=2.0)
            return
        if not np.isfinite(ranges).any():
            self._stats.skipped_scans += 1
            self.get_logger().warning(f'scan at {stamp:.3f} s skipped: no valid ranges '
                                      f'({len(ranges)} beams, all empty, NaN or out of range)',
                                      throttle_duration_sec=2.0)
            return
        scan = (stamp, ranges, angles, float(msg.range_min), float(msg.range_max))
        with self._input_lock:   # None: it waits for odometry (resolved in _on_odom)
            dropped = self._sync.dropped
            ready = self._sync.add_scan(scan, self._values['sync_tolerance'])
            self._stats.dropped_scans += self._sync.dropped - dropped
        if ready is not None:
            self._queue_scan(*ready)

    def _queue_scan(self, scan: tuple, odom: tuple[float, float, float] | None):
        """Hand a scan and the odometry pose at its stamp (None: none close enough) to the
        worker thread; when the worker is behind, the oldest queued scan is dropped."""
        stamp = scan[0]
        if odom is None:
            self._stats.skipped_scans += 1
            self.get_logger().warning(f'scan at {stamp:.3f} s skipped: no odometry within '
                                      f'{self._values["sync_tolerance"]} s of it', throttle_duration_sec=2.0)
            return
        item = (scan, odom)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            try:   # keep the newest scans: drop the oldest queued one
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._queue.put_nowait(item)
            self._stats.dropped_scans += 1
            self.get_logger().warning('SLAM is falling behind: dropped the oldest queued scan',
                                      throttle_duration_sec=2.0)

    # ----------------------------------------------------------------- worker thread
    def _work(self):
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._process(*item)
            except Exception as exc:  # keep the node alive; the error is reported
                self._stats.errors += 1
                self.get_logger().error(f'SLAM update at {item[0][0]:.3f} s failed: '
                                        f'{type(exc).__name__}: {exc}')
            if self._collector is not None:       # idle: no scan waiting
                self._collector.idle(self._queue.empty())

    def _process(self, scan: tuple, odom: tuple[float, float, float]):
        """One scan ``(stamp, ranges, angles, range_min, range_max)`` with the odometry pose
        at its stamp, on the worker thread: SLAM update, then the outputs."""
        with self._lock:
            update = self._slam.process(scan[0], odom, *scan[1:])
            # the covariance changes at keyframe steps, the estimate when the graph changed
            step = update.keyframe is not None or update.localized is not None
            covariance = self._slam.covariance if step else None
            estimate = self._slam.estimate if update.graph_changed else None
            correction = self._slam.correction
        stats = self._stats
        stats.scans += 1
        if update.unmatched:
            self.get_logger().warning(f'keyframe {update.keyframe} at {scan[0]:.3f} s has no scan '
                                      f'match to the one before ({update.unmatched}): odometry '
                                      'only there', throttle_duration_sec=2.0)
        if update.skipped:
            stats.skipped_scans += 1
            stats.last_skip = update.skipped
            self.get_logger().warning(f'scan at {scan[0]:.3f} s skipped: {update.skipped}',
                                      throttle_duration_sec=2.0)
        if covariance is not None:
            self._covariance = _pose_covariance_6x6(covariance.cpu().numpy())
        stamp = ros_convert.sec_to_stamp(scan[0])
        pose_msg = PoseWithCovarianceStamped()
        pose_msg.header.stamp, pose_msg.header.frame_id = stamp, self._map_frame
        pose_msg.pose.pose = ros_convert.xy_yaw_to_pose(update.pose, stamp, self._map_frame).pose
        pose_msg.pose.covariance = self._covariance.reshape(36)
        self._pose_pub.publish(pose_msg)
        if self._tf is not None:
            self._publish_tf(correction, stamp)
        if update.keyframe is not None:
            self._keyframe_stamps.append(stamp)
        if step:
            stats.update_time = update.seconds
            stats.max_update_time = max(stats.max_update_time, update.seconds)
            self._publish_diagnostics(update)
        if estimate is not None:
            stats.keyframes = len(estimate)
            self._publish_path(estimate.cpu().numpy(), stamp)
            self._map_stamp = stamp
            self._map_wanted.set()

    def _publish_path(self, estimate: np.ndarray, stamp):
        """``slam/path``: one pose per keyframe, stamped with the keyframe's stamp. Only the
        poses whose estimate changed are rebuilt (a local update moves the window only)."""
        poses = self._path.poses
        if len(estimate) != len(self._keyframe_stamps):   # cannot happen; rebuild in full
            self._keyframe_stamps = [stamp] * len(estimate)
            poses, self._path_xyyaw = [], np.zeros((0, 3))
        old = min(len(self._path_xyyaw), len(estimate))
        changed = np.flatnonzero((estimate[:old] != self._path_xyyaw[:old]).any(axis=1))
        for k in changed.tolist():
            poses[k] = ros_convert.xy_yaw_to_pose(estimate[k], self._keyframe_stamps[k],
                                                  self._map_frame)
        poses = poses[:old] + [ros_convert.xy_yaw_to_pose(estimate[k], self._keyframe_stamps[k],
                                                          self._map_frame)
                               for k in range(old, len(estimate))]
        self._path.header.stamp, self._path.header.frame_id = stamp, self._map_frame
        self._path.poses = poses
        self._path_xyyaw = estimate
        self._path_pub.publish(self._path)

    def _publish_tf(self, correction, stamp):
        tf = TransformStamped()
        tf.header.stamp, tf.header.frame_id = stamp, self._map_frame
        tf.child_frame_id = self._odom_frame
        tf.transform.translation.x, tf.transform.translation.y = correction[0], correction[1]
        tf.transform.rotation = ros_convert.yaw_to_quaternion(correction[2])
        self._tf.sendTransform(tf)

    # ----------------------------------------------------------------- map thread
    def _map_work(self):
        """``/map`` on its own thread, at most every ``map.publish_period`` s of wall time: the
        inputs are copied under the SLAM lock, the rays cast outside it, so casting (hundreds of
        ms after a loop closure moves the map) never holds up the next scan."""
        last = -math.inf
        while True:
            self._map_wanted.wait()
            wait = last + self._values['map.publish_period'] - time.monotonic()
            if self._stopping.wait(max(wait, 0.0)):   # True once stopping (also at wait 0)
                return
            self._map_wanted.clear()
            last = time.monotonic()
            try:
                self._publish_map(self._map_stamp)
            except Exception as exc:  # keep the node alive; the error is reported
                self._stats.errors += 1
                self.get_logger().error(f'/map update failed: {type(exc).__name__}: {exc}')

    def _cast_map(self) -> OccupancyGrid:
        """The occupancy grid of the current estimate; only the copy of the inputs holds the
        SLAM lock."""
        with self._lock:
            inputs = self._slam.map_inputs()
        with self._map_lock:
            self._mapper = updated_mapper(self._mapper, self._values['map.resolution'], *inputs)
            return self._mapper.grid()

    def _publish_map(self, stamp):
        grid = self._cast_map()
        msg = OccupancyGridMsg()
        msg.header.stamp, msg.header.frame_id = stamp, self._map_frame
        msg.info.map_load_time = stamp
        msg.info.resolution = float(grid.resolution)
        msg.info.height, msg.info.width = grid.data.shape
        msg.info.origin.position.x, msg.info.origin.position.y = grid.origin
        msg.info.origin.orientation.w = 1.0
        msg.data = array.array('b', grid.data.astype(np.int8, copy=False).tobytes())   # no per-cell check
        self._map_pub.publish(msg)

    def _publish_diagnostics(self, update):
        s, collector = self._stats, self._collector
        level = DiagnosticStatus.OK
        message = 'ok'
        if s.dropped_scans or s.errors:
            level, message = DiagnosticStatus.WARN, 'scans dropped or updates failed'
        status = ros_convert.diagnostic_status(
            f'{self.get_name()}: slam', 'slam', level, message, {
                'update_time_ms': 1e3 * s.update_time, 'max_update_time_ms': 1e3 * s.max_update_time,
                'keyframes': s.keyframes, 'loop_closures': self._slam.loop_closures,
                'localizations': self._slam.localizations,
                'unmatched_keyframes': self._slam.unmatched_keyframes,
                'full_solves': self._slam.full_solves, 'scans': s.scans,
                'skipped_scans': s.skipped_scans, 'rejected_scans': s.rejected_scans,
                'rejected_odom': s.rejected_odom, 'future_stamps': s.future_stamps,
                'clock_jumps': s.clock_jumps, 'dropped_scans': s.dropped_scans,
                'errors': s.errors, 'queue': self._queue.qsize(),
                'full_gc_collections': collector.collections if collector else 0,
                'full_gc_longest_ms': 1e3 * collector.longest if collector else 0.0})
        msg = DiagnosticArray()
        msg.header.stamp = ros_convert.sec_to_stamp(update.stamp)
        msg.status = [status]
        self._diag_pub.publish(msg)

    # ----------------------------------------------------------------- services
    def _directory(self) -> Path:
        folder = Path(self._values['save.directory']).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _on_save_graph(self, request, response):
        try:
            folder = self._directory()
            with self._lock:
                self._slam.solve_full()
                self._slam.save_g2o(folder / 'slam_graph.g2o')
                self._slam.graph().save(folder / 'slam_graph.npz')
            response.success = True
            response.message = f'wrote {folder / "slam_graph.g2o"} and {folder / "slam_graph.npz"}'
        except (OSError, ValueError) as exc:
            response.success, response.message = False, f'cannot save the graph: {exc}'
        return response

    def _on_save_map(self, request, response):
        try:
            with self._lock:
                if self._slam.num_keyframes == 0:
                    raise ValueError('no keyframes yet')
                self._slam.solve_full()
            grid = self._cast_map()
            pgm, yaml_path = save_map(grid, self._directory() / 'map')
            response.success, response.message = True, f'wrote {pgm} and {yaml_path}'
        except (OSError, ValueError) as exc:
            response.success, response.message = False, f'cannot save the map: {exc}'
        return response

    # ----------------------------------------------------------------- shutdown
    def destroy_node(self):
        """Stop the worker and map threads (:meth:`stop_work`), then destroy the node."""
        self.stop_work()
        return super().destroy_node()

    def stop_work(self) -> None:
        """Stop the worker and map threads (finishing the update in progress) and the idle
        collector; ``run_node`` calls it before it shuts the executor down, so that no thread
        of the node publishes meanwhile. Idempotent."""
        self._stopping.set()
        self._map_wanted.set()
        if self._worker is not None and self._worker.is_alive():
            while True:
                try:
                    self._queue.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        pass
            self._worker.join(timeout=10.0)
        if self._map_thread is not None:
            self._map_thread.join(timeout=10.0)
        if self._collector is not None:
            self._collector.stop()

    @property
    def slam(self) -> SlamSystem:
        """The core SLAM system (read it under no lock only from the worker's point of view)."""
        return self._slam

    @property
    def stats(self) -> _Stats:
        """Counters shown in /diagnostics."""
        return self._stats


def _pose_covariance_6x6(cov3: np.ndarray) -> np.ndarray:
    """``(3, 3)`` ``(x, y, yaw)`` covariance -> ROS ``(6, 6)`` pose covariance (x, y, z, roll,
    pitch, yaw); z, roll, pitch get a tiny variance (planar robot)."""
    out = np.diag([0.0, 0.0, 1e-9, 1e-9, 1e-9, 0.0])
    index = [0, 1, 5]
    out[np.ix_(index, index)] = cov3
    return out


def main(args: list[str] | None = None) -> int:
    """Console script ``slam_node``: run the node until SIGINT/SIGTERM."""
    return run_node(SlamNode, args, multithreaded=True, description=__doc__,
                    params=SCHEMA)


if __name__ == '__main__':
    raise SystemExit(main())
