"""Laser scans as point sets: beams -> points, voxel down-sampling, normals.

All functions keep the device and dtype of their inputs. Points are in the sensor frame
(``base_scan``; the lidar sits at the robot centre with yaw 0, so this is also ``base_link``).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor


class ScanError(ValueError):
    """A scan that cannot be used (mismatched shapes, too few valid beams)."""


def scan_to_points(ranges: Tensor, angles: Tensor, range_min: float, range_max: float) -> Tensor:
    """Valid beams of one scan as 2D points.

    Beams that are NaN, +-Inf, shorter than ``range_min`` or longer than ``range_max`` are
    dropped (a lidar reports "no return" as Inf or as ``range_max``; both are dropped, since a
    point at the maximum range is not a surface).

    Args:
        ranges: ``(R,)`` ranges (m).
        angles: ``(R,)`` beam angles (rad, CCW from the sensor x axis).
        range_min: shortest valid range (m).
        range_max: beams at or beyond this range are dropped (m).

    Returns:
        ``(N, 2)`` points (m), ``N <= R``, in beam order.
    """
    if ranges.shape != angles.shape or ranges.dim() != 1:
        raise ScanError(f'scan: ranges {tuple(ranges.shape)} and angles {tuple(angles.shape)} '
                        'must be 1-D of the same length')
    valid = torch.isfinite(ranges) & (ranges >= range_min) & (ranges < range_max)
    r, a = ranges[valid], angles[valid].to(ranges.dtype)
    return torch.stack((r * torch.cos(a), r * torch.sin(a)), dim=-1)


def voxel_downsample(points: Tensor, cell: float) -> Tensor:
    """One point per occupied grid cell (the centroid of the points in it).

    Args:
        points: ``(N, 2)`` points (m).
        cell: cell edge length (m); ``<= 0`` returns ``points`` unchanged.

    Returns:
        ``(M, 2)`` centroids, ``M <= N``, ordered by cell key.
    """
    if cell <= 0 or points.shape[0] == 0:
        return points
    keys = torch.floor(points / cell).to(torch.int64)
    keys = keys - keys.min(dim=0).values
    flat = keys[:, 0] * (int(keys[:, 1].max()) + 1) + keys[:, 1]
    unique, inverse = torch.unique(flat, return_inverse=True)
    sums = points.new_zeros((unique.shape[0], 2)).index_add_(0, inverse, points)
    counts = points.new_zeros(unique.shape[0]).index_add_(0, inverse, points.new_ones(len(points)))
    return sums / counts[:, None]


def point_normals(points: Tensor, neighbours: int = 5) -> tuple[Tensor, Tensor]:
    """Unit surface normals from the principal axes of each point's nearest neighbours
    (found with a KD-tree, :class:`scipy.spatial.cKDTree`).

    Args:
        points: ``(N, 2)`` points (m), ``N >= 2``.
        neighbours: points per local fit (including the point itself).

    Returns:
        ``normals (N, 2)`` (unit; sign arbitrary) and ``planarity (N,)`` in [0, 1]: 1 for points
        on a clean line, 0 for isotropic clutter (the ratio of the principal spreads).
    """
    k = min(neighbours, points.shape[0])
    array = np.ascontiguousarray(points.detach().cpu().numpy(), dtype=np.float64)
    idx = cKDTree(array).query(array, k=k)[1].reshape(-1, k)                     # (N, k)
    idx = torch.from_numpy(idx).to(points.device)
    local = points[idx] - points[idx].mean(dim=1, keepdim=True)                 # (N, k, 2)
    cov = local.transpose(1, 2) @ local / k                                     # (N, 2, 2)
    evals, evecs = torch.linalg.eigh(cov)                                        # ascending
    normals = evecs[:, :, 0]
    planarity = 1.0 - evals[:, 0] / evals[:, 1].clamp_min(torch.finfo(points.dtype).tiny)
    return normals, planarity.clamp(0.0, 1.0)
