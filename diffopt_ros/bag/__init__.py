"""rosbag2 runs for learning: write (crash-safe, split MCAP), repair, and read into arrays.

Pure Python on rosbags (no rclpy): the recorder node hands serialized messages to
:class:`BagWriter`; learning opens runs with :class:`Run` and aligns topics with
:mod:`diffopt_ros.bag.align`.
"""
from diffopt_ros.bag.align import hold, interpolate_states
from diffopt_ros.bag.errors import (
    BagError,
    CorruptBagError,
    EmptyBagError,
    MissingTopicError,
    RunExistsError,
)
from diffopt_ros.bag.reader import Run, Scans, find_runs, open_runs
from diffopt_ros.bag.repair import repair_run, salvage_mcap
from diffopt_ros.bag.writer import BagWriter, default_run_name

__all__ = [
    'BagError', 'BagWriter', 'CorruptBagError', 'EmptyBagError', 'MissingTopicError',
    'Run', 'RunExistsError', 'Scans', 'default_run_name', 'find_runs', 'hold',
    'interpolate_states', 'open_runs', 'repair_run', 'salvage_mcap',
]
