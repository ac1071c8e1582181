"""Recorded runs as arrays (:class:`RunData`): read from rosbag2, written back, split.

A :class:`RunData` holds one run's time series: read from a rosbag2 folder (MCAP or sqlite3) by
:func:`load_run` / :func:`load_runs` (:func:`as_runs` takes paths or runs alike), or built in
memory (the simulator, :mod:`diffopt_ros.drive`); :func:`save_bag` writes one as the recorder
would. :func:`split_runs` splits runs into training and validation runs (a run is never on
both sides). Learning data is cut from runs by :mod:`diffopt_ros.learn.windows` (MPC-horizon
windows) and :mod:`diffopt_ros.learn.slam_weights` (keyframe sequences).

States come from ``/ground_truth/odom`` where the run has it, else from ``/odom``. Times are
seconds on the recorder's clock: header stamps for stamped messages (states, scans) and the
bag timestamp (receipt) for ``/cmd_vel``, which is when the robot received it too.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from diffopt_ros.bag import BagError, BagWriter, EmptyBagError, MissingTopicError, Scans, find_runs
from diffopt_ros.bag import Run as BagRun
from diffopt_ros.bag.convert import header_stamps, path_poses

GROUND_TRUTH_TOPIC = '/ground_truth/odom'
ODOM_TOPIC = '/odom'
CMD_TOPIC = '/cmd_vel'
GOAL_TOPIC = '/goal_pose'
PLAN_TOPIC = '/plan'
SCAN_TOPIC = '/scan'


class DatasetError(ValueError):
    """Runs that cannot give the data asked for; the message names the run and topic."""


@dataclass
class Series:
    """A time series: ``t`` ``(N,)`` s, strictly increasing, and ``values`` ``(N, d)``."""

    t: np.ndarray
    values: np.ndarray

    def __post_init__(self):
        t = np.asarray(self.t, dtype=np.float64).reshape(-1)
        values = np.asarray(self.values, dtype=np.float64).reshape(len(t), -1)
        order = np.argsort(t, kind='stable')
        t, values = t[order], values[order]
        keep = np.concatenate([[True], np.diff(t) > 0]) if len(t) else np.zeros(0, bool)
        self.t, self.values = t[keep], values[keep]  # repeated stamps: the first one counts

    def __len__(self) -> int:
        return len(self.t)


@dataclass
class Plan:
    """A ``/plan`` (nav_msgs/Path) received at ``t`` (s): ``poses`` ``(N, 3)`` ``[x, y, yaw]``
    and the poses' stamps ``stamps`` ``(N,)`` s (strictly increasing: a timed trajectory)."""

    t: float
    poses: np.ndarray
    stamps: np.ndarray

    @property
    def timed(self) -> bool:
        """Whether the poses carry a time schedule (strictly increasing stamps)."""
        return len(self.stamps) > 1 and bool(np.all(np.diff(self.stamps) > 0))


@dataclass
class RunData:
    """One recorded run as arrays.

    Attributes:
        name: run name (folder name).
        source: where it was read from, for messages.
        odom: ``/odom`` states ``[x, y, yaw, v, omega]`` (odom frame), or None.
        ground_truth: ``/ground_truth/odom`` states (map frame), or None.
        commands: ``/cmd_vel`` ``[v_cmd (m/s), omega_cmd (rad/s)]``, or None.
        goals: ``/goal_pose`` ``[x, y, yaw]``, or None.
        plans: ``/plan`` messages in time order (possibly empty).
        scans: ``/scan``, or None.
        other_states: further ``nav_msgs/Odometry`` topics by name (e.g. ``/slam/odom``, the
            state the MPC closed the loop on in the demo).
    """

    name: str
    source: str = ''
    odom: Series | None = None
    ground_truth: Series | None = None
    commands: Series | None = None
    goals: Series | None = None
    plans: tuple[Plan, ...] = ()
    scans: Scans | None = None
    other_states: dict[str, Series] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The run's path or name, for messages."""
        return self.source or self.name

    def states(self, topic: str | None = None) -> tuple[Series, str]:
        """The state series and its topic: ``topic`` if given, else ground truth where
        recorded, else odometry.

        Raises:
            DatasetError: no such states (the topic is named).
        """
        if topic is not None:
            series = {GROUND_TRUTH_TOPIC: self.ground_truth, ODOM_TOPIC: self.odom,
                      **self.other_states}.get(topic)
            if series is None or len(series) < 2:
                raise DatasetError(f'{self.where}: no states on {topic} (read it with '
                                   f'load_run(..., state_topics=[{topic!r}]))')
            return series, topic
        for series, topic in ((self.ground_truth, GROUND_TRUTH_TOPIC), (self.odom, ODOM_TOPIC)):
            if series is not None and len(series) >= 2:
                return series, topic
        raise DatasetError(f'{self.where}: no states: neither {GROUND_TRUTH_TOPIC} nor '
                           f'{ODOM_TOPIC} has messages')

    def require_commands(self) -> Series:
        """The commands, or a :class:`DatasetError` naming the run and topic."""
        if self.commands is None or len(self.commands) == 0:
            raise DatasetError(f'{self.where}: topic {CMD_TOPIC} has no messages')
        return self.commands


