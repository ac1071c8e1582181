"""Read recorded runs (rosbag2 folders, MCAP or sqlite3) into typed messages and arrays.

Times are returned in seconds (float64). By default they are the **bag timestamps**: the
recorder's node clock at receipt (sim time under ``use_sim_time``), one time base for every
topic including unstamped ones like ``/cmd_vel``; ``stamp='header'`` uses header stamps.

Example:
    >>> with Run('runs/run_2026_11_28-22_05_13') as run:
    ...     t_x, x = run.odometry('/ground_truth/odom')      # (N,), (N, 5)
    ...     t_u, u = run.twist('/cmd_vel')                    # (M,), (M, 2)
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Reader
from rosbags.typesys import get_typestore

from diffopt_ros.bag.convert import (
    header_stamps,
    odometry_states,
    path_poses,
    planar_poses,
    scan_angles,
    twist_commands,
)
from diffopt_ros.bag.errors import BagError, CorruptBagError, EmptyBagError, MissingTopicError
from diffopt_ros.bag.metadata import METADATA
from diffopt_ros.bag.writer import DEFAULT_STORE

ODOMETRY = ('nav_msgs/msg/Odometry',)
TWIST = ('geometry_msgs/msg/Twist', 'geometry_msgs/msg/TwistStamped')
POSE = ('geometry_msgs/msg/PoseStamped', 'geometry_msgs/msg/PoseWithCovarianceStamped',
        'nav_msgs/msg/Odometry')
PATH = ('nav_msgs/msg/Path',)
SCAN = ('sensor_msgs/msg/LaserScan',)
STORAGE_SUFFIXES = ('.mcap', '.db3')


@dataclass(frozen=True)
class TopicSummary:
    """A topic of a run: name, ROS type, number of messages."""

    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class Scans:
    """Laser scans of one topic.

    Attributes:
        t: ``(N,)`` times (s).
        ranges: ``(N, B)`` ranges (m, float32 as recorded; inf/NaN where the beam saw nothing).
        angles: ``(B,)`` beam angles (rad) in the scan frame.
        range_min, range_max: valid range interval (m) of the first scan.
    """

    t: np.ndarray
    ranges: np.ndarray
    angles: np.ndarray
    range_min: float
    range_max: float


def storage_files(path: str | os.PathLike) -> list[Path]:
    """The storage files of a run, in recording order.

    ``path`` is a run folder (its ``metadata.yaml`` lists the files) or one ``.mcap``/``.db3``
    file. A compressed run is returned as ``[folder]`` (rosbags decompresses it).

    Raises:
        BagError: no such path, not a rosbag2 run, or a folder of runs (the message lists them;
            :func:`find_runs` finds them).
        CorruptBagError: ``metadata.yaml`` missing (crashed recorder: run ``diffopt-ros bag
            repair``), unreadable, or naming missing files.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix not in STORAGE_SUFFIXES:
            raise BagError(f'{path}: not a rosbag2 storage file ({", ".join(STORAGE_SUFFIXES)})')
        return [path]
    if not path.is_dir():
        raise BagError(f'{path}: no such run (folder or .mcap/.db3 file)')
    meta_path = path / METADATA
    if not meta_path.is_file():
        if holds_bag_files(path):
            raise CorruptBagError(f'{meta_path}: missing (was the recorder killed?); run '
                                  f'"diffopt-ros bag repair {path}" first')
        nested = _runs_below(path)
        if nested:
            raise BagError(_folder_of_runs(path, nested))
        raise BagError(f'{path}: not a rosbag2 run (no {METADATA}, no .mcap/.db3 files)')
    try:
        info = yaml.safe_load(meta_path.read_text())['rosbag2_bagfile_information']
        names = [Path(p).name for p in info['relative_file_paths']]
        compressed = bool(info.get('compression_mode')) and info['compression_mode'] != 'none'
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise CorruptBagError(f'{meta_path}: not a valid rosbag2 metadata file: {exc!r}; run '
                              f'"diffopt-ros bag repair {path}"') from exc
    if not names and not holds_bag_files(path):
        nested = _runs_below(path)
        if nested:   # a stray metadata.yaml listing nothing above real runs
            raise BagError(_folder_of_runs(path, nested) + f' ({meta_path} lists no files)')
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise CorruptBagError(f'{meta_path}: lists missing files {missing}')
    return [path] if compressed else [path / n for n in names]


def _folder_of_runs(path: Path, runs: list[Path]) -> str:
    names = ', '.join(str(r.relative_to(path)) for r in runs[:6]) + (', ...' if len(runs) > 6 else '')
    return (f'{path}: a folder of {len(runs)} run{"s" if len(runs) > 1 else ""} ({names}), not '
            f'one run; give one of them, or the folder where runs or folders of runs are taken')


def _writer_folder(folder: Path) -> bool:
    """Whether ``folder`` is a writer's temporary folder ``<stem>/<stem>.mcap`` (a file that was
    open when the recorder stopped: rosbags writes its metadata.yaml only on close)."""
    return (folder / f'{folder.name}.mcap').is_file() and not (folder / METADATA).is_file()


