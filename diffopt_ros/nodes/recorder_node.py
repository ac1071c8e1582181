"""``recorder_node``: record topics into a crash-safe rosbag2 run (MCAP) for offline learning.

Discovers the type of each configured topic from the ROS graph (retrying every
``discovery_period`` s for topics that appear later), subscribes with a QoS compatible with the
publishers (best effort if any publisher is, e.g. ``/scan``; transient local if all are, e.g.
``/map``), receives the serialized bytes (no deserialization) and hands them with the node-clock
time of receipt (sim time under ``use_sim_time``) to :class:`diffopt_ros.bag.BagWriter`, which
writes ``<output_dir>/<run_name>/`` (never overwriting a run), splits files every
``split_seconds`` and flushes every ``flush_seconds``. Under ``use_sim_time``, messages that
arrive before the first ``/clock`` (a latched goal or map published at start-up) are held, up to
``MAX_HELD`` messages, and written with the first sim time the node sees.

Nothing is lost on SIGINT/SIGTERM: the bag is closed in ``destroy_node`` (``run_node`` calls it
after the spin ends). After a SIGKILL, ``diffopt-ros bag repair RUN`` recovers all but the last
``flush_seconds``. Status on ``/diagnostics``, including the receipt lag of stamped topics (bag
time minus header stamp): a recorder starved of CPU falls behind, stamps late and, beyond
``queue_depth`` messages, loses data.
"""
from __future__ import annotations

import importlib

import rclpy.logging
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)

from diffopt_ros.bag import BagError, BagWriter
from diffopt_ros.bag.convert import cdr_header_stamp, starts_with_header
from diffopt_ros.nodes import ros_convert
from diffopt_ros.nodes.params import ParameterError, declare_params
from diffopt_ros.nodes.runner import run_node
from diffopt_ros.params.recorder import NODE_NAME, SCHEMA

PARAMS = SCHEMA.params
MAX_PLAUSIBLE_LAG = 3600.0  # s: larger or negative lags come from stamps on another clock
MAX_HELD = 10_000  # messages held before the first /clock under use_sim_time


def _bag_qos(profile: QoSProfile) -> Qos:
    """rclpy QoS profile -> rosbags ``Qos`` (stored as the topic's offered QoS)."""
    def time(duration) -> QosTime:
        ns = min(duration.nanoseconds, 2**63 - 1)
        return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)

    return Qos(QosHistory(int(profile.history)), profile.depth,
               QosReliability(int(profile.reliability)), QosDurability(int(profile.durability)),
               time(profile.deadline), time(profile.lifespan),
               QosLiveliness(int(profile.liveliness)), time(profile.liveliness_lease_duration),
               profile.avoid_ros_namespace_conventions)


def _message_class(msgtype: str):
    """``pkg/msg/Type`` -> the Python message class (raises ImportError/AttributeError)."""
    package, kind, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), name)