#: Runs as learning takes them: one or several run paths (rosbag2 runs or folders of runs) or
#: :class:`RunData`.
RunsArg = Sequence['str | os.PathLike | RunData']


def _optional(read, topic: str):
    """``read(topic)``, or None when the run lacks the topic or it is empty."""
    try:
        return read(topic)
    except (MissingTopicError, EmptyBagError):
        return None


def _plans(bag: BagRun, topic: str) -> tuple[Plan, ...]:
    try:
        messages = list(bag.messages(topic, ('nav_msgs/msg/Path',)))
    except (MissingTopicError, EmptyBagError):
        return ()
    return tuple(Plan(t_ns * 1e-9, path_poses(msg), header_stamps(msg.poses))
                 for t_ns, msg in messages)


def load_run(path: str | os.PathLike, require: Sequence[str] = (),
             state_topics: Sequence[str] = ()) -> RunData:
    """Read one rosbag2 run (folder or ``.mcap``/``.db3`` file) into arrays.

    Args:
        path: the run.
        require: topics that must be present and non-empty (e.g. ``('/cmd_vel',)``).
        state_topics: further ``nav_msgs/Odometry`` topics to read (``RunData.other_states``).

    Raises:
        BagError (and its MissingTopicError, EmptyBagError, CorruptBagError): the run cannot be
            read, is empty, or lacks a required topic; the message names file and topic.
    """
    with BagRun(path) as bag:
        for topic in require:
            if topic not in bag.topics:
                have = ', '.join(sorted(bag.topics))
                raise MissingTopicError(f'{bag.path}: no topic {topic} (needed here); the run '
                                        f'has: {have}')
            if not bag.topics[topic].count:
                raise EmptyBagError(f'{bag.path}: topic {topic} has no messages')

        def odometry(topic):
            return Series(*bag.odometry(topic, stamp='header'))

        scans = _optional(lambda topic: bag.scans(topic, stamp='header'), SCAN_TOPIC)
        return RunData(
            name=bag.name, source=str(bag.path),
            odom=_optional(odometry, ODOM_TOPIC),
            ground_truth=_optional(odometry, GROUND_TRUTH_TOPIC),
            commands=_optional(lambda topic: Series(*bag.twist(topic, stamp='bag')), CMD_TOPIC),
            goals=_optional(lambda topic: Series(*bag.poses(topic, stamp='bag')), GOAL_TOPIC),
            plans=_plans(bag, PLAN_TOPIC),
            scans=scans,
            other_states={topic: odometry(topic) for topic in state_topics
                          if topic not in (ODOM_TOPIC, GROUND_TRUTH_TOPIC)})


def load_runs(paths: Sequence[str | os.PathLike], require: Sequence[str] = (),
              state_topics: Sequence[str] = ()) -> list[RunData]:
    """:func:`load_run` for every run at ``paths`` (runs or folders of runs), in sorted order.

    Raises:
        BagError: as :func:`load_run`; also when a path holds no run.
    """
    if not paths:
        raise BagError('no runs given')
    runs = []
    for path in paths:
        runs += [load_run(p, require, state_topics) for p in find_runs(path)]
    return runs


def as_runs(runs: RunsArg, require: Sequence[str] = (), state_topic: str | None = None
            ) -> list[RunData]:
    """``runs`` as a list of :class:`RunData`: paths are read (:func:`load_runs`, topics
    ``require`` required), with the Odometry topic ``state_topic`` too when given; runs given
    as :class:`RunData` are kept as they are.

    Raises:
        BagError: as :func:`load_runs`.
    """
    if isinstance(runs, (str, os.PathLike, RunData)):
        runs = [runs]
    extra = [state_topic] if state_topic else []
    out: list[RunData] = []
    for run in runs:
        out += [run] if isinstance(run, RunData) else load_runs([run], [*require, *extra], extra)
    return out


