"""Global paths on the inflated occupancy grid (scikit-image's minimum-cost path).

The grid's signed-distance field (:func:`diffopt_ros.mpc.obstacles.signed_distance`) gives each
cell its clearance ``d`` (m). Cells with ``d <= radius`` are lethal (the robot would touch an
obstacle); the others cost ``1 + penalty * exp(-(d - radius) / decay)`` per cell crossed, so
paths keep away from walls where there is room (nav2's inflation layer, in the same spirit).
``skimage.graph.MCP_Geometric`` (8-connected, diagonal steps weighted by sqrt 2) finds the
cheapest path; a goal that no free path reaches is reported, not approximated. Units: m, map frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffopt_ros.mpc.obstacles import OCCUPIED_THRESHOLD, signed_distance


@dataclass
class GlobalPlan:
    """A planned path.

    Attributes:
        reachable: whether a collision-free path exists.
        path: ``(N, 2)`` waypoints (m, map frame) from the start to the goal (empty if unreachable).
        length: path length (m; ``inf`` if unreachable).
        reason: why the goal is unreachable (empty when reachable).
    """

    reachable: bool
    path: np.ndarray
    length: float
    reason: str = ''


class GridPlanner:
    """Plans on one occupancy grid (the clearance field is computed once).

    Args:
        data: ``(H, W)`` occupancy values (-1 unknown, 0..100; row 0 at the lowest y), as in
            ``nav_msgs/OccupancyGrid`` or :class:`~diffopt_ros.slam.occupancy.OccupancyGrid`.
        resolution: cell edge (m).
        origin: ``(x, y)`` of the lower-left corner of cell ``(0, 0)`` (m).
        radius: robot radius (m): cells closer than this to an obstacle are lethal.
        penalty: extra cost of a cell at the lethal boundary (1 = twice a free cell).
        decay: length scale (m) over which the extra cost decays with clearance.
        unknown_is_occupied: treat unknown cells as obstacles (default: free, as nav2's
            ``allow_unknown``).
    """

    def __init__(self, data, resolution: float, origin, radius: float, penalty: float = 5.0,
                 decay: float = 0.25, unknown_is_occupied: bool = False):
        data = np.asarray(data)
        occupied = data >= OCCUPIED_THRESHOLD
        if unknown_is_occupied:
            occupied |= data < 0
        self.resolution, self.origin = float(resolution), (float(origin[0]), float(origin[1]))
        self.radius, self.penalty, self.decay = float(radius), float(penalty), float(decay)
        self.occupied = occupied
        self.clearance, self.costs = self._costs(occupied)

    def _costs(self, occupied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clearance ``(H, W)`` (m) and cell costs (negative: impassable) of an obstacle mask."""
        clearance = signed_distance(occupied, self.resolution)
        extra = self.penalty * np.exp(-np.clip(clearance - self.radius, 0.0, None) / self.decay)
        return clearance, np.where(clearance > self.radius, 1.0 + extra, -1.0)

    @classmethod
    def from_occupancy(cls, grid, radius: float, **kwargs) -> GridPlanner:
        """A planner on an :class:`~diffopt_ros.slam.occupancy.OccupancyGrid`."""
        return cls(grid.data, grid.resolution, grid.origin, radius, **kwargs)

    def cell(self, point) -> tuple[int, int]:
        """``(row, column)`` of the cell holding ``point (2,)`` (m)."""
        col = int(math.floor((float(point[0]) - self.origin[0]) / self.resolution))
        row = int(math.floor((float(point[1]) - self.origin[1]) / self.resolution))
        return row, col

    def _cells_of(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns ``(K,)`` of the cells holding ``points (N, 2)`` (those inside the grid)."""
        cols = np.floor((points[:, 0] - self.origin[0]) / self.resolution).astype(np.int64)
        rows = np.floor((points[:, 1] - self.origin[1]) / self.resolution).astype(np.int64)
        inside = (rows >= 0) & (rows < self.costs.shape[0]) & (cols >= 0) & (cols < self.costs.shape[1])
        return rows[inside], cols[inside]

    def centre(self, cells: np.ndarray) -> np.ndarray:
        """Centres ``(N, 2)`` (m) of cells ``(N, 2)`` given as ``(row, column)``."""
        cells = np.asarray(cells, dtype=np.float64).reshape(-1, 2)
        return np.stack((self.origin[0] + (cells[:, 1] + 0.5) * self.resolution,
                         self.origin[1] + (cells[:, 0] + 0.5) * self.resolution), -1)

    def clearance_at(self, point) -> float:
        """Clearance (m) of the cell holding ``point`` (``-inf`` outside the grid)."""
        row, col = self.cell(point)
        if not (0 <= row < self.costs.shape[0] and 0 <= col < self.costs.shape[1]):
            return -math.inf
        return float(self.clearance[row, col])

    def plan(self, start, goal, obstacles=None) -> GlobalPlan:
        """The cheapest collision-free path from ``start (2,)`` to ``goal (2,)`` (m, map frame).

        The start cell is always passable (a robot that stands near a wall can leave); a goal
        outside the grid, in a lethal cell or cut off from the start is unreachable.
        ``obstacles (N, 2)`` (m, e.g. scan points) are added to the map for this plan.
        """
        from skimage.graph import MCP_Geometric

        costs = self.costs
        if obstacles is not None and len(obstacles):
            rows, cols = self._cells_of(np.asarray(obstacles, dtype=np.float64).reshape(-1, 2))
            occupied = self.occupied.copy()
            occupied[rows, cols] = True
            costs = self._costs(occupied)[1]
        height, width = costs.shape
        s, g = self.cell(start), self.cell(goal)
        for name, (row, col) in (('start', s), ('goal', g)):
            if not (0 <= row < height and 0 <= col < width):
                return GlobalPlan(False, np.zeros((0, 2)), math.inf, f'{name} is outside the map')
        if costs[g] < 0:
            return GlobalPlan(False, np.zeros((0, 2)), math.inf,
                              f'goal is within {self.radius} m (the robot radius) of an obstacle')
        costs = costs.copy()
        costs[s] = max(costs[s], 1.0)
        mcp = MCP_Geometric(costs, fully_connected=True)
        cumulative, _ = mcp.find_costs(starts=[s], ends=[g])
        if not np.isfinite(cumulative[g]):
            return GlobalPlan(False, np.zeros((0, 2)), math.inf, 'no collision-free path reaches the goal')
        cells = np.asarray(mcp.traceback(g))
        path = self.centre(cells)
        path[0], path[-1] = np.asarray(start, dtype=np.float64)[:2], np.asarray(goal, dtype=np.float64)[:2]
        length = float(np.hypot(*np.diff(path, axis=0).T).sum()) if len(path) > 1 else 0.0
        return GlobalPlan(True, path, length)
