"""Laser scans as point sets: beams -> points, voxel down-sampling, normals.

The arithmetic runs on float64 numpy arrays on the CPU (a scan is a few hundred points:
per-call overhead, not arithmetic, is the cost, and numpy's per call is a fraction of
torch's). Each function takes tensors or arrays and returns the kind it was given: a tensor on
the device and dtype of its input, or a float64 array. Points are in the sensor frame
(``base_scan``; the lidar sits at the robot centre with yaw 0, so this is also ``base_link``).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor


class ScanError(ValueError):
    """A scan that cannot be used (mismatched shapes, too few valid beams)."""


def as_array(values) -> np.ndarray:
    """``values`` (a tensor, an array or a sequence) as a C-contiguous float64 CPU array; no
    copy for a float64 CPU tensor or array."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=np.float64)


def _like(array: np.ndarray, like):
    """``array`` as a tensor on ``like``'s device and dtype when ``like`` is a tensor, else as is."""
    if isinstance(like, Tensor):
        return torch.from_numpy(array).to(device=like.device, dtype=like.dtype)
    return array


def scan_to_points(ranges, angles, range_min: float, range_max: float):
    """Valid beams of one scan as 2D points.

    Beams that are NaN, +-Inf, shorter than ``range_min`` or longer than ``range_max`` are
    dropped (a lidar reports "no return" as Inf or as ``range_max``; both are dropped, since a
    point at the maximum range is not a surface).

    Args:
        ranges: ``(R,)`` ranges (m), a tensor or an array.
        angles: ``(R,)`` beam angles (rad, CCW from the sensor x axis).
        range_min: shortest valid range (m).
        range_max: beams at or beyond this range are dropped (m).

    Returns:
        ``(N, 2)`` points (m), ``N <= R``, in beam order: a tensor on the device and dtype of
        ``ranges`` when it is one, else a float64 array.
    """
    r, a = as_array(ranges), as_array(angles)
    if r.shape != a.shape or r.ndim != 1:
        raise ScanError(f'scan: ranges {r.shape} and angles {a.shape} must be 1-D of the same length')
    valid = np.isfinite(r)
    valid[valid] = (r[valid] >= range_min) & (r[valid] < range_max)
    r, a = r[valid], a[valid]
    return _like(np.stack((r * np.cos(a), r * np.sin(a)), axis=-1), ranges)


def voxel_downsample(points, cell: float):
    """One point per occupied grid cell (the centroid of the points in it).

    The cells are integer keys ``floor(p / cell)``; one stable sort of their flat index groups
    the points of each cell (in input order) and ``np.add.reduceat`` sums each group.

    Args:
        points: ``(N, 2)`` points (m), a tensor or an array.
        cell: cell edge length (m); ``<= 0`` returns ``points`` unchanged.

    Returns:
        ``(M, 2)`` centroids, ``M <= N``, ordered by cell key (x index, then y index), of the
        kind of ``points`` (a tensor on its device and dtype, or a float64 array).
    """
    if cell <= 0 or len(points) == 0:
        return points
    array = as_array(points)
    keys = np.floor(array / cell).astype(np.int64)
    keys -= keys.min(axis=0)
    flat = keys[:, 0] * (int(keys[:, 1].max()) + 1) + keys[:, 1]
    order = np.argsort(flat, kind='stable')
    flat = flat[order]
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    sums = np.add.reduceat(array[order], starts, axis=0)
    counts = np.diff(np.r_[starts, len(flat)])
    return _like(sums / counts[:, None], points)


def point_normals(points, neighbours: int = 5, tree: cKDTree | None = None):
    """Unit surface normals from the principal axes of each point's nearest neighbours
    (found with a KD-tree, :class:`scipy.spatial.cKDTree`; the 2x2 covariance eigenproblem of
    all points in closed form, one vectorised pass).

    Args:
        points: ``(N, 2)`` points (m), ``N >= 2``, a tensor or an array.
        neighbours: points per local fit (including the point itself).
        tree: a KD-tree of ``points`` if one is already built (else one is).

    Returns:
        ``normals (N, 2)`` (unit; sign arbitrary) and ``planarity (N,)`` in [0, 1]: 1 for points
        on a clean line, 0 for isotropic clutter (the ratio of the principal spreads); of the
        kind of ``points`` (tensors on its device and dtype, or float64 arrays).
    """
    array = as_array(points)
    k = min(neighbours, len(array))
    tree = cKDTree(array) if tree is None else tree
    idx = tree.query(array, k=k)[1].reshape(-1, k)                              # (N, k)
    x, y = array[:, 0][idx], array[:, 1][idx]                                   # (N, k) each
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    sxx, syy, sxy = (x * x).sum(axis=1) / k, (y * y).sum(axis=1) / k, (x * y).sum(axis=1) / k
    axis = 0.5 * np.arctan2(2 * sxy, sxx - syy)          # direction of the larger spread
    normals = np.stack((-np.sin(axis), np.cos(axis)), axis=1)
    mean, spread = 0.5 * (sxx + syy), np.hypot(0.5 * (sxx - syy), sxy)
    planarity = 1.0 - (mean - spread) / np.maximum(mean + spread, np.finfo(np.float64).tiny)
    return _like(normals, points), _like(np.clip(planarity, 0.0, 1.0), points)
