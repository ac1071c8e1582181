"""Occupancy grid from keyframe scans at their estimated poses, and map_server files.

The grid is rebuilt from scratch (the poses move after every loop closure): each beam marks
the cells along the ray as free and its end cell as occupied, counted with ``bincount`` over
all beams at once (in chunks to bound memory), and combined as log-odds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

UNKNOWN, FREE, OCCUPIED = -1, 0, 100


@dataclass(frozen=True)
class OccupancyGrid:
    """A 2D occupancy grid (ROS ``nav_msgs/OccupancyGrid`` conventions).

    Attributes:
        data: ``(H, W)`` int8 cell values: -1 unknown, 0 free, 100 occupied; row ``r`` is
            ``y = origin[1] + (r + 0.5) * resolution``, column ``c`` likewise in x.
        resolution: cell edge (m).
        origin: ``(x, y)`` of the lower-left corner of cell (0, 0) in the map frame (m).
    """

    data: np.ndarray
    resolution: float
    origin: tuple[float, float]


def build_occupancy_grid(poses: Tensor, scans: list[Tensor], resolution: float = 0.05,
                         hit_log_odds: float = 0.85, miss_log_odds: float = -0.4,
                         margin: float = 0.5, chunk: int = 1 << 20) -> OccupancyGrid:
    """Ray-cast keyframe scans into a grid.

    Args:
        poses: ``(K, 3)`` sensor poses ``(x, y, yaw)`` in the map frame (m, rad).
        scans: K tensors ``(N_k, 2)`` of scan points in the sensor frame (m).
        resolution: cell edge (m).
        hit_log_odds: log-odds added to a cell per beam ending in it.
        miss_log_odds: log-odds added to a cell per beam passing through it.
        margin: empty border around the observed area (m).
        chunk: most ray samples handled at once (bounds memory).

    Returns:
        The :class:`OccupancyGrid` (1x1 unknown when there are no points).
    """
    if len(scans) == 0 or sum(int(s.shape[0]) for s in scans) == 0:
        return OccupancyGrid(np.full((1, 1), UNKNOWN, np.int8), resolution, (0.0, 0.0))
    poses = poses.detach()
    ends, starts = [], []
    for pose, points in zip(poses, scans):
        c, s = torch.cos(pose[2]), torch.sin(pose[2])
        rotation = torch.stack((torch.stack((c, -s)), torch.stack((s, c))))
        ends.append(points.to(poses) @ rotation.T + pose[:2])
        starts.append(pose[:2].expand(points.shape[0], 2))
    end, start = torch.cat(ends), torch.cat(starts)
    corner = torch.minimum(end.min(0).values, start.min(0).values) - margin
    far = torch.maximum(end.max(0).values, start.max(0).values) + margin
    width, height = (int(v) for v in torch.ceil((far - corner) / resolution).tolist())
    cells = width * height

    def flat_index(xy: Tensor) -> Tensor:
        ij = torch.floor((xy - corner) / resolution).to(torch.int64)
        ij[:, 0].clamp_(0, width - 1)
        ij[:, 1].clamp_(0, height - 1)
        return ij[:, 1] * width + ij[:, 0]

    hits = torch.bincount(flat_index(end), minlength=cells)
    misses = torch.zeros(cells, dtype=torch.int64, device=end.device)
    length = (end - start).norm(dim=1)
    samples = max(int(math.ceil(float(length.max()) / resolution)), 1)
    step = torch.arange(samples, dtype=end.dtype, device=end.device) * resolution   # (S,)
    rays_per_chunk = max(chunk // samples, 1)
    for first in range(0, end.shape[0], rays_per_chunk):
        a, b = start[first:first + rays_per_chunk], end[first:first + rays_per_chunk]
        n = b - a
        ray_length = n.norm(dim=1, keepdim=True)
        direction = n / ray_length.clamp_min(1e-9)
        along = step[None, :]                                              # (1, S)
        keep = along < (ray_length - resolution)                           # stop before the hit
        points = a[:, None, :] + along[..., None] * direction[:, None, :]  # (R, S, 2)
        misses += torch.bincount(flat_index(points[keep]), minlength=cells)
    log_odds = hit_log_odds * hits.to(end.dtype) + miss_log_odds * misses.to(end.dtype)
    data = torch.full((cells,), UNKNOWN, dtype=torch.int8, device=end.device)
    seen = (hits + misses) > 0
    data[seen & (log_odds <= 0)] = FREE
    data[seen & (log_odds > 0)] = OCCUPIED
    return OccupancyGrid(data.reshape(height, width).cpu().numpy(), resolution,
                         (float(corner[0]), float(corner[1])))


def save_map(grid: OccupancyGrid, stem: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.pgm`` and ``<stem>.yaml`` in the map_server format (trinary mode).

    Returns:
        The two paths written.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    pgm, yaml_path = stem.with_suffix('.pgm'), stem.with_suffix('.yaml')
    image = np.full(grid.data.shape, 205, np.uint8)   # unknown grey
    image[grid.data == FREE] = 254
    image[grid.data == OCCUPIED] = 0
    image = image[::-1]                               # the image's first row is the top (max y)
    height, width = image.shape
    with open(pgm, 'wb') as stream:
        stream.write(f'P5\n# diffopt_ros slam map\n{width} {height}\n255\n'.encode('ascii'))
        stream.write(image.tobytes())
    yaml_path.write_text(
        f'image: {pgm.name}\nmode: trinary\nresolution: {grid.resolution}\n'
        f'origin: [{grid.origin[0]}, {grid.origin[1]}, 0.0]\nnegate: 0\n'
        'occupied_thresh: 0.65\nfree_thresh: 0.25\n', encoding='utf-8')
    return pgm, yaml_path
