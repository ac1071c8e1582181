"""What the demo measures, numpy only: trajectory errors against ground truth, path length,
the deviation from the global path, and frame changes.

Poses are ``(N, 3)`` ``[x, y, yaw]`` (m, rad), times ``(N,)`` in s (sim time).
"""
from __future__ import annotations

import math

import numpy as np

PREDICTION_AHEAD = 1.0   # s: the MPC prediction compared with what then happened


def align_to_first_pose(t_est: np.ndarray, est: np.ndarray, t_gt: np.ndarray,
                        gt: np.ndarray) -> np.ndarray:
    """Poses ``est`` ``(N, 3)`` ``[x, y, yaw]`` moved rigidly so their first pose is the ground
    truth's ``(M, 3)`` at that time (the standard alignment for odometry that starts at zero)."""
    g = interp_poses(t_gt, gt, t_est[:1])[0]
    e = est[0]
    dyaw = g[2] - e[2]
    c, s = math.cos(dyaw), math.sin(dyaw)
    rel = est[:, :2] - e[:2]
    out = np.empty_like(est[:, :3])
    out[:, 0] = g[0] + c * rel[:, 0] - s * rel[:, 1]
    out[:, 1] = g[1] + s * rel[:, 0] + c * rel[:, 1]
    out[:, 2] = est[:, 2] + dyaw
    return out


def interp_poses(t: np.ndarray, poses: np.ndarray, t_query: np.ndarray) -> np.ndarray:
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
    ref = interp_poses(t_gt, gt, t_est[inside])
    return float(np.sqrt(np.mean(np.sum((est[inside, :2] - ref[:, :2]) ** 2, axis=1))))


def path_length(points: np.ndarray) -> float:
    """Length (m) of the polyline through ``points`` ``(N, >=2)``."""
    return float(np.sum(np.hypot(*np.diff(points[:, :2], axis=0).T))) if len(points) > 1 else 0.0


def distance_to_path(points: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Distance (m) of each of ``points`` ``(N, >=2)`` to the polyline ``path`` ``(M, 2)``
    (``M >= 1``), ``(N,)``."""
    p = points[:, None, :2]
    a = path[:-1] if len(path) > 1 else path
    edge = (path[1:] - path[:-1]) if len(path) > 1 else np.zeros_like(path)
    t = np.clip(((p - a) * edge).sum(-1) / np.maximum((edge * edge).sum(-1), 1e-300), 0.0, 1.0)
    return np.sqrt(((p - a - t[..., None] * edge) ** 2).sum(-1)).min(-1)


def path_deviation(t: np.ndarray, positions: np.ndarray, plans: list, intervals: list) -> float:
    """RMSE (m) of the distance of ``positions`` ``(N, >=2)`` at times ``t`` ``(N,)`` to the
    global path in force then: the latest of ``plans`` ``[(time, (M, 2) path), ...]`` (time
    order; an empty path, an unreachable goal, leaves its samples out), counting only samples
    inside one of ``intervals`` ``[(start, end), ...]`` (s; while a goal was driven to)."""
    keep = np.zeros(len(t), dtype=bool)
    for start, end in intervals:
        keep |= (t >= start) & (t <= end)
    stamps = np.array([stamp for stamp, _ in plans])
    which = np.searchsorted(stamps, t, side='right') - 1 if len(plans) else np.full(len(t), -1)
    squared = []
    for k, (_, path) in enumerate(plans):
        inside = keep & (which == k)
        if len(path) and np.any(inside):
            squared.append(distance_to_path(positions[inside], path) ** 2)
    squared = np.concatenate(squared) if squared else np.zeros(0)
    return float(np.sqrt(np.mean(squared))) if squared.size else math.nan


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
