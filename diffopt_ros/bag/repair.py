"""Repair a run after a crash: salvage truncated MCAP files, rebuild ``metadata.yaml``.

After a SIGKILL the recorder leaves the closed files and ``metadata.yaml`` (listing them) plus
the open file, truncated, in its temporary folder ``<run>/<stem>/<stem>.mcap``. Repair keeps
every message of every complete MCAP chunk of a truncated file (the writer flushes a chunk every
``flush_seconds``), rewrites them as a valid ``<run>/<stem>.mcap`` (the original is kept as
``<stem>.mcap.truncated``), and writes ``metadata.yaml`` from the files found.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.rosbag2.metadata import parse_qos
from rosbags.rosbag2.storage_mcap import decompress  # rosbags' chunk codecs (pinned version)
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from diffopt_ros.bag.errors import BagError, CorruptBagError
from diffopt_ros.bag.metadata import METADATA, FileSummary, Topic, write_metadata
from diffopt_ros.bag.reader import find_runs
from diffopt_ros.bag.writer import SegmentWriter

MAGIC = b'\x89MCAP0\r\n'
_OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x02, 0x03, 0x04, 0x05, 0x06


@dataclass
class Salvage:
    """What could be read from one (possibly truncated) MCAP file.

    Attributes:
        path: the file.
        complete: the file ends with a footer (it was closed properly).
        topics: channel id -> topic description (definition from the file's schema).
        messages: ``(channel id, log time ns, CDR bytes)`` in file order.
        valid_bytes: length of the readable prefix of the file.
        size: file size in bytes.
    """

    path: Path
    complete: bool = False
    topics: dict[int, Topic] = field(default_factory=dict)
    messages: list[tuple[int, int, bytes]] = field(default_factory=list)
    valid_bytes: int = 0
    size: int = 0


def _string(body: memoryview, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from('<I', body, pos)
    end = pos + 4 + n
    if end > len(body):
        raise ValueError('string beyond record end')
    return bytes(body[pos + 4:end]).decode(), end


def _records(buf: memoryview):
    """Yield ``(opcode, body, end offset)`` of the complete records of ``buf``; stop at a
    partial one."""
    pos = 0
    while pos + 9 <= len(buf):
        op = buf[pos]
        (length,) = struct.unpack_from('<Q', buf, pos + 1)
        end = pos + 9 + length
        if end > len(buf):
            return
        yield op, buf[pos + 9:end], end
        pos = end


def _chunk_records(body: memoryview) -> memoryview:
    """The records inside a chunk record (uncompressed or zstd/lz4, checked by rosbags)."""
    _, _, size, crc = struct.unpack_from('<QQQI', body, 0)
    compression, pos = _string(body, 28)
    (n,) = struct.unpack_from('<Q', body, pos)
    data = bytes(body[pos + 8:pos + 8 + n])
    if len(data) != n:
        raise ValueError('chunk records beyond record end')
    return memoryview(decompress(data, compression, size, crc))


def _topic(path: Path, channel: dict, schema: tuple[str, str, str]) -> Topic:
    """Topic description of an MCAP channel, with the type hash computed from its schema."""
    msgtype, encoding, msgdef = schema
    if encoding != 'ros2msg':
        raise CorruptBagError(f'{path}: topic {channel["topic"]}: schema encoding {encoding!r} '
                              'is not supported by repair (expected ros2msg)')
    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg(msgdef, msgtype))
    return Topic(channel['topic'], msgtype, msgdef, store.hash_rihs01(msgtype),
                 tuple(parse_qos(channel['qos'])))


def salvage_mcap(path: str | os.PathLike) -> Salvage:
    """Read every complete message of an MCAP file, truncated or not.

    Reads records in order and stops at the first incomplete or undecodable one.

    Raises:
        CorruptBagError: the file does not start like an MCAP file.
    """
    path = Path(path)
    data = path.read_bytes()
    result = Salvage(path, size=len(data))
    if len(data) < len(MAGIC):
        return result
    if data[:len(MAGIC)] != MAGIC:
        raise CorruptBagError(f'{path}: not an MCAP file (bad magic bytes)')
    schemas: dict[int, tuple[str, str, str]] = {}
    channels: dict[int, dict] = {}
    result.valid_bytes = len(MAGIC)

    def take(op: int, body: memoryview) -> None:
        if op == _OP_SCHEMA:
            (sid,) = struct.unpack_from('<H', body, 0)
            name, pos = _string(body, 2)
            encoding, pos = _string(body, pos)
            msgdef, _ = _string(body, pos)
            schemas[sid] = (name, encoding, msgdef)
        elif op == _OP_CHANNEL:
            cid, sid = struct.unpack_from('<HH', body, 0)
            topic, pos = _string(body, 4)
            _, pos = _string(body, pos)
            (n,) = struct.unpack_from('<I', body, pos)
            meta, pos, end = {}, pos + 4, pos + 4 + n
            while pos < end:
                key, pos = _string(body, pos)
                meta[key], pos = _string(body, pos)
            qos = meta.get('offered_qos_profiles', '')
            channels[cid] = {'topic': topic, 'schema': sid, 'qos': qos}
        elif op == _OP_MESSAGE:
            cid, _, log_time, _ = struct.unpack_from('<HIQQ', body, 0)
            result.messages.append((cid, log_time, bytes(body[22:])))

    for op, body, end in _records(memoryview(data)[len(MAGIC):]):
        try:
            if op == _OP_CHUNK:
                chunk = [(inner_op, inner) for inner_op, inner, _ in _records(_chunk_records(body))]
                for inner_op, inner in chunk:
                    take(inner_op, inner)
            else:
                take(op, body)
        except (struct.error, ValueError, UnicodeDecodeError, ReaderError):
            break  # a damaged record: keep what came before it
        result.valid_bytes = len(MAGIC) + end
        if op == _OP_FOOTER:
            result.complete = True
            break
    for cid, channel in channels.items():
        if channel['schema'] in schemas:
            result.topics[cid] = _topic(path, channel, schemas[channel['schema']])
    result.messages = [m for m in result.messages if m[0] in result.topics]
    return result


@dataclass
class FileRepair:
    """What repair did to one file: ``status`` is ``ok``, ``moved`` (closed but left in the
    writer's temporary folder), ``salvaged`` (rewritten from a truncated file) or ``empty``
    (nothing readable; the original is kept)."""

    path: str
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    note: str = ''


@dataclass
class RepairReport:
    """Result of :func:`repair_run`.

    Attributes:
        run_dir: the run folder.
        files: what was done to each file.
        summaries: the readable files of the repaired run.
        metadata: the ``metadata.yaml`` written, or None when no file is readable (then none is
            written: a metadata file listing nothing would hide the damaged originals).
    """

    run_dir: Path
    files: list[FileRepair]
    summaries: list[FileSummary]
    metadata: Path | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Messages per topic in the repaired run."""
        counts: dict[str, int] = {}
        for summary in self.summaries:
            for topic, n in summary.counts.items():
                counts[topic] = counts.get(topic, 0) + n
        return counts


def _segment_key(path: Path) -> tuple:
    match = re.search(r'_(\d+)\.mcap', path.name)
    return (int(match.group(1)) if match else -1, path.name)


def _readable(path: Path) -> bool:
    try:
        with Reader(path):
            return True
    except Exception:  # rosbags raises ReaderError, struct.error, ... for damaged files
        return False


def _file_summary(path: Path) -> tuple[FileSummary, list[Topic]]:
    """Counts, time range and topics of one readable MCAP file."""
    summary = FileSummary(path.name)
    topics = []
    with Reader(path) as reader:
        for conn in reader.connections:
            if conn.msgdef.format != MessageDefinitionFormat.MSG:
                raise CorruptBagError(f'{path}: topic {conn.topic}: no ros2msg definition')
            store = get_typestore(Stores.EMPTY)
            store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
            topics.append(Topic(conn.topic, conn.msgtype, conn.msgdef.data,
                                store.hash_rihs01(conn.msgtype),
                                tuple(conn.ext.offered_qos_profiles)))
            if conn.msgcount:
                summary.counts[conn.topic] = summary.counts.get(conn.topic, 0) + conn.msgcount
        if reader.message_count:
            summary.start_ns, summary.end_ns = reader.start_time, reader.end_time - 1
    return summary, topics


def _rewrite(salvage: Salvage, run_dir: Path, stem: str) -> FileRepair:
    """Write the salvaged messages as ``run_dir/<stem>.mcap``."""
    if not salvage.messages:
        return FileRepair(f'{stem}.mcap.truncated', 'empty',
                          note=f'no complete message in {salvage.size} bytes')
    segment = SegmentWriter(run_dir, stem, salvage.topics.values())
    for cid, t_ns, data in salvage.messages:
        segment.write(salvage.topics[cid].name, data, t_ns)
    summary = segment.close()
    return FileRepair(summary.path, 'salvaged', dict(summary.counts),
                      note=f'{salvage.valid_bytes} of {salvage.size} bytes readable')


def _remove_writer_dir(tmp_dir: Path) -> None:
    """Remove the writer's emptied temporary folder (only the files rosbags puts there)."""
    for name in ('metadata.yaml', 'metadata.yaml.tmp'):
        (tmp_dir / name).unlink(missing_ok=True)
    tmp_dir.rmdir()


def _keep_original(path: Path, run_dir: Path, stem: str) -> Path:
    backup = run_dir / f'{stem}.mcap.truncated'
    if backup.exists():
        raise BagError(f'{backup}: exists already; move it away before repairing {path}')
    os.replace(path, backup)
    return backup


def repair_run(run_dir: str | os.PathLike) -> RepairReport:
    """Make a run readable again after a crash and rewrite its ``metadata.yaml``.

    Every MCAP file is checked: files left in the writer's temporary folders are moved into
    the run (closed ones) or salvaged (truncated ones), truncated files are rewritten from their
    complete chunks, then ``metadata.yaml`` is written from all files. Running it again on a
    repaired run changes nothing.

    Raises:
        BagError: ``run_dir`` is not a folder, holds sqlite3 files (not supported), holds no
            MCAP file at all (nothing is written then), or is a folder of runs (the message
            names them; repair each).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BagError(f'{run_dir}: no such run folder')
    if any(run_dir.glob('*.db3')):
        raise BagError(f'{run_dir}: repair handles MCAP runs (what the recorder writes), '
                       'not sqlite3 (.db3)')
    pending_files = [d / f'{d.name}.mcap' for d in sorted(run_dir.iterdir()) if d.is_dir()
                     and (d / f'{d.name}.mcap').is_file()]
    if not pending_files and not any(run_dir.glob('*.mcap')):
        try:
            runs = [r for r in find_runs(run_dir) if r != run_dir]
        except BagError:
            runs = []
        if runs:
            raise BagError(f'{run_dir}: a folder of {len(runs)} runs, not one run; repair them one '
                           f'by one ({", ".join(str(r) for r in runs)}) or all with '
                           f'"diffopt-ros bag repair {run_dir}"')
        raise BagError(f'{run_dir}: holds no bag files (no *.mcap, no <name>/<name>.mcap left by '
                       f'the recorder); nothing to repair, {METADATA} not written')
    actions: list[FileRepair] = []
    for pending in pending_files:
        tmp_dir = pending.parent
        target = run_dir / pending.name
        if target.exists():
            raise BagError(f'{pending}: cannot move it to {target}, which exists')
        if _readable(pending):
            os.replace(pending, target)
            _remove_writer_dir(tmp_dir)
            actions.append(FileRepair(target.name, 'moved'))
        else:
            backup = _keep_original(pending, run_dir, tmp_dir.name)
            _remove_writer_dir(tmp_dir)  # the rewrite uses a folder of the same name
            actions.append(_rewrite(salvage_mcap(backup), run_dir, tmp_dir.name))
    moved = {a.path for a in actions}
    for path in sorted(run_dir.glob('*.mcap'), key=_segment_key):
        if path.name in moved:
            continue
        if _readable(path):
            actions.append(FileRepair(path.name, 'ok'))
        else:
            backup = _keep_original(path, run_dir, path.stem)
            actions.append(_rewrite(salvage_mcap(backup), run_dir, path.stem))

    summaries, topics = [], {}
    for path in sorted(run_dir.glob('*.mcap'), key=_segment_key):
        summary, file_topics = _file_summary(path)
        summaries.append(summary)
        for topic in file_topics:
            topics.setdefault(topic.name, topic)
    for action in actions:
        match = next((s for s in summaries if s.path == action.path), None)
        if match is not None:
            action.counts = dict(match.counts)
    metadata = write_metadata(run_dir, summaries, list(topics.values())) if summaries else None
    return RepairReport(run_dir, sorted(actions, key=lambda a: _segment_key(Path(a.path))),
                        summaries, metadata)
