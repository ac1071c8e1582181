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
    (found with a KD-tree, :class:`scipy.spatial.cKDTree`; the 2x2 covariance eigenproblem in
    closed form).

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
    local = array[idx] - array[idx].mean(axis=1, keepdims=True)                 # (N, k, 2)
    sxx = np.einsum('nk,nk->n', local[..., 0], local[..., 0]) / k
    syy = np.einsum('nk,nk->n', local[..., 1], local[..., 1]) / k
    sxy = np.einsum('nk,nk->n', local[..., 0], local[..., 1]) / k
    axis = 0.5 * np.arctan2(2 * sxy, sxx - syy)          # direction of the larger spread
    normals = np.stack((-np.sin(axis), np.cos(axis)), axis=1)
    mean, spread = 0.5 * (sxx + syy), np.hypot(0.5 * (sxx - syy), sxy)
    planarity = 1.0 - (mean - spread) / np.maximum(mean + spread, np.finfo(np.float64).tiny)
    like = dict(dtype=points.dtype, device=points.device)
    return (torch.as_tensor(normals, **like),
            torch.as_tensor(np.clip(planarity, 0.0, 1.0), **like))