def split_runs(runs: Sequence[RunData], val_fraction: float = 0.25
               ) -> tuple[list[RunData], list[RunData]]:
    """Training and validation runs: the last ``round(len * val_fraction)`` runs validate.

    At least one run always trains, so a single run gives no validation runs.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1).
        DatasetError: no runs.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f'val_fraction must be in [0, 1), got {val_fraction}')
    if not runs:
        raise DatasetError('no runs given')
    n_val = min(len(runs) - 1, int(round(len(runs) * val_fraction)))
    return list(runs[:len(runs) - n_val]), list(runs[len(runs) - n_val:])


def save_bag(run: RunData, root, name: str | None = None, storage: str = 'mcap'):
    """Write ``run`` as a rosbag2 run ``<root>/<name>`` like the recorder's: ``/ground_truth/odom``
    and ``/odom`` (nav_msgs/Odometry, header stamps = bag times), ``/cmd_vel``
    (geometry_msgs/Twist), ``/goal_pose`` (PoseStamped), ``/plan`` (nav_msgs/Path, timed) and
    ``/scan`` (sensor_msgs/LaserScan).
    ``storage``: ``'mcap'`` (through :class:`~diffopt_ros.bag.BagWriter`) or ``'sqlite3'``.

    Returns:
        The run folder.
    """
    store = get_typestore(Stores.ROS2_KILTED)
    T = store.types
    Time, Header = T['builtin_interfaces/msg/Time'], T['std_msgs/msg/Header']
    Point, Quat = T['geometry_msgs/msg/Point'], T['geometry_msgs/msg/Quaternion']
    Pose = T['geometry_msgs/msg/Pose']
    Vector3, Twist = T['geometry_msgs/msg/Vector3'], T['geometry_msgs/msg/Twist']

    def stamp(t):
        ns = int(round(t * 1e9))
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def pose(x, y, yaw):
        return Pose(position=Point(x=float(x), y=float(y), z=0.0),
                    orientation=Quat(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)))

    def twist(v, w):
        return Twist(linear=Vector3(x=float(v), y=0.0, z=0.0), angular=Vector3(x=0.0, y=0.0, z=float(w)))

    def odometry(t, s, frame):
        return T['nav_msgs/msg/Odometry'](
            header=Header(stamp=stamp(t), frame_id=frame), child_frame_id='base_link',
            pose=T['geometry_msgs/msg/PoseWithCovariance'](pose=pose(*s[:3]), covariance=np.zeros(36)),
            twist=T['geometry_msgs/msg/TwistWithCovariance'](twist=twist(s[3], s[4]),
                                                             covariance=np.zeros(36)))

    def pose_stamped(t, p, frame='map'):
        return T['geometry_msgs/msg/PoseStamped'](header=Header(stamp=stamp(t), frame_id=frame),
                                                  pose=pose(*p[:3]))

    messages = []   # (t, topic, msgtype, message)
    for topic, series in (('/ground_truth/odom', run.ground_truth), ('/odom', run.odom)):
        if series is not None:
            frame = 'map' if topic.startswith('/ground') else 'odom'
            messages += [(t, topic, 'nav_msgs/msg/Odometry', odometry(t, s, frame))
                         for t, s in zip(series.t, series.values)]
    if run.commands is not None:
        messages += [(t, '/cmd_vel', 'geometry_msgs/msg/Twist', twist(*u))
                     for t, u in zip(run.commands.t, run.commands.values)]
    if run.goals is not None:
        messages += [(t, '/goal_pose', 'geometry_msgs/msg/PoseStamped', pose_stamped(t, g))
                     for t, g in zip(run.goals.t, run.goals.values)]
    for plan in run.plans:
        path = T['nav_msgs/msg/Path'](header=Header(stamp=stamp(plan.t), frame_id='map'),
                                      poses=[pose_stamped(t, p) for t, p in zip(plan.stamps, plan.poses)])
        messages.append((plan.t, '/plan', 'nav_msgs/msg/Path', path))
    if run.scans is not None:
        sc = run.scans
        increment = float(sc.angles[1] - sc.angles[0]) if len(sc.angles) > 1 else 0.0
        messages += [(t, '/scan', 'sensor_msgs/msg/LaserScan', T['sensor_msgs/msg/LaserScan'](
            header=Header(stamp=stamp(t), frame_id='base_scan'), angle_min=float(sc.angles[0]),
            angle_max=float(sc.angles[-1]), angle_increment=increment, time_increment=0.0,
            scan_time=0.0, range_min=float(sc.range_min), range_max=float(sc.range_max),
            ranges=np.asarray(ranges, dtype=np.float32), intensities=np.zeros(0, np.float32)))
            for t, ranges in zip(sc.t, sc.ranges)]
    messages.sort(key=lambda m: m[0])
    folder = Path(root) / (name or run.name)
    if storage == 'mcap':
        writer = BagWriter.create(root, name or run.name, unique=False, typestore=store)
        for topic, msgtype in sorted({(m[1], m[2]) for m in messages}):
            writer.add_topic(topic, msgtype)
        for t, topic, msgtype, msg in messages:
            writer.write(topic, store.serialize_cdr(msg, msgtype), int(round(t * 1e9)))
        writer.close()
        return writer.run_dir
    writer = Writer(folder, version=9, storage_plugin=StoragePlugin.SQLITE3)
    writer.open()
    connections = {topic: writer.add_connection(topic, msgtype, typestore=store)
                   for topic, msgtype in sorted({(m[1], m[2]) for m in messages})}
    for t, topic, msgtype, msg in messages:
        writer.write(connections[topic], int(round(t * 1e9)), store.serialize_cdr(msg, msgtype))
    writer.close()
    return folder