def holds_bag_files(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` itself holds recorded data: ``.mcap``/``.db3`` files, or a file left
    open in a writer's temporary folder (see :mod:`diffopt_ros.bag.writer`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    return (any(folder.glob('*.mcap')) or any(folder.glob('*.db3'))
            or any(_writer_folder(d) for d in folder.iterdir() if d.is_dir()))


def _is_run(folder: Path) -> bool:
    return (folder / METADATA).is_file() or holds_bag_files(folder)


def _runs_below(root: Path) -> list[Path]:
    """Run folders under ``root`` (not ``root`` itself) at any depth, sorted; the inside of a
    run and hidden folders are not searched."""
    runs = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if here != root and _is_run(here):
            runs.append(here)
            dirnames.clear()
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    return sorted(runs)


def _check_file(path: Path) -> None:
    """Open one storage file alone, to name it in the error when it is damaged."""
    try:
        with Reader(path):
            pass
    except Exception as exc:  # rosbags raises ReaderError, struct.error, sqlite3 errors...
        raise CorruptBagError(f'{path}: cannot be read ({exc}); a truncated MCAP file can be '
                              f'salvaged with "diffopt-ros bag repair {path.parent}"') from exc


class Run:
    """One recorded run, opened for reading (use as a context manager or call :meth:`close`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        """Open the run at ``path`` (run folder or single storage file).

        Raises:
            BagError, CorruptBagError: see :func:`storage_files`; a damaged file is named.
            EmptyBagError: the run holds no message.
        """
        self.path = Path(path)
        self.files = storage_files(self.path)
        if not self.files:
            raise EmptyBagError(f'{self.path}: the run holds no messages (no storage files)')
        self._reader = AnyReader(self.files, default_typestore=get_typestore(DEFAULT_STORE))
        try:
            self._reader.open()
        except Exception as exc:
            for file in self.files:
                if file.is_file():
                    _check_file(file)
            raise CorruptBagError(f'{self.path}: cannot be read: {exc}') from exc
        if not self._reader.message_count:
            self._reader.close()
            raise EmptyBagError(f'{self.path}: the run holds no messages')

    @property
    def name(self) -> str:
        """Run name (its folder name)."""
        return self.path.name if self.path.is_dir() else self.path.stem

    @property
    def topics(self) -> dict[str, TopicSummary]:
        """Topics by name."""
        return {name: TopicSummary(name, info.msgtype or '?', info.msgcount)
                for name, info in self._reader.topics.items()}

    @property
    def start_ns(self) -> int:
        """Bag time of the first message (ns)."""
        return self._reader.start_time

    @property
    def end_ns(self) -> int:
        """Bag time of the last message (ns)."""
        return self._reader.end_time - 1

    @property
    def duration(self) -> float:
        """Seconds from the first to the last message."""
        return (self.end_ns - self.start_ns) * 1e-9

    @property
    def message_count(self) -> int:
        """Messages in the run."""
        return self._reader.message_count

    def close(self) -> None:
        """Close the files."""
        if self._reader.stack is not None:
            self._reader.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connections(self, topic: str, msgtypes: Iterable[str] | None):
        info = self._reader.topics.get(topic)
        if info is None:
            have = ', '.join(f'{n} ({t.msgtype})' for n, t in sorted(self._reader.topics.items()))
            raise MissingTopicError(f'{self.path}: no topic {topic}; the run has: {have}')
        if msgtypes is not None and info.msgtype not in tuple(msgtypes):
            raise MissingTopicError(f'{self.path}: topic {topic} is {info.msgtype}, expected '
                                    f'{" or ".join(msgtypes)}')
        if not info.msgcount:
            raise EmptyBagError(f'{self.path}: topic {topic} has no messages')
        return info.connections

    def messages(self, topic: str, msgtypes: Iterable[str] | None = None
                 ) -> Iterator[tuple[int, object]]:
        """Yield ``(bag time ns, message)`` of ``topic`` in time order.

        Args:
            topic: topic name.
            msgtypes: accepted ROS types (``pkg/msg/Type``); None accepts any.

        Raises:
            MissingTopicError: no such topic, or another type.
            EmptyBagError: the topic has no messages.
            CorruptBagError: a message cannot be decoded (file, topic and time named).
        """
        connections = self._connections(topic, msgtypes)
        for conn, t_ns, raw in self._reader.messages(connections=connections):
            try:
                msg = self._reader.deserialize(raw, conn.msgtype)
            except Exception as exc:
                where = getattr(conn.owner, 'path', self.path)
                raise CorruptBagError(f'{where}: topic {topic} ({conn.msgtype}): message at bag '
                                      f'time {t_ns} ns cannot be decoded: {exc}') from exc
            yield t_ns, msg

    def _read(self, topic: str, msgtypes: Iterable[str], stamp: str) -> tuple[np.ndarray, list]:
        if stamp not in ('bag', 'header'):
            raise ValueError(f"stamp must be 'bag' or 'header', got {stamp!r}")
        pairs = list(self.messages(topic, msgtypes))
        msgs = [m for _, m in pairs]
        if stamp == 'header':
            if not hasattr(msgs[0], 'header'):
                raise MissingTopicError(f'{self.path}: topic {topic} has no header stamps; '
                                        "use stamp='bag'")
            return header_stamps(msgs), msgs
        return np.array([t for t, _ in pairs], dtype=np.float64) * 1e-9, msgs

    def _finite(self, topic: str, t: np.ndarray, values: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        keep = np.isfinite(values).all(axis=1) & np.isfinite(t)
        if not keep.all():
            warnings.warn(f'{self.path}: topic {topic}: dropped {int((~keep).sum())} of '
                          f'{len(keep)} messages with non-finite values', stacklevel=3)
        return t[keep], values[keep]

    def odometry(self, topic: str, stamp: str = 'bag') -> tuple[np.ndarray, np.ndarray]:
        """States of a ``nav_msgs/Odometry`` topic.

        Returns:
            ``t`` ``(N,)`` (s) and ``state`` ``(N, 5)`` ``[x, y, yaw, v, omega]`` (m, rad,
            m/s, rad/s; yaw in (-pi, pi]). Messages with NaN/Inf are dropped with a warning.
        """
        t, msgs = self._read(topic, ODOMETRY, stamp)
        return self._finite(topic, t, odometry_states(msgs))

    def twist(self, topic: str, stamp: str = 'bag') -> tuple[np.ndarray, np.ndarray]:
        """Commands of a ``Twist``/``TwistStamped`` topic: ``t`` ``(N,)`` (s), ``u`` ``(N, 2)``
        ``[v_cmd, omega_cmd]`` (m/s, rad/s)."""
        t, msgs = self._read(topic, TWIST, stamp)
        return self._finite(topic, t, twist_commands(msgs))

    def poses(self, topic: str, stamp: str = 'bag') -> tuple[np.ndarray, np.ndarray]:
        """Planar poses of a ``PoseStamped``, ``PoseWithCovarianceStamped`` or ``Odometry``
        topic: ``t`` ``(N,)`` (s), ``pose`` ``(N, 3)`` ``[x, y, yaw]`` (m, rad)."""
        t, msgs = self._read(topic, POSE, stamp)
        return self._finite(topic, t, planar_poses(msgs))

    def paths(self, topic: str, stamp: str = 'bag') -> tuple[np.ndarray, list[np.ndarray]]:
        """``nav_msgs/Path`` messages: ``t`` ``(N,)`` (s) and one ``(T_i, 3)`` ``[x, y, yaw]``
        array per message (``T_i`` may vary, 0 for an empty path)."""
        t, msgs = self._read(topic, PATH, stamp)
        return t, [path_poses(m) for m in msgs]

    def scans(self, topic: str, stamp: str = 'bag') -> Scans:
        """``sensor_msgs/LaserScan`` messages as arrays (see :class:`Scans`).

        Raises:
            CorruptBagError: the number of beams changes within the topic.
        """
        t, msgs = self._read(topic, SCAN, stamp)
        beams = {len(m.ranges) for m in msgs}
        if len(beams) != 1:
            raise CorruptBagError(f'{self.path}: topic {topic}: scans have different beam '
                                  f'counts {sorted(beams)}')
        ranges = np.stack([np.asarray(m.ranges) for m in msgs])
        first = msgs[0]
        return Scans(t, ranges, scan_angles(first), float(first.range_min),
                     float(first.range_max))


def find_runs(root: str | os.PathLike) -> list[Path]:
    """The runs at ``root``: ``[root]`` when it is a run (a storage file, or a folder with
    ``metadata.yaml`` or storage files), else every run folder below it, at any depth, sorted
    (a folder of runs such as the demo's ``runs/demo_<date>/`` with ``before/``, ``after/``...).

    Raises:
        BagError: no such path, or no run at or below it.
    """
    root = Path(root)
    if root.is_file():
        if root.suffix not in STORAGE_SUFFIXES:
            raise BagError(f'{root}: not a rosbag2 storage file ({", ".join(STORAGE_SUFFIXES)})')
        return [root]
    if not root.is_dir():
        raise BagError(f'{root}: no such run or folder of runs')
    if holds_bag_files(root):
        return [root]
    nested = _runs_below(root)
    if (root / METADATA).is_file() and not nested:
        return [root]
    if not nested:
        raise BagError(f'{root}: no rosbag2 runs (folders with {METADATA} or .mcap/.db3 files) '
                       'in it or below it')
    return nested


def open_runs(paths: Iterable[str | os.PathLike]) -> list[Run]:
    """Open every run found at ``paths`` (runs or folders of runs, see :func:`find_runs`)."""
    runs: list[Run] = []
    try:
        for path in paths:
            runs += [Run(p) for p in find_runs(path)]
    except BaseException:
        for run in runs:
            run.close()
        raise
    return runs
