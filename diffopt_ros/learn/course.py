"""A course of goals as the demo drives it: timed straight legs and the tracking error.

Numpy only (the demo's command line imports it without torch). Positions in m (map frame),
times in s (sim time).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Leg:
    """One leg of a course: turn in place towards ``goal``, then a timed straight line.

    Positions in m (map frame), times in s (sim time).
    """

    start: np.ndarray
    goal: np.ndarray
    t0: float            # when the leg starts (the turn in place)
    speed: float         # m/s along the line
    turn: float = 0.0    # s of turning in place before the reference moves

    @classmethod
    def towards(cls, start_pose, goal, t0: float, speed: float, turn_rate: float) -> Leg:
        """The leg from ``start_pose`` ``[x, y, yaw]`` to ``goal`` ``[x, y]``: the turn lasts
        the heading change over ``turn_rate`` (rad/s)."""
        start = np.asarray(start_pose, dtype=np.float64)
        goal = np.asarray(goal, dtype=np.float64)
        heading = math.atan2(goal[1] - start[1], goal[0] - start[0])
        turn = abs(math.remainder(heading - start[2], 2 * math.pi)) / turn_rate
        return cls(start=start[:2].copy(), goal=goal[:2].copy(), t0=t0, speed=speed, turn=turn)

    @property
    def duration(self) -> float:
        """Planned duration (s), turn included."""
        return self.turn + float(np.hypot(*(self.goal - self.start))) / self.speed

    def reference(self, t: np.ndarray) -> np.ndarray:
        """Reference positions ``(N, 2)`` at times ``t`` ``(N,)`` (held at the ends)."""
        moving = max(self.duration - self.turn, 1e-9)
        frac = np.clip((t - self.t0 - self.turn) / moving, 0.0, 1.0)[:, None]
        return self.start + frac * (self.goal - self.start)

    def waypoints(self, step: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Strictly increasing times ``(K,)`` and positions ``(K, 2)``: the start, then every
        ``step`` s along the line."""
        moving = self.duration - self.turn
        times = self.t0 + self.turn + np.append(np.arange(0.0, moving, step), moving)
        if self.turn > 0:
            times = np.concatenate([[self.t0], times])
        return times, self.reference(times)


def tracking_rmse(legs: list[tuple[Leg, float]], t: np.ndarray, poses: np.ndarray,
                  exclude: list[tuple[float, float]] = ()) -> float:
    """RMSE (m) of positions against the timed reference over all legs.

    Args:
        legs: ``(leg, t_end)``: each leg and the time it ended (goal reached or given up).
        t: times ``(M,)`` (s) of the positions.
        poses: positions ``(M, >=2)`` (m, map frame): the true ones, or the estimate the MPC
            closes the loop on (then the error is the controller's own tracking error).
        exclude: time intervals ``(start, end)`` (s) left out (see :func:`estimate_jumps`).
    """
    errors = []
    keep = np.ones(len(t), dtype=bool)
    for start, end in exclude:
        keep &= ~((t >= start) & (t <= end))
    for leg, t_end in legs:
        inside = (t >= leg.t0) & (t <= t_end) & keep
        errors.append(np.sum((poses[inside, :2] - leg.reference(t[inside])) ** 2, axis=1))
    errors = np.concatenate(errors) if errors else np.zeros(0)
    return float(np.sqrt(np.mean(errors))) if errors.size else math.nan


def estimate_jumps(t: np.ndarray, estimate: np.ndarray, t_odom: np.ndarray, odom: np.ndarray,
                   threshold: float = 0.1) -> list[tuple[float, float]]:
    """Corrections of a pose estimate (e.g. a SLAM loop closure): times where it moved more than
    the wheel odometry did, by over ``threshold`` m.

    Args:
        t: times ``(N,)`` (s) of the estimate.
        estimate: ``(N, >=2)`` positions (m).
        t_odom: times ``(M,)`` (s) of the odometry.
        odom: ``(M, >=2)`` odometry positions (m, any frame).
        threshold: m of unexplained motion between two consecutive estimates.

    Returns:
        ``(time, size)`` of each jump (s, m).
    """
    if len(t) < 2 or len(t_odom) < 2:
        return []
    moved = np.hypot(*np.diff(estimate[:, :2], axis=0).T)
    xy = np.column_stack([np.interp(t, t_odom, odom[:, 0]), np.interp(t, t_odom, odom[:, 1])])
    driven = np.hypot(*np.diff(xy, axis=0).T)
    jump = moved - driven
    return [(float(t[i + 1]), float(jump[i])) for i in np.flatnonzero(jump > threshold)]
