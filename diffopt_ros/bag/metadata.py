"""rosbag2 ``metadata.yaml`` (version 9) for runs made of several storage files.

The recorder rewrites it after every closed file and at the end; ``repair`` rebuilds it from the
files. Both describe the run by :class:`FileSummary` rows, one per storage file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rosbags.interfaces import Qos
from rosbags.rosbag2.metadata import dump_qos_v9

METADATA = 'metadata.yaml'
VERSION = 9


@dataclass(frozen=True)
class Topic:
    """One recorded topic.

    Attributes:
        name: topic name (``/odom``).
        msgtype: ROS type (``nav_msgs/msg/Odometry``).
        msgdef: message definition (``ros2msg`` text with its dependencies).
        rihs01: type description hash (``RIHS01_...``).
        qos: QoS profiles offered by the publishers (what ``ros2 bag play`` offers again).
    """

    name: str
    msgtype: str
    msgdef: str
    rihs01: str
    qos: tuple[Qos, ...] = ()


@dataclass
class FileSummary:
    """What one storage file holds.

    Attributes:
        path: file name relative to the run folder (e.g. ``run_0.mcap``).
        start_ns, end_ns: first and last bag timestamp (ns); meaningless when ``count`` is 0.
        counts: messages per topic.
    """

    path: str
    start_ns: int = 2**63 - 1
    end_ns: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Messages in the file."""
        return sum(self.counts.values())

    def add(self, topic: str, t_ns: int) -> None:
        """Account for one message of ``topic`` at bag time ``t_ns``."""
        self.counts[topic] = self.counts.get(topic, 0) + 1
        self.start_ns = min(self.start_ns, t_ns)
        self.end_ns = max(self.end_ns, t_ns)


def metadata_dict(files: list[FileSummary], topics: list[Topic]) -> dict:
    """The ``metadata.yaml`` content (``rosbag2_bagfile_information``) of a run.

    Topics without any message are left out (readers need a message definition from a file).
    """
    counts: dict[str, int] = {}
    for summary in files:
        for topic, n in summary.counts.items():
            counts[topic] = counts.get(topic, 0) + n
    filled = [f for f in files if f.count]
    start = min((f.start_ns for f in filled), default=0)
    end = max((f.end_ns for f in filled), default=0)
    return {'rosbag2_bagfile_information': {
        'version': VERSION,
        'storage_identifier': 'mcap',
        'relative_file_paths': [f.path for f in files],
        'duration': {'nanoseconds': end - start},
        'starting_time': {'nanoseconds_since_epoch': start},
        'message_count': sum(counts.values()),
        'topics_with_message_count': [
            {'topic_metadata': {'name': t.name, 'type': t.msgtype, 'serialization_format': 'cdr',
                                'offered_qos_profiles': dump_qos_v9(list(t.qos)),
                                'type_description_hash': t.rihs01},
             'message_count': counts[t.name]}
            for t in topics if counts.get(t.name)],
        'compression_format': '',
        'compression_mode': '',
        'files': [{'path': f.path,
                   'starting_time': {'nanoseconds_since_epoch': f.start_ns if f.count else 0},
                   'duration': {'nanoseconds': f.end_ns - f.start_ns if f.count else 0},
                   'message_count': f.count} for f in files],
        'custom_data': None,
        'ros_distro': 'rosbags',
    }}


def write_metadata(run_dir: Path, files: list[FileSummary], topics: list[Topic]) -> Path:
    """Write ``run_dir/metadata.yaml`` atomically (temporary file, then rename)."""
    path = Path(run_dir) / METADATA
    tmp = path.with_suffix('.yaml.tmp')
    tmp.write_text(yaml.safe_dump(metadata_dict(files, topics), sort_keys=False),
                   encoding='utf8')
    os.replace(tmp, path)
    return path
