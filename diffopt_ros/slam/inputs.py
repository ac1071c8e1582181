"""Pairing scans with the odometry pose at their stamps (the ROS-free input logic of slam_node).

Odometry and scans arrive on separate streams; a scan is used with the odometry pose
interpolated at its stamp (:class:`~diffopt_ros.slam.odometry.OdomBuffer`). A scan newer than
the newest odometry waits (one at most: a newer scan replaces it) until odometry reaches its
stamp. Stamps must increase on each stream; a node clock that jumps back (a simulator reset,
a bag played in a loop) restarts both streams.
"""
from __future__ import annotations

import math

from diffopt_ros.slam.odometry import OdomBuffer, StampError

Pose = tuple[float, float, float]


class ScanSync:
    """Scans paired with odometry poses (no locking: the caller serializes the calls).

    Args:
        horizon: seconds of odometry kept.

    Attributes:
        dropped: waiting scans replaced by a newer one before odometry reached them.
    """

    def __init__(self, horizon: float = 5.0):
        self.horizon = horizon
        self.dropped = 0
        self._odom = OdomBuffer(horizon)
        self._last_scan = -math.inf
        self._last_now = -math.inf
        self._pending: tuple | None = None

    def clock(self, now: float) -> float:
        """The node clock at an input (s); returns how far it jumped back since the last
        call (s, 0 when it did not), in which case both streams restart."""
        jump = self._last_now - now if now < self._last_now else 0.0
        if jump:
            self._odom = OdomBuffer(self.horizon)
            self._last_scan, self._pending = -math.inf, None
        self._last_now = now
        return jump

    def add_odometry(self, stamp: float, pose: Pose, tolerance: float):
        """Add an odometry pose ``(x, y, yaw)`` at ``stamp`` (s).

        Returns:
            ``(scan, pose or None)`` for the waiting scan that odometry now reaches (its pose
            None when no odometry lies within ``tolerance`` s of it), else None.

        Raises:
            StampError: ``stamp`` is not after the previous odometry's.
            ValueError: non-finite pose.
        """
        self._odom.add(stamp, pose)
        if self._pending is None or stamp < self._pending[0]:
            return None
        pending, self._pending = self._pending, None
        return pending, self._odom.at(pending[0], tolerance)

    def check_scan_stamp(self, stamp: float) -> None:
        """Accept a scan stamp (s) that is after the previous one.

        Raises:
            StampError: it is not (naming both stamps).
        """
        if not stamp > self._last_scan:
            raise StampError(f'stamp {stamp:.9f} s is not after the previous scan '
                             f'({self._last_scan:.9f} s)')
        self._last_scan = stamp

    def add_scan(self, scan: tuple, tolerance: float):
        """Pair ``scan`` (a tuple whose first item is its stamp, s) with odometry.

        Returns:
            ``(scan, pose or None)`` when odometry has reached its stamp (pose None: none
            within ``tolerance`` s), else None (the scan waits for :meth:`add_odometry`).
        """
        latest = self._odom.latest
        if latest is None or latest[0] < scan[0]:
            self.dropped += self._pending is not None
            self._pending = scan
            return None
        return scan, self._odom.at(scan[0], tolerance)
