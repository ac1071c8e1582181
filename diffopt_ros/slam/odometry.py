"""Recent odometry poses by stamp, interpolated at scan stamps."""
from __future__ import annotations

import bisect
import math
from collections import deque

from diffopt_ros.lie import wrap_angle


class StampError(ValueError):
    """A stamp that goes backwards (or repeats) on a stream that must be monotonic."""


class OdomBuffer:
    """The last ``horizon`` seconds of odometry poses ``(x, y, yaw)`` (m, rad, odom frame).

    Args:
        horizon: seconds of history kept.
    """

    def __init__(self, horizon: float = 5.0):
        self.horizon = horizon
        self._stamps: deque[float] = deque()
        self._poses: deque[tuple[float, float, float]] = deque()

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def latest(self) -> tuple[float, tuple[float, float, float]] | None:
        """``(stamp, pose)`` of the newest entry, or None when empty."""
        return (self._stamps[-1], self._poses[-1]) if self._stamps else None

    def add(self, stamp: float, pose: tuple[float, float, float]) -> None:
        """Append one pose.

        Raises:
            StampError: ``stamp`` is not newer than the last one.
            ValueError: a value is not finite.
        """
        if not all(math.isfinite(v) for v in (stamp, *pose)):
            raise ValueError(f'odometry at t={stamp}: non-finite value in {pose}')
        if self._stamps and stamp <= self._stamps[-1]:
            raise StampError(f'odometry stamp {stamp:.9f} s is not after the previous '
                             f'{self._stamps[-1]:.9f} s')
        self._stamps.append(stamp)
        self._poses.append(tuple(float(v) for v in pose))
        while self._stamps[-1] - self._stamps[0] > self.horizon:
            self._stamps.popleft()
            self._poses.popleft()

    def at(self, stamp: float, tolerance: float) -> tuple[float, float, float] | None:
        """The pose at ``stamp``: interpolated between neighbours (yaw along the short arc),
        or the nearest end within ``tolerance`` seconds; None when out of reach."""
        if not self._stamps:
            return None
        k = bisect.bisect_left(self._stamps, stamp)
        if k == 0 or k == len(self._stamps):
            end = 0 if k == 0 else -1
            return self._poses[end] if abs(self._stamps[end] - stamp) <= tolerance else None
        t0, t1 = self._stamps[k - 1], self._stamps[k]
        p0, p1 = self._poses[k - 1], self._poses[k]
        if t1 - t0 > 2 * tolerance and min(stamp - t0, t1 - stamp) > tolerance:
            return None   # a gap in the odometry around the scan
        a = (stamp - t0) / (t1 - t0)
        return (p0[0] + a * (p1[0] - p0[0]), p0[1] + a * (p1[1] - p0[1]),
                wrap_angle(p0[2] + a * wrap_angle(p1[2] - p0[2])))
