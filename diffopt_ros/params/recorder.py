"""Parameters of ``recorder_node`` (records topics into a crash-safe rosbag2 run)."""
from __future__ import annotations

from diffopt_ros.params.schema import NodeSchema, Param

NODE_NAME = 'recorder_node'
#: Relative names: they resolve in the recorder's namespace and follow its remaps, as the
#: other nodes' topics do (``/diagnostics`` is absolute for every node).
DEFAULT_TOPICS = ['odom', 'ground_truth/odom', 'scan', 'cmd_vel', 'goal_pose', 'plan', 'plan_global',
                  'mpc/predicted_path', 'slam/pose', 'slam/odom', 'slam/path', '/diagnostics']


def _check_topics(topics: list[str]) -> str | None:
    bad = [t for t in topics if not t or ' ' in t]
    if bad:
        return f'topics: invalid names {bad}'
    if len(set(topics)) != len(topics):
        return 'topics: listed twice: ' + ', '.join(sorted({t for t in topics if topics.count(t) > 1}))
    return None


def _check_name(name: str) -> str | None:
    if '/' in name or name in ('.', '..'):
        return f'run_name: {name!r} must be a plain folder name'
    return None


SCHEMA = NodeSchema(NODE_NAME, (
    Param('topics', DEFAULT_TOPICS, 'topics to record (relative names resolve in the node '
          'namespace); types are discovered from the graph', read_only=True, check=_check_topics),
    Param('output_dir', 'runs', 'folder of runs; the bag goes to <output_dir>/<run_name>/',
          read_only=True),
    Param('run_name', '', 'run folder name; empty = run_YYYY_MM_DD-HH_MM_SS (local time)',
          read_only=True, check=_check_name),
    Param('unique_name', True, 'if the run exists, record to <run_name>_1, _2, ... instead; '
          'false = refuse to start (runs are never overwritten)', read_only=True),
    Param('split_seconds', 10.0, 'wall-clock seconds per bag file', 0.5, 3600.0, read_only=True,
          unit='s'),
    Param('split_megabytes', 256.0, 'start a new bag file after this much data', 1.0, 1e5,
          read_only=True, unit='MiB'),
    Param('flush_seconds', 1.0, 'wall-clock seconds between flushes to disk: the most a SIGKILL '
          'loses after repair', 0.05, 60.0, read_only=True, unit='s'),
    Param('discovery_period', 1.0, 'wall-clock seconds between looks for topics not yet '
          'subscribed', 0.05, 60.0, read_only=True, unit='s'),
    Param('diagnostics_period', 1.0, 'wall-clock seconds between /diagnostics messages', 0.1,
          60.0, read_only=True, unit='s'),
    Param('queue_depth', 1000, 'subscription queue depth (messages): how far the recorder may '
          'fall behind before messages are lost', 1, 100000, read_only=True),
    Param('lag_warning', 0.5, 'warn on /diagnostics when a stamped message is recorded this long '
          'after its header stamp: bag times of unstamped topics are late too', 0.0, 3600.0,
          unit='s'),
), summary='records topics into a crash-safe rosbag2 run (MCAP)')
