"""What ``mpc_node`` reports on ``/diagnostics``: its counters, its last step and its mode."""
from __future__ import annotations

import math

from diagnostic_msgs.msg import DiagnosticStatus

from diffopt_ros.nodes import ros_convert

#: The counters since start, in the order /diagnostics lists them.
COUNTERS = ('deadline_misses', 'failures', 'overruns', 'rejected_states', 'future_states',
            'clock_jumps', 'ticks', 'solves', 'stop_zone')
#: Modes reported as WARN (the robot is commanded zero or a fallback).
WARN_MODES = frozenset(('stale state', 'non-finite state', 'fallback', 'overrun', 'unreachable', 'blocked',
                        'no map', 'stop zone', 'no progress'))


class MpcStats:
    """Counters (``counts``, keys :data:`COUNTERS`) and the last tick's numbers: ``solve_time``
    (s), ``iterations``, ``converged``, ``state_age`` (s) and ``mode``."""

    def __init__(self):
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.solve_time, self.iterations, self.converged = 0.0, 0, False
        self.state_age = math.nan
        self.mode = 'idle'

    def status(self, name: str, hardware_id: str, tick_time: float, device: str) -> DiagnosticStatus:
        """The node's DiagnosticStatus (message: the mode) after a tick of ``tick_time`` s."""
        level = DiagnosticStatus.WARN if self.mode in WARN_MODES else DiagnosticStatus.OK
        return ros_convert.diagnostic_status(name, hardware_id, level, self.mode, {
            'solve_time_ms': self.solve_time * 1e3, 'tick_time_ms': tick_time * 1e3,
            'iterations': self.iterations, 'converged': self.converged, **self.counts,
            'state_age_s': self.state_age, 'device': device})
