"""Obstacle costs for the MPC: a signed-distance field of an occupancy grid plus live scan points.

:class:`DistanceField` turns an occupancy grid (``nav_msgs/OccupancyGrid`` arrays: ``data (H, W)``
with 100 occupied, ``resolution`` m, ``origin`` m; or a map_server file through
:func:`diffopt_ros.maps.load_map`) into a Euclidean signed-distance field with
``scipy.ndimage.distance_transform_edt`` and interpolates it bilinearly, with the exact first
and second derivatives of the interpolant. :class:`ObstacleCost` penalises the robot's clearance
``d(p_t)`` (the smaller of the field's distance and the distance to the nearest scan point) below
``radius + inflation``:

    J = 0.5 w sum_{t=0..T} max(0, radius + inflation - d(p_t))^2

Its expansion is the Gauss-Newton one, ``w 1[r > 0] g g^T`` (PSD; ``g = grad d``), so iLQR's
subproblem stays convex; ``exact=True`` (the implicit backward) adds the curvature
``-w r Hess d``, so the implicit gradients are those of the solution. ``w`` and ``inflation``
are learnable ``nn.Parameter`` s (stored as logarithms).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from .costs import Cost, CostExpansion
from .dynamics import positive_parameter
from .solve_blocks import SolveBlocks

OCCUPIED_THRESHOLD = 50          # cells with a value >= this are obstacles (nav_msgs: 0..100)


def signed_distance(occupied: np.ndarray, resolution: float) -> np.ndarray:
    """Signed distance (m) of each cell centre to the obstacle boundary, ``(H, W)`` float64.

    A free cell's value is the distance from its centre to the nearest occupied cell centre minus
    half a cell (the boundary lies between the two centres); an occupied cell's value is minus the
    distance to the nearest free cell centre plus half a cell. A grid without obstacles is
    ``+inf`` everywhere.

    Args:
        occupied: ``(H, W)`` bool, True where a cell is an obstacle.
        resolution: cell edge (m).
    """
    occupied = np.asarray(occupied, dtype=bool)
    if not occupied.any():
        return np.full(occupied.shape, np.inf)
    outside = distance_transform_edt(~occupied) * resolution          # 0 on occupied cells
    inside = distance_transform_edt(occupied) * resolution if not occupied.all() else \
        np.full(occupied.shape, np.inf)
    half = 0.5 * resolution
    return np.where(occupied, half - inside, outside - half)


class DistanceField(SolveBlocks):
    """A signed-distance field on a grid, queried by bilinear interpolation of the cell centres.

    Outside the grid the nearest border value is used (its gradient along the clamped axis is 0).
    The interpolant of each square between four cell centres is precomputed as its coefficients
    ``(a, b, c, e)``: ``d = a + b fx + c fy + e fx fy`` (``fx, fy`` in ``[0, 1]``), so a query
    reads one row of a table and its gradient ``(b + e fy, c + e fx) / resolution`` and
    Hessian cross term ``e / resolution^2`` need no differences of corners.

    Args:
        sdf: ``(H, W)`` signed distances (m) at the cell centres; row ``r`` at
            ``y = origin[1] + (r + 0.5) resolution``, column ``c`` likewise in x.
        resolution: cell edge (m).
        origin: ``(x, y)`` of the lower-left corner of cell ``(0, 0)`` (m, map frame).
    """

    def __init__(self, sdf, resolution: float, origin):
        super().__init__()
        sdf = torch.as_tensor(np.asarray(sdf, dtype=np.float64))
        if sdf.ndim != 2 or min(sdf.shape) < 2:
            raise ValueError(f'DistanceField: sdf must be (H, W) with H, W >= 2, got {tuple(sdf.shape)}')
        if not resolution > 0:
            raise ValueError(f'DistanceField: resolution must be > 0 m, got {resolution}')
        self.resolution = float(resolution)
        self.origin = (float(origin[0]), float(origin[1]))
        # a grid without obstacles: a large finite distance keeps the arithmetic finite
        sdf = torch.nan_to_num(sdf, posinf=1e6)
        self.register_buffer('sdf', sdf)
        f00, f10, f01, f11 = sdf[:-1, :-1], sdf[:-1, 1:], sdf[1:, :-1], sdf[1:, 1:]
        self.register_buffer('coefficients', torch.stack((f00, f10 - f00, f01 - f00, f00 - f10 - f01 + f11),
                                                         -1).reshape(-1, 4), persistent=False)
        height, width = sdf.shape
        offset = [self.origin[0] / self.resolution + 0.5, self.origin[1] / self.resolution + 0.5]
        self.register_buffer('_offset', torch.tensor(offset), persistent=False)
        self.register_buffer('_upper', torch.tensor([width - 1.0, height - 1.0]), persistent=False)
        self.register_buffer('_last_corner', self._upper - 1, persistent=False)
        self.register_buffer('_row_stride', torch.tensor([1, width - 1]), persistent=False)

    @classmethod
    def from_grid(cls, data, resolution: float, origin, threshold: int = OCCUPIED_THRESHOLD,
                  unknown_is_occupied: bool = False) -> DistanceField:
        """The field of an occupancy grid: ``data (H, W)`` (-1 unknown, 0..100), as in
        ``nav_msgs/OccupancyGrid`` (row 0 at the lowest y) or
        :class:`~diffopt_ros.slam.occupancy.OccupancyGrid`. Unknown cells are free unless
        ``unknown_is_occupied``."""
        data = np.asarray(data)
        occupied = data >= threshold
        if unknown_is_occupied:
            occupied |= data < 0
        return cls(signed_distance(occupied, resolution), resolution, origin)

    @classmethod
    def from_occupancy(cls, grid, **kwargs) -> DistanceField:
        """The field of an :class:`~diffopt_ros.slam.occupancy.OccupancyGrid` (see :meth:`from_grid`)."""
        return cls.from_grid(grid.data, grid.resolution, grid.origin, **kwargs)

    def _cells(self, points: torch.Tensor, in_range: bool = False):
        """Coefficients ``a, b, c, e (...)`` of the squares holding ``points (..., 2)``, the
        fractions ``f (..., 2)`` within them and the in-range mask ``(..., 2)`` per axis (``None``
        unless ``in_range``)."""
        upper, offset, last_corner, row_stride, coefficients = self.solve_blocks(
            ('grid', points.dtype, points.device), lambda: (
                self._upper.to(points), self._offset.to(points), self._last_corner.to(points),
                self._row_stride.to(points.device), self.coefficients.to(points.dtype)))
        uv = points / self.resolution - offset                              # in cell-centre units
        inside = ((uv >= 0) & (uv <= upper)) if in_range else None
        uv = torch.minimum(uv.clamp_min(0), upper)
        corner = torch.minimum(uv.detach().floor(), last_corner)
        f = uv - corner
        # integer index: exact on any grid size in float32 too
        index = (corner.long() * row_stride).sum(-1)
        a, b, c, e = coefficients[index].unbind(-1)
        return a, b, c, e, f, inside

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Distances ``(...)`` (m) at ``points (..., 2)`` (m), differentiable w.r.t. the points."""
        a, b, c, e, f, _ = self._cells(points)
        fx, fy = f.unbind(-1)
        return a + fx * (b + e * fy) + c * fy

    def query(self, points: torch.Tensor, hessian: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Distance ``(...)`` (m), gradient ``(..., 2)`` (1) and Hessian ``(..., 2, 2)`` (1/m) of the
        interpolant at ``points (..., 2)`` (exact inside a cell; the Hessian's only entry is the
        cross term of the bilinear form; ``None`` unless ``hessian``)."""
        a, b, c, e, f, inside = self._cells(points, True)
        fx, fy = f.unbind(-1)
        slope_x = b + e * fy
        d = a + fx * slope_x + c * fy
        scale = 1.0 / self.resolution
        g = torch.stack((slope_x, c + e * fx), -1) * (inside * scale)
        if not hessian:
            return d, g, None
        cross = e * (inside.all(-1) * (scale * scale))
        zero = torch.zeros_like(cross)
        hess = torch.stack((zero, cross, cross, zero), -1).unflatten(-1, (2, 2))
        return d, g, hess


def scan_to_world(pose, ranges, angles, max_range: float = math.inf, stride: int = 1,
                  min_range: float = 0.0) -> np.ndarray:
    """Lidar returns as world points ``(N, 2)`` (m): ``pose (3,)`` ``[x, y, yaw]`` of the scanner in
    the map frame, ``ranges (K,)`` (m; non-finite = no return), ``angles (K,)`` (rad, scanner
    frame). Returns beyond ``max_range`` or below ``min_range`` (the sensor's ``range_min``:
    LaserScan says such values are to be discarded, e.g. hits on the robot itself) are dropped;
    ``stride`` keeps every stride-th beam."""
    ranges = np.asarray(ranges, dtype=np.float64)[::stride]
    angles = np.asarray(angles, dtype=np.float64)[::stride]
    keep = np.isfinite(ranges) & (ranges <= max_range) & (ranges >= min_range)
    x, y, yaw = (float(v) for v in pose[:3])
    heading = yaw + angles[keep]
    return np.stack((x + ranges[keep] * np.cos(heading), y + ranges[keep] * np.sin(heading)), -1)


class ObstacleCost(Cost, SolveBlocks):
    """Clearance penalty of a disc robot against a distance field and scan points (see module).

    Args:
        field: the map's :class:`DistanceField`, or ``None`` (scan points only).
        radius: robot radius (m), fixed.
        inflation: extra clearance wanted beyond the radius (m), learnable, > 0.
        weight: ``w`` (1/m^2 per step), learnable, > 0.
        position_indices: state entries of the robot's ``(x, y)`` (m).

    Attributes:
        points: ``(N, 2)`` obstacle points in the map frame (m), e.g. the latest scan
            (:func:`scan_to_world`), shared by every sample of a batch; set with
            :meth:`set_points`. Empty by default.
    """

    def __init__(self, field: DistanceField | None, radius: float, inflation: float = 0.1,
                 weight: float = 100.0, position_indices: tuple[int, int] = (0, 1)):
        super().__init__()
        if not radius >= 0:
            raise ValueError(f'ObstacleCost: radius must be >= 0 m, got {radius}')
        self.field, self.radius = field, float(radius)
        self.log_inflation = positive_parameter(inflation, 'ObstacleCost.inflation')
        self.log_weight = positive_parameter(weight, 'ObstacleCost.weight')
        self.position_indices = tuple(position_indices)
        self.register_buffer('points', torch.zeros(0, 2), persistent=False)

    @property
    def margin(self) -> torch.Tensor:
        """``radius + inflation`` (m)."""
        return self.radius + self.log_inflation.exp()

    @property
    def weight(self) -> torch.Tensor:
        return self.log_weight.exp()

    def _margin(self, like: torch.Tensor) -> torch.Tensor:
        """:attr:`margin` in the dtype and device of ``like`` (once per solve: :class:`SolveBlocks`)."""
        return self.solve_blocks(('margin', like.dtype, like.device), lambda: self.margin.to(like))

    def _weight(self, like: torch.Tensor) -> torch.Tensor:
        """:attr:`weight` in the dtype and device of ``like`` (once per solve: :class:`SolveBlocks`)."""
        return self.solve_blocks(('weight', like.dtype, like.device), lambda: self.weight.to(like))

    def set_points(self, points) -> None:
        """Replace the obstacle points by ``points (N, 2)`` (m, map frame; ``N`` may be 0)."""
        points = torch.as_tensor(np.asarray(points, dtype=np.float64)).reshape(-1, 2)
        self.points = points.to(self.log_weight.device)

    def _positions(self, x: torch.Tensor) -> torch.Tensor:
        i, j = self.position_indices
        return x[..., i:i + 2] if j == i + 1 else torch.stack((x[..., i], x[..., j]), -1)

    def _near_points(self, p: torch.Tensor) -> torch.Tensor:
        """The points ``(N', 2)`` (in their order) inside the box round the positions ``p (..., 2)``
        widened by twice the margin: only they can lie within the margin of a position, where the
        penalty is not zero; the others change no cost, gradient or curvature (the clearance
        there is at least the margin either way) and are not searched."""
        q = self.points.to(p)
        flat = p.detach().reshape(-1, 2)
        reach = self.solve_blocks(('reach',), lambda: 2.0 * float(self.margin.detach()))
        low, high = flat.amin(0) - reach, flat.amax(0) + reach
        return q[((q >= low) & (q <= high)).all(-1)]

    @staticmethod
    def _point_distance(p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance ``(...)`` of positions ``p (..., 2)`` to the nearest of the points ``q (N, 2)``
        (``N >= 1``) and the offset ``p - q* (..., 2)``."""
        flat = p.reshape(-1, 2)
        nearest = torch.cdist(flat.detach(), q).argmin(-1)
        offset = (flat - q[nearest]).view(p.shape)
        return offset.norm(dim=-1), offset

    def clearance(self, p: torch.Tensor) -> torch.Tensor:
        """Clearance ``(...)`` (m) of positions ``p (..., 2)`` (m): field and points, the smaller."""
        return self._clearance(p, self.points.to(p))

    def _clearance(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """:meth:`clearance` against the points ``q (N, 2)``."""
        d = self.field(p) if self.field is not None else None
        if q.shape[0]:
            dp = self._point_distance(p, q)[0]
            d = dp if d is None else torch.minimum(d, dp)
        if d is None:
            return torch.full(p.shape[:-1], 1e6, dtype=p.dtype, device=p.device)
        return d

    def total(self, x, u, target=None, u_prev=None):
        p = self._positions(x)
        r = torch.relu(self._margin(x) - self._clearance(p, self._near_points(p)))
        return 0.5 * self._weight(x) * r.square().sum(-1)

    def _distance_derivatives(self, p: torch.Tensor, hessian: bool = True):
        """``d (...)``, ``grad (..., 2)``, ``Hess (..., 2, 2)`` (``None`` unless ``hessian``) of the
        clearance (the active term's; the points' only within the margin, :meth:`_near_points`)."""
        if self.field is not None:
            d, g, H = self.field.query(p, hessian)
        else:
            d = torch.full(p.shape[:-1], 1e6, dtype=p.dtype, device=p.device)
            g, H = torch.zeros_like(p), p.new_zeros(*p.shape, 2) if hessian else None
        q = self._near_points(p)
        if q.shape[0]:
            dp, offset = self._point_distance(p, q)
            closer = (dp < d).unsqueeze(-1)
            safe = dp.clamp_min(1e-12).unsqueeze(-1)
            gp = offset / safe
            if hessian:
                Hp = (torch.eye(2, dtype=p.dtype, device=p.device) - gp.unsqueeze(-1) * gp.unsqueeze(-2)) \
                    / safe.unsqueeze(-1)
                H = torch.where(closer.unsqueeze(-1), Hp, H)
            d = torch.where(closer.squeeze(-1), dp, d)
            g = torch.where(closer, gp, g)
        return d, g, H

    def expand(self, x, u, target=None, u_prev=None, exact=False):
        batch, T1, n_x = x.shape
        T, n_u = u.shape[1], u.shape[2]
        d, g, H = self._distance_derivatives(self._positions(x), exact)
        w = self._weight(x)
        r = torch.relu(self._margin(x) - d)
        active = (r > 0).to(x.dtype)
        grad = -(w * r).unsqueeze(-1) * g                                   # (B, T+1, 2)
        hess = (w * active).unsqueeze(-1).unsqueeze(-1) * (g.unsqueeze(-1) * g.unsqueeze(-2))
        if exact:
            hess = hess - (w * r).unsqueeze(-1).unsqueeze(-1) * H
        i, j = self.position_indices
        lx = x.new_zeros(batch, T1, n_x)
        lxx = x.new_zeros(batch, T1, n_x, n_x)
        if j == i + 1:                     # slices: plain copies, no index tensors
            lx[..., i:j + 1] = grad
            lxx[..., i:j + 1, i:j + 1] = hess
        else:
            lx[..., [i, j]] = grad
            lxx[..., i, [i, j]] = hess[..., 0, :]
            lxx[..., j, [i, j]] = hess[..., 1, :]
        return CostExpansion(lxx, lx, u.new_zeros(batch, T, n_u, n_u), u.new_zeros(batch, T, n_u))
