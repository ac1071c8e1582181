"""Write a run: raw CDR messages into a rosbag2 folder of MCAP files that survive crashes.

A run is one folder ``<root>/<name>/`` holding ``<name>_0.mcap``, ``<name>_1.mcap``, ... and a
``metadata.yaml`` listing them. A new file starts every ``split_seconds`` of wall time (or
``split_bytes``); the open file's pending MCAP chunk is handed to the operating system every
``flush_seconds``; ``metadata.yaml`` is rewritten after every closed file. So after a SIGKILL
the closed files are readable at once and ``diffopt-ros bag repair`` salvages the open one up
to the last flush: at most ``flush_seconds`` are lost.

Files are written by ``rosbags.rosbag2.Writer`` (one per file, then moved into the run folder),
so message definitions and type hashes are stored as rosbag2, ``mcap`` + ``mcap_ros2`` and
``evo`` expect them.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from rosbags.interfaces import Qos
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from diffopt_ros.bag.errors import BagError, MissingTopicError, RunExistsError
from diffopt_ros.bag.metadata import FileSummary, Topic, write_metadata
from diffopt_ros.bag.types import register_msg_files

DEFAULT_STORE = Stores.ROS2_KILTED


def default_run_name(now: float | None = None) -> str:
    """A timestamped run name, ``run_YYYY_MM_DD-HH_MM_SS`` (local time)."""
    return time.strftime('run_%Y_%m_%d-%H_%M_%S', time.localtime(now))


def topic_from_typestore(name: str, msgtype: str, typestore: Typestore,
                         qos: Iterable[Qos] = ()) -> Topic:
    """Describe topic ``name`` of ROS type ``msgtype`` with the definition known to ``typestore``
    (or registered into it from the installed ``.msg`` files, see :mod:`diffopt_ros.bag.types`).

    Raises:
        BagError: ``msgtype`` is unknown and not installed.
    """
    if msgtype not in typestore.fielddefs:
        try:
            register_msg_files(typestore, msgtype)
        except BagError as exc:
            raise BagError(f'topic {name}: message type {msgtype} is unknown to the rosbags '
                           f'typestore and not installed: {exc}') from exc
    msgdef, _ = typestore.generate_msgdef(msgtype, ros_version=2)
    return Topic(name, msgtype, msgdef, typestore.hash_rihs01(msgtype), tuple(qos))


class SegmentWriter:
    """One MCAP file ``<run_dir>/<stem>.mcap`` of a run.

    rosbags' ``Writer`` writes ``<run_dir>/<stem>/<stem>.mcap`` (and its own metadata.yaml);
    :meth:`close` moves the file into the run folder and removes that temporary folder. While
    open, :meth:`flush` makes everything written so far readable by ``repair`` after a crash.
    """

    def __init__(self, run_dir: Path, stem: str, topics: Iterable[Topic]) -> None:
        self.final_path = Path(run_dir) / f'{stem}.mcap'
        if self.final_path.exists():
            raise RunExistsError(f'{self.final_path}: exists already, not overwriting')
        self._writer = Writer(Path(run_dir) / stem, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {}
        self.summary = FileSummary(self.final_path.name)
        self.bytes = 0
        for topic in topics:
            self.add_topic(topic)

    def add_topic(self, topic: Topic) -> None:
        """Add a channel (and its schema) for ``topic``."""
        self._connections[topic.name] = self._writer.add_connection(
            topic.name, topic.msgtype, msgdef=topic.msgdef, rihs01=topic.rihs01,
            offered_qos_profiles=list(topic.qos))

    def write(self, topic: str, data: bytes | memoryview, t_ns: int) -> None:
        """Append one serialized message of ``topic`` at bag time ``t_ns`` (ns)."""
        self._writer.write(self._connections[topic], t_ns, data)
        self.summary.add(topic, t_ns)
        self.bytes += len(data)

    def flush(self) -> None:
        """Close the pending MCAP chunk and hand the bytes to the operating system.

        Uses rosbags' ``McapWriter`` chunk (``chunk``, ``close_chunk``, ``bio``; rosbags is
        pinned): rosbags alone keeps up to 1 MiB in memory until ``close``.
        """
        storage = self._writer.storage
        if storage.chunk.msgs:
            storage.close_chunk()
        storage.bio.flush()

    def close(self) -> FileSummary:
        """Finish the file (index, summary, footer), move it into the run folder."""
        tmp_dir = self._writer.path
        self._writer.close()
        os.replace(tmp_dir / self.final_path.name, self.final_path)
        (tmp_dir / 'metadata.yaml').unlink(missing_ok=True)
        tmp_dir.rmdir()
        return self.summary

    def discard(self) -> None:
        """Give the file up (it could not be finished, e.g. the disk is full): close what can
        be closed and remove its temporary folder, freeing its space."""
        tmp_dir = self._writer.path
        try:
            self._writer.close()
        except OSError:
            pass
        storage = getattr(self._writer, 'storage', None)   # rosbags' McapWriter (pinned)
        bio = getattr(storage, 'bio', None)
        if bio is not None and not bio.closed:
            try:   # a failed close leaves the file open: its space is freed only once closed
                bio.close()
            except OSError:
                pass
        shutil.rmtree(tmp_dir, ignore_errors=True)


class BagWriter:
    """Record serialized messages into a new run folder (rosbag2, MCAP, split files).

    Thread-safe: ``write`` may be called from several callback threads while a timer calls
    ``tick``.

    Example:
        >>> writer = BagWriter.create('runs')                      # runs/run_2026_...
        >>> writer.add_topic('/odom', 'nav_msgs/msg/Odometry')
        >>> writer.write('/odom', cdr_bytes, t_ns)                 # bag time in ns
        >>> writer.close()                                         # also on SIGINT/SIGTERM
    """

    def __init__(self, run_dir: str | os.PathLike, *, split_seconds: float = 10.0,
                 split_bytes: int = 256 * 2**20, flush_seconds: float = 1.0,
                 typestore: Typestore | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Create the run folder ``run_dir`` (it must not exist yet).

        Args:
            run_dir: the run folder to create; its name is the file stem.
            split_seconds: wall-clock seconds per file (bounds the loss of a SIGKILL without
                repair).
            split_bytes: start a new file after this many message bytes.
            flush_seconds: wall-clock seconds between flushes of the open file (bounds the
                loss of a SIGKILL after repair).
            typestore: rosbags typestore giving message definitions (default: ROS 2 Kilted).
            clock: wall clock in seconds, for splitting and flushing (monotonic).

        Raises:
            RunExistsError: ``run_dir`` exists (runs are never overwritten).
            ValueError: a non-positive period or size.
        """
        if split_seconds <= 0 or flush_seconds <= 0 or split_bytes <= 0:
            raise ValueError('split_seconds, split_bytes and flush_seconds must be positive, got '
                             f'{split_seconds}, {split_bytes}, {flush_seconds}')
        self.run_dir = Path(run_dir)
        root = self.run_dir.parent
        if root.exists() and not root.is_dir():
            raise BagError(f'{root}: is a file, not a folder of runs')
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BagError(f'{root}: cannot create the folder of runs: '
                           f'{exc.strerror or exc}') from None
        try:
            self.run_dir.mkdir(exist_ok=False)
        except FileExistsError:
            what = 'run' if self.run_dir.is_dir() else 'file (not a run)'
            raise RunExistsError(f'{self.run_dir}: a {what} of that name exists already; runs '
                                 'are never overwritten (choose another name)') from None
        except OSError as exc:
            raise BagError(f'{self.run_dir}: cannot create the run folder: '
                           f'{exc.strerror or exc}') from None
        self.split_seconds = split_seconds
        self.split_bytes = split_bytes
        self.flush_seconds = flush_seconds
        self.typestore = typestore or get_typestore(DEFAULT_STORE)
        self._clock = clock
        self._lock = threading.Lock()
        self._topics: dict[str, Topic] = {}
        self._files: list[FileSummary] = []
        self._segment: SegmentWriter | None = None
        self._opened_at = self._flushed_at = 0.0
        self._closed = False
        self._stopped: str | None = None   # why recording stopped (a write failed), or None

    @classmethod
    def create(cls, root: str | os.PathLike, name: str | None = None, unique: bool = True,
               **kwargs) -> BagWriter:
        """A writer for a new run ``<root>/<name>`` (default name: timestamped).

        Args:
            root: folder of runs (created if missing).
            name: run name; ``None`` or ``''`` for :func:`default_run_name`.
            unique: if the run exists, use ``<name>_1``, ``<name>_2``, ... instead of failing.
            **kwargs: passed to :class:`BagWriter`.

        Raises:
            RunExistsError: the run exists and ``unique`` is false.
        """
        name = name or default_run_name()
        if '/' in name or name in ('.', '..'):
            raise ValueError(f'run name {name!r} must be a plain folder name')
        root = Path(root)
        for k in range(10_000):
            candidate = root / (name if k == 0 else f'{name}_{k}')
            try:
                return cls(candidate, **kwargs)
            except RunExistsError:
                if not unique:
                    raise
        raise RunExistsError(f'{root}: no free run name like {name!r}')

    @property
    def topics(self) -> dict[str, Topic]:
        """Registered topics by name."""
        return dict(self._topics)

    @property
    def counts(self) -> dict[str, int]:
        """Messages written per topic so far."""
        with self._lock:
            files = self._files + ([self._segment.summary] if self._segment else [])
            counts = {name: 0 for name in self._topics}
            for summary in files:
                for topic, n in summary.counts.items():
                    counts[topic] += n
            return counts

    @property
    def stopped(self) -> str | None:
        """Why the writer stopped recording (a file could not be written: disk full, ...), or
        None while it records. Once stopped, the run holds the files finished before and
        their ``metadata.yaml``; the file being written was given up."""
        return self._stopped

    @property
    def files(self) -> list[str]:
        """Names of the closed files so far."""
        return [f.path for f in self._files]

    def add_topic(self, name: str, msgtype: str, *, msgdef: str | None = None,
                  rihs01: str | None = None, qos: Iterable[Qos] = ()) -> Topic:
        """Register topic ``name`` of ROS type ``msgtype`` (``pkg/msg/Type``).

        The definition comes from ``msgdef``/``rihs01`` when given, else from the typestore.

        Raises:
            BagError: unknown type, or the topic is registered with another type.
        """
        if msgdef is not None and rihs01:
            topic = Topic(name, msgtype, msgdef, rihs01, tuple(qos))
        else:
            topic = topic_from_typestore(name, msgtype, self.typestore, qos)
        with self._lock:
            known = self._topics.get(name)
            if known is not None:
                if known.msgtype != msgtype:
                    raise BagError(f'topic {name}: registered as {known.msgtype}, not {msgtype}')
                return known
            self._topics[name] = topic
            if self._segment is not None:
                self._segment.add_topic(topic)
        return topic

    def write(self, topic: str, data: bytes | memoryview, t_ns: int) -> None:
        """Record one serialized (CDR) message of ``topic`` with bag timestamp ``t_ns`` (ns).

        Raises:
            MissingTopicError: ``topic`` was not registered with :meth:`add_topic`.
            BagError: the writer is closed, or stopped: this or an earlier write failed
                (:attr:`stopped` says why).
        """
        with self._lock:
            if self._closed:
                raise BagError(f'{self.run_dir}: writer is closed')
            self._check_running_locked()
            if topic not in self._topics:
                raise MissingTopicError(f'{self.run_dir}: topic {topic} was not added')
            with self._stop_on_error():
                if self._segment is None:
                    self._segment = SegmentWriter(
                        self.run_dir, f'{self.run_dir.name}_{len(self._files)}',
                        self._topics.values())
                    self._opened_at = self._flushed_at = self._clock()
                self._segment.write(topic, data, int(t_ns))
                self._tick_locked()

    def tick(self) -> None:
        """Split or flush when due; call it periodically (writes alone do it only while busy).

        Raises:
            BagError: the writer stopped (a file could not be written, see :attr:`stopped`).
        """
        with self._lock:
            if not self._closed:
                self._check_running_locked()
                with self._stop_on_error():
                    self._tick_locked()

    def flush(self) -> None:
        """Make everything written so far recoverable after a crash (see module doc).

        Raises:
            BagError: the writer stopped (a file could not be written, see :attr:`stopped`).
        """
        with self._lock:
            self._check_running_locked()
            if self._segment is not None:
                with self._stop_on_error():
                    self._segment.flush()
                    self._flushed_at = self._clock()

    def _check_running_locked(self) -> None:
        if self._stopped is not None:
            raise BagError(f'{self.run_dir}: recording stopped: {self._stopped}')

    @contextlib.contextmanager
    def _stop_on_error(self):
        """An ``OSError`` (disk full, folder removed, ...) stops the recording cleanly: the
        open file is given up, ``metadata.yaml`` lists the files finished before; raised as a
        :class:`BagError`. Call under the lock."""
        try:
            yield
        except OSError as exc:
            self._stopped = (f'{exc.strerror or exc} ({exc.filename})' if exc.filename
                             else f'{exc.strerror or exc}')
            segment, self._segment = self._segment, None
            if segment is not None:
                segment.discard()
            try:
                write_metadata(self.run_dir, self._files, list(self._topics.values()))
            except OSError:   # the metadata.yaml of the last finished file stays
                self.run_dir.joinpath('metadata.yaml.tmp').unlink(missing_ok=True)
            raise BagError(f'{self.run_dir}: recording stopped: {self._stopped}; '
                           f'{len(self._files)} finished files kept') from exc

    def close(self) -> list[FileSummary]:
        """Finish the open file and write ``metadata.yaml``; safe to call twice.

        Returns:
            One summary per file of the run.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._stopped is None:
                    try:
                        with self._stop_on_error():
                            self._close_segment_locked()
                    except BagError:
                        pass    # stopped: the finished files and their metadata are kept
            return list(self._files)

    def _tick_locked(self) -> None:
        if self._segment is None:
            return
        now = self._clock()
        if now - self._opened_at >= self.split_seconds or self._segment.bytes >= self.split_bytes:
            self._close_segment_locked()
        elif now - self._flushed_at >= self.flush_seconds:
            self._segment.flush()
            self._flushed_at = now

    def _close_segment_locked(self) -> None:
        segment = self._segment
        if segment is not None:
            self._files.append(segment.close())    # an OSError leaves the segment to discard
            self._segment = None
        write_metadata(self.run_dir, self._files, list(self._topics.values()))
