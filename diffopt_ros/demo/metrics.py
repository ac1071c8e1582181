"""What the demo measures, numpy only: trajectory errors against ground truth, the tracking
error against the course's timed legs, corrections of the estimate, and frame changes.

Poses are ``(N, 3)`` ``[x, y, yaw]`` (m, rad), times ``(N,)`` in s (sim time).
"""
from __future__ import annotations

import math

import numpy as np

from diffopt_ros.demo.course import Leg

PREDICTION_AHEAD = 1.0   # s: the MPC prediction compared with what then happened
#: A correction of the estimate the MPC follows (SLAM's loop closure at the end of the lap):
#: over JUMP_THRESHOLD m of motion the wheels did not make between two consecutive estimates.
#: The MPC tracking error leaves out the JUMP_SETTLE s after each (the MPC's 2 s horizon plus
#: 1 s): how far the estimate jumps is SLAM's drift, not the controller's tracking; the table
#: shows the error with them too.
JUMP_THRESHOLD = 0.1     # m
JUMP_SETTLE = 3.0        # s


def align_to_first_pose(t_est: np.ndarray, est: np.ndarray, t_gt: np.ndarray,
                        gt: np.ndarray) -> np.ndarray:
    """Poses ``est`` ``(N, 3)`` ``[x, y, yaw]`` moved rigidly so their first pose is the ground
    truth's ``(M, 3)`` at that time (the standard alignment for odometry that starts at zero)."""
    g = _interp_poses(t_gt, gt, t_est[:1])[0]
    e = est[0]
    dyaw = g[2] - e[2]
    c, s = math.cos(dyaw), math.sin(dyaw)
    rel = est[:, :2] - e[:2]
    out = np.empty_like(est[:, :3])
    out[:, 0] = g[0] + c * rel[:, 0] - s * rel[:, 1]
    out[:, 1] = g[1] + s * rel[:, 0] + c * rel[:, 1]
    out[:, 2] = est[:, 2] + dyaw
    return out


def _interp_poses(t: np.ndarray, poses: np.ndarray, t_query: np.ndarray) -> np.ndarray:
    """Poses ``(N, 3)`` at times ``t`` interpolated at ``t_query`` (yaw unwrapped first)."""
    yaw = np.unwrap(poses[:, 2])
    return np.stack([np.interp(t_query, t, poses[:, 0]), np.interp(t_query, t, poses[:, 1]),
                     np.interp(t_query, t, yaw)], axis=-1)


def position_rmse(t_est: np.ndarray, est: np.ndarray, t_gt: np.ndarray, gt: np.ndarray) -> float:
    """Absolute trajectory error: RMSE (m) of the positions ``est`` ``(N, >=2)`` against the
    ground truth interpolated at their times (samples outside the ground truth's span dropped)."""
    inside = (t_est >= t_gt[0]) & (t_est <= t_gt[-1])
    if not np.any(inside):
        return math.nan
    ref = _interp_poses(t_gt, gt, t_est[inside])
    return float(np.sqrt(np.mean(np.sum((est[inside, :2] - ref[:, :2]) ** 2, axis=1))))


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


def se2_maps(origin) -> tuple:
    """``(to_frame, from_frame)`` for a frame whose origin is ``origin`` ``[x, y, yaw]`` in the
    map. Both map ``(N, >=3)`` poses to ``(N, 3)``."""
    ox, oy, oyaw = (float(v) for v in origin)
    c, s = math.cos(oyaw), math.sin(oyaw)

    def to_frame(poses):
        poses = np.asarray(poses, dtype=np.float64)
        dx, dy = poses[:, 0] - ox, poses[:, 1] - oy
        return np.column_stack([c * dx + s * dy, -s * dx + c * dy, poses[:, 2] - oyaw])

    def from_frame(poses):
        poses = np.asarray(poses, dtype=np.float64)
        return np.column_stack([ox + c * poses[:, 0] - s * poses[:, 1],
                                oy + s * poses[:, 0] + c * poses[:, 1], poses[:, 2] + oyaw])
    return to_frame, from_frame