class RecorderNode(Node):
    """Records the configured topics into a new run folder (see module doc)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        self._closed = True   # until the bag is open (destroy_node may come from a failed start)
        super().__init__(node_name, **kwargs)
        self._values = declare_params(self, PARAMS)
        v = self._values
        try:
            self._writer = BagWriter.create(
                v['output_dir'], v['run_name'] or None, unique=v['unique_name'],
                split_seconds=v['split_seconds'],
                split_bytes=int(v['split_megabytes'] * 2**20), flush_seconds=v['flush_seconds'])
        except (BagError, OSError, ValueError) as exc:
            raise ParameterError(f'{self.get_name()}: output_dir {v["output_dir"]!r}, run_name '
                                 f'{v["run_name"]!r}: {exc}') from exc
        self.run_dir = self._writer.run_dir
        # relative names resolve in the node's namespace, and remaps apply (-r odom:=/wheel/odom)
        self._wanted = list(dict.fromkeys(self.resolve_topic_name(t) for t in v['topics']))
        self._recording: dict[str, object] = {}
        self._failed: dict[str, str] = {}  # topic -> why it cannot be recorded
        self._held: list[tuple[str, bytes]] = []   # received before the first /clock
        self._before_clock = 0   # dropped before the first /clock (more than MAX_HELD)
        self._errors = 0  # failed writes or flushes
        self._stamped: set[str] = set()  # topics whose messages begin with a std_msgs/Header
        self._lag = (0.0, '')  # largest receipt lag (s) since the last status, and its topic
        self._stop_reported = False
        self._closed = False
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(v['discovery_period'], self._discover, clock=steady)
        self.create_timer(v['flush_seconds'] / 2.0, lambda: self._guarded(self._writer.tick),
                          clock=steady)
        self.create_timer(v['diagnostics_period'], self._publish_status, clock=steady)
        self.get_logger().info(f'recording {len(self._wanted)} topics to {self.run_dir}')
        self._discover()

    @property
    def counts(self) -> dict[str, int]:
        """Messages recorded per topic so far."""
        return self._writer.counts

    @property
    def missing_topics(self) -> list[str]:
        """Configured topics not subscribed yet (no publisher seen, or not recordable)."""
        return [t for t in self._wanted if t not in self._recording]

    def _discover(self) -> None:
        if (self._closed or self._writer.stopped is not None
                or len(self._recording) == len(self._wanted)):
            return
        types = dict(self.get_topic_names_and_types())
        for topic in self.missing_topics:
            if topic in self._failed or topic not in types:
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue  # only subscribers so far: wait for a publisher to match its QoS
            self._subscribe(topic, types[topic], publishers)

    def _subscribe(self, topic: str, msgtypes: list[str], publishers) -> None:
        msgtype = msgtypes[0]
        if len(msgtypes) > 1:
            self.get_logger().warning(f'{topic}: several types {msgtypes}; recording {msgtype}')
        try:
            cls = _message_class(msgtype)
            self._writer.add_topic(topic, msgtype,
                                   qos=[_bag_qos(p.qos_profile) for p in publishers])
        except (ImportError, AttributeError, ValueError, BagError) as exc:
            self._failed[topic] = f'{msgtype}: {exc}'
            self.get_logger().error(f'cannot record {topic} ({msgtype}): {exc}')
            return
        best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
                          for p in publishers)
        latched = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                      for p in publishers)
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self._values['queue_depth'],
            reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
        if starts_with_header(self._writer.typestore, msgtype):
            self._stamped.add(topic)
        self._recording[topic] = self.create_subscription(
            cls, topic, lambda data, topic=topic: self._on_message(topic, data), qos, raw=True)
        self.get_logger().info(f'recording {topic} ({msgtype}, '
                               f'{"best effort" if best_effort else "reliable"}'
                               f'{", transient local" if latched else ""})')

    def _on_message(self, topic: str, data: bytes) -> None:
        t_ns = self.get_clock().now().nanoseconds
        if t_ns == 0:  # use_sim_time before the first /clock: no bag time yet, hold it
            if len(self._held) < MAX_HELD:
                self._held.append((topic, data))
            else:
                self._before_clock += 1
            return
        self._write_held()
        if topic in self._stamped:
            stamp = cdr_header_stamp(data)
            lag = (t_ns - stamp) * 1e-9 if stamp else -1.0
            if self._lag[0] < lag < MAX_PLAUSIBLE_LAG:
                self._lag = (lag, topic)
        if not self._closed:
            self._guarded(self._writer.write, topic, data, t_ns)

    def _write_held(self) -> None:
        """Write the messages held before the first /clock, at the node's time now (once it has
        one), before anything received later."""
        if self._held and self.get_clock().now().nanoseconds:
            held, self._held = self._held, []
            for topic, data in held:
                self._on_message(topic, data)

    def _guarded(self, action, *args) -> None:
        """Run a writer action; a failure is logged and counted, not raised, so the other nodes
        of an in-process executor keep running. A failed write (disk full, ...) stops the
        recording for good (the writer keeps the finished files and their metadata): the
        subscriptions end, /diagnostics reports it."""
        try:
            action(*args)
        except (OSError, BagError) as exc:
            self._errors += 1
            if self._writer.stopped is None:
                self.get_logger().error(f'{self.run_dir}: {exc}', throttle_duration_sec=5.0)
            elif not self._stop_reported:
                self._stop_reported = True
                self.get_logger().error(
                    f'{exc}: recording stopped; {len(self._writer.files)} finished files and '
                    f'metadata.yaml are in {self.run_dir}')
                for subscription in self._recording.values():
                    self.destroy_subscription(subscription)
                self._recording = dict.fromkeys(self._recording)

    @property
    def receipt_lag(self) -> tuple[float, str]:
        """Largest delay (s, node clock) from a header stamp to its recording since the last
        /diagnostics status, and the topic; stamps on another clock are ignored."""
        return self._lag

    def _publish_status(self) -> None:
        self._write_held()
        counts = self.counts
        missing = self.missing_topics
        lag, lag_topic = self._lag
        self._lag = (0.0, '')
        lagging = lag > self.get_parameter('lag_warning').value
        level = (DiagnosticStatus.ERROR if self._errors else
                 DiagnosticStatus.WARN if missing or self._failed or lagging else
                 DiagnosticStatus.OK)
        message = ((f'recording stopped ({self._writer.stopped}): ' if self._writer.stopped
                    else '') + f'{sum(counts.values())} messages in {self.run_dir}'
                   + (f'; waiting for {", ".join(missing)}' if missing else '')
                   + (f'; recording {lag:.2f} s behind {lag_topic} (starved executor?)'
                      if lagging else ''))
        values = {'run_dir': str(self.run_dir), 'files_closed': len(self._writer.files),
                  'held_before_clock': len(self._held), 'dropped_before_clock': self._before_clock,
                  'write_errors': self._errors,
                  'receipt_lag_max': lag, 'receipt_lag_topic': lag_topic,
                  **{f'count{topic}': n for topic, n in counts.items()},
                  **{f'failed{topic}': why for topic, why in self._failed.items()}}
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [ros_convert.diagnostic_status(f'{self.get_name()}: recording', 'recorder',
                                                    level, message, values)]
        self._diag_pub.publish(msg)

    def close(self) -> None:
        """Stop recording and close the bag (files finished, metadata.yaml written)."""
        if self._closed:
            return
        self._closed = True
        files = self._writer.close()
        counts = self.counts
        # after SIGINT/SIGTERM the context is shut down: the node's logger could not reach /rosout
        logger = self.get_logger() if self.context.ok() else rclpy.logging.get_logger('recorder')
        logger.info(f'closed {self.run_dir}: {sum(counts.values())} messages in {len(files)} '
                    f'files: {counts}')

    def destroy_node(self) -> None:
        """Close the bag, then destroy the node."""
        self.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Console script ``recorder_node``: record until SIGINT/SIGTERM."""
    return run_node(RecorderNode, args, description=__doc__, params=SCHEMA)


if __name__ == '__main__':
    raise SystemExit(main())
