"""Occupancy grid from keyframe scans at their estimated poses, and map_server files.

Each beam marks the cells along the ray as free and its end cell as occupied; per cell the
beam counts are combined as log-odds. :class:`OccupancyMapper` keeps the integer hit and miss
counts between calls and re-casts only the keyframes whose pose changed since the last call
(their old rays are subtracted, the new ones added), so a map update costs
O(new + moved keyframes), not O(all keyframes): after a local update only the window moves.
The result is exactly the grid cast from scratch (:func:`build_occupancy_grid`). Cells lie on
a fixed lattice: cell ``(i, j)`` is centred on ``(i, j) * resolution``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

UNKNOWN, FREE, OCCUPIED = -1, 0, 100
CAST_GROUP = 16
"""Keyframes ray-cast at once by :class:`OccupancyMapper` (bounds its temporary memory)."""


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


def cast_rays(poses: Tensor, scans: list[Tensor], resolution: float, chunk: int = 1 << 18
              ) -> tuple[Tensor, Tensor]:
    """Lattice cells of the beam ends (hits) and of the samples along each beam (misses).

    Args:
        poses: ``(K, 3)`` sensor poses ``(x, y, yaw)`` in the map frame (m, rad).
        scans: K tensors ``(N_k, 2)`` of scan points in the sensor frame (m).
        resolution: cell edge (m).
        chunk: most ray samples handled at once (bounds memory).

    Returns:
        ``hits (H, 2)`` and ``misses (M, 2)``: int64 cell indices ``round(xy / resolution)``,
        one row per beam end and per sample (with repeats). Samples lie every ``resolution``
        from the ray start and stop one cell short of the end.
    """
    poses = poses.detach()
    counts = torch.tensor([int(s.shape[0]) for s in scans], device=poses.device)
    empty = torch.zeros(0, 2, dtype=torch.int64, device=poses.device)
    if len(scans) == 0 or int(counts.sum()) == 0:
        return empty, empty
    points = torch.cat([s.to(poses) for s in scans]) / resolution             # in cells
    pose = poses.repeat_interleave(counts, dim=0)                              # (R, 3)
    c, s = torch.cos(pose[:, 2]), torch.sin(pose[:, 2])
    x0, y0 = pose[:, 0] / resolution + 0.5, pose[:, 1] / resolution + 0.5     # +0.5: floor = round
    dx = c * points[:, 0] - s * points[:, 1]
    dy = s * points[:, 0] + c * points[:, 1]
    hits = torch.stack((torch.floor(x0 + dx), torch.floor(y0 + dy)), dim=1).to(torch.int64)
    length = torch.hypot(dx, dy)                                               # cells
    dx, dy = dx / length.clamp_min(1e-9), dy / length.clamp_min(1e-9)
    # samples j = 0, 1, ... cells from the start with j < length - 1 (stop one cell short)
    samples = torch.ceil(length - 1.0).clamp_min(0).to(torch.int64)
    ends = samples.cumsum(0)
    misses, first = [], 0
    while first < len(samples):   # rays first..last-1 hold at most `chunk` samples (at least one ray)
        base = int(ends[first] - samples[first])
        last = max(int(torch.searchsorted(ends, base + chunk, right=True)), first + 1)
        n = samples[first:last]
        which = torch.arange(first, last, device=poses.device).repeat_interleave(n)
        j = (torch.arange(base, int(ends[last - 1]), device=poses.device)
             - (ends[first:last] - n).repeat_interleave(n)).to(poses.dtype)
        misses.append(torch.stack((torch.floor(x0[which] + j * dx[which]),
                                   torch.floor(y0[which] + j * dy[which])), dim=1).to(torch.int64))
        first = last
    return hits, torch.cat(misses)


class OccupancyMapper:
    """An occupancy grid kept up to date with keyframe scans whose poses keep changing.

    Call :meth:`update` with all keyframe poses and scans (scans never change once added; a
    keyframe is only ever appended); :meth:`grid` gives the current grid. A keyframe is re-cast
    when its pose moved by more than ``tolerance`` at its farthest beam end since it was last
    cast (translation plus rotation times the beam length); with ``tolerance=0`` every moved
    keyframe is, and the grid equals :func:`build_occupancy_grid` of the same poses. With the
    default (a tenth of a cell) every beam of the map lies within that of its exact place, and
    a local SLAM update re-casts a few keyframes instead of the whole window.

    Args:
        resolution: cell edge (m).
        hit_log_odds: log-odds added to a cell per beam ending in it.
        miss_log_odds: log-odds added to a cell per beam passing through it.
        margin: empty border around the observed area (m).
        chunk: most ray samples cast at once (bounds memory).
        tolerance: largest beam-end displacement (m) that does not re-cast a keyframe
            (default ``resolution / 10``).
    """

    def __init__(self, resolution: float = 0.05, hit_log_odds: float = 0.85,
                 miss_log_odds: float = -0.4, margin: float = 0.5, chunk: int = 1 << 18,
                 tolerance: float | None = None):
        self.resolution, self.margin, self.chunk = float(resolution), float(margin), chunk
        self.tolerance = self.resolution / 10 if tolerance is None else float(tolerance)
        self.hit_log_odds, self.miss_log_odds = hit_log_odds, miss_log_odds
        self._poses: Tensor | None = None      # (K_cast, 3) poses the counts were cast at
        self._reach: Tensor | None = None      # (K_cast,) farthest beam end of each scan (m)
        self._hits: Tensor | None = None       # (H, W) int64 beam ends per cell, row = y
        self._misses: Tensor | None = None     # (H, W) beams through the cell
        self._low = (0, 0)                     # lattice index (i, j) of column 0 / row 0
        self.recast = 0
        """Keyframes cast by the last :meth:`update` (new ones plus moved ones)."""

    @property
    def keyframes(self) -> int:
        """Keyframes included in the counts."""
        return 0 if self._poses is None else len(self._poses)

    def update(self, poses: Tensor, scans: list[Tensor]) -> None:
        """Bring the counts to ``poses (K, 3)`` and ``scans`` (K tensors ``(N_k, 2)``, sensor frame).

        Keyframes ``0..K'-1`` must be the ones of the previous call (K >= K')."""
        poses = poses.detach()
        done = self.keyframes
        if len(scans) != len(poses) or len(poses) < done:
            raise ValueError(f'occupancy map: {len(poses)} poses and {len(scans)} scans after '
                             f'{done} keyframes (keyframes are only ever appended)')
        if done and (self._poses.device != poses.device or self._poses.dtype != poses.dtype):
            self.reset()
            done = 0
        moved = []
        if done:
            change = poses[:done] - self._poses
            change[:, 2] = torch.remainder(change[:, 2] + math.pi, 2 * math.pi) - math.pi
            shift = change[:, :2].norm(dim=1) + change[:, 2].abs() * self._reach
            moved = torch.nonzero((shift > self.tolerance) if self.tolerance > 0 else
                                  (poses[:done] != self._poses).any(dim=1)).flatten().tolist()
        if 2 * len(moved) > done:        # most moved (a full re-solve): casting all is cheaper
            self.reset()
            done, moved = 0, []
        cast = moved + list(range(done, len(poses)))
        self.recast = len(cast)
        if not cast:
            return
        reach = torch.stack([scans[k].detach().norm(dim=1).max() if len(scans[k]) else
                             poses.new_zeros(()) for k in range(done, len(poses))]
                            ).to(poses) if len(poses) > done else poses.new_zeros(0)
        # cast in groups of keyframes: the temporary ray samples (~0.3 MB per keyframe) of a
        # re-cast of the whole map would otherwise all be held at once, and the allocator keeps
        # that peak as resident memory
        for first in range(0, len(moved), CAST_GROUP):
            group = moved[first:first + CAST_GROUP]
            old_hits, old_misses = cast_rays(self._poses[group], [scans[k] for k in group],
                                             self.resolution, self.chunk)
            self._add(self._hits, old_hits, -1)
            self._add(self._misses, old_misses, -1)
        for first in range(0, len(cast), CAST_GROUP):
            group = cast[first:first + CAST_GROUP]
            new_hits, new_misses = cast_rays(poses[group], [scans[k] for k in group],
                                             self.resolution, self.chunk)
            self._grow(torch.cat((new_hits, new_misses)))
            self._add(self._hits, new_hits, 1)
            self._add(self._misses, new_misses, 1)
        if done == 0:
            self._poses, self._reach = poses.clone(), reach
        else:
            self._poses[moved] = poses[moved]
            self._poses = torch.cat((self._poses, poses[done:]))
            self._reach = torch.cat((self._reach, reach))

    def reset(self) -> None:
        """Forget all counts."""
        self._poses = self._reach = self._hits = self._misses = None
        self._low = (0, 0)

    def _grow(self, cells: Tensor) -> None:
        """Make the count arrays cover ``cells (N, 2)`` (with room to spare)."""
        if len(cells) == 0:
            return
        low, high = cells.min(dim=0).values.tolist(), cells.max(dim=0).values.tolist()
        if self._hits is not None:
            height, width = self._hits.shape
            (i0, j0) = self._low
            if low[0] >= i0 and low[1] >= j0 and high[0] < i0 + width and high[1] < j0 + height:
                return
            low = [min(low[0], i0), min(low[1], j0)]
            high = [max(high[0], i0 + width - 1), max(high[1], j0 + height - 1)]
        pad = max(int(math.ceil(2.0 / self.resolution)), 8)     # about 2 m on each side
        low = [low[0] - pad, low[1] - pad]
        high = [high[0] + pad, high[1] + pad]
        shape = (high[1] - low[1] + 1, high[0] - low[0] + 1)
        device = cells.device
        hits = torch.zeros(shape, dtype=torch.int64, device=device)
        misses = torch.zeros(shape, dtype=torch.int64, device=device)
        if self._hits is not None:
            height, width = self._hits.shape
            r, c = self._low[1] - low[1], self._low[0] - low[0]
            hits[r:r + height, c:c + width] = self._hits
            misses[r:r + height, c:c + width] = self._misses
        self._hits, self._misses, self._low = hits, misses, (low[0], low[1])

    def _add(self, counts: Tensor, cells: Tensor, sign: int) -> None:
        if len(cells) == 0:
            return
        width = counts.shape[1]
        flat = (cells[:, 1] - self._low[1]) * width + (cells[:, 0] - self._low[0])
        counts.view(-1).index_add_(0, flat, torch.full_like(flat, sign))

    def grid(self) -> OccupancyGrid:
        """The current grid: the observed cells plus ``margin`` (1x1 unknown when empty)."""
        if self._hits is None:
            return OccupancyGrid(np.full((1, 1), UNKNOWN, np.int8), self.resolution, (0.0, 0.0))
        seen = (self._hits + self._misses) > 0
        rows = torch.nonzero(seen.any(dim=1)).flatten()
        cols = torch.nonzero(seen.any(dim=0)).flatten()
        if len(rows) == 0:
            return OccupancyGrid(np.full((1, 1), UNKNOWN, np.int8), self.resolution, (0.0, 0.0))
        pad = int(math.ceil(self.margin / self.resolution - 1e-9))
        r0, r1 = int(rows[0]) - pad, int(rows[-1]) + pad + 1
        c0, c1 = int(cols[0]) - pad, int(cols[-1]) + pad + 1
        hits, misses = self._window(self._hits, r0, r1, c0, c1), self._window(self._misses, r0, r1, c0, c1)
        log_odds = self.hit_log_odds * hits.double() + self.miss_log_odds * misses.double()
        data = torch.full(hits.shape, UNKNOWN, dtype=torch.int8, device=hits.device)
        seen = (hits + misses) > 0
        data[seen & (log_odds <= 0)] = FREE
        data[seen & (log_odds > 0)] = OCCUPIED
        origin = ((self._low[0] + c0 - 0.5) * self.resolution,
                  (self._low[1] + r0 - 0.5) * self.resolution)
        return OccupancyGrid(data.cpu().numpy(), self.resolution, origin)

    @staticmethod
    def _window(counts: Tensor, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        """``counts[r0:r1, c0:c1]`` with zeros outside the array."""
        height, width = counts.shape
        out = counts.new_zeros((r1 - r0, c1 - c0))
        rs, re, cs, ce = max(r0, 0), min(r1, height), max(c0, 0), min(c1, width)
        out[rs - r0:re - r0, cs - c0:ce - c0] = counts[rs:re, cs:ce]
        return out


def updated_mapper(mapper: OccupancyMapper | None, resolution: float, poses: Tensor,
                   scans: list[Tensor]) -> OccupancyMapper:
    """``mapper`` brought to ``poses (K, 3)`` and ``scans`` (:meth:`OccupancyMapper.update`); a new
    mapper when there is none yet or its cell edge is not ``resolution`` (m)."""
    if mapper is None or mapper.resolution != float(resolution):
        mapper = OccupancyMapper(resolution)
    mapper.update(poses, scans)
    return mapper


def build_occupancy_grid(poses: Tensor, scans: list[Tensor], resolution: float = 0.05,
                         hit_log_odds: float = 0.85, miss_log_odds: float = -0.4,
                         margin: float = 0.5, chunk: int = 1 << 18) -> OccupancyGrid:
    """Ray-cast keyframe scans into a grid (from scratch; :class:`OccupancyMapper` updates one).

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
    mapper = OccupancyMapper(resolution, hit_log_odds, miss_log_odds, margin, chunk)
    mapper.update(poses, scans)
    return mapper.grid()


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
