"""A static 2D world: wall segments, round obstacles and landmark posts, with vectorized raycasts.

World files are YAML (``config/worlds/*.yaml``), read with ``yaml.safe_load``::

    name: loop                       # optional
    description: ...                 # optional
    start: [1.5, 1.5, 0.0]           # start pose [x m, y m, yaw rad], map frame, clear of
                                     # every wall and obstacle
    walls:                           # zero-thickness segments, each entry one of:
      - [0, 0, 20, 0]                #   a segment [x1, y1, x2, y2]
      - {polyline: [[0, 0], [0, 12], [20, 12]], closed: false}   # a chain of segments
      - {box: [4, 4, 5, 5]}          #   an axis-aligned rectangle [xmin, ymin, xmax, ymax]
    obstacles:                       # round obstacles [x, y, radius]
      - [10, 1.0, 0.3]
    landmarks:                       # posts [x, y] of radius landmark_radius (also obstacles)
      - [2, 0.3]
    landmark_radius: 0.1             # optional, m (default 0.1)
    route: [[1.5, 1.5], [18.5, 1.5]] # optional waypoints [x, y] of a collision-free drive

Every malformed entry raises :class:`WorldError` naming the file, line and key; a missing
``start`` and a start inside an obstacle or on a wall are errors too.
All lengths are in metres, angles in radians (REP-103, counter-clockwise).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

_KEYS = ('name', 'description', 'start', 'walls', 'obstacles', 'landmarks', 'landmark_radius',
         'route')


class WorldError(ValueError):
    """A world description that cannot be used; the message says file, line and key."""


@dataclass(frozen=True, eq=False)  # arrays: compare worlds by identity
class World:
    """Static geometry of the world (map frame).

    Attributes:
        walls: ``(M, 4)`` segments ``[x1, y1, x2, y2]`` (m).
        obstacles: ``(K, 3)`` discs ``[x, y, radius]`` (m).
        landmarks: ``(L, 2)`` post positions (m); each is also a disc of ``landmark_radius``.
        landmark_radius: radius of the landmark posts (m).
        start: default start pose ``[x, y, yaw]`` (m, m, rad).
        route: ``(R, 2)`` waypoints of a collision-free drive from ``start`` (m), may be empty.
        name: short name (file stem by default).
        description: free text.
        start_source: where ``start`` was given (``file:line: start``), for messages.
    """

    walls: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    obstacles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    landmark_radius: float = 0.1
    start: np.ndarray = field(default_factory=lambda: np.zeros(3))
    route: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    name: str = 'world'
    description: str = ''
    start_source: str = ''

    def __post_init__(self):
        walls = np.asarray(self.walls, dtype=np.float64).reshape(-1, 4)
        obstacles = np.asarray(self.obstacles, dtype=np.float64).reshape(-1, 3)
        landmarks = np.asarray(self.landmarks, dtype=np.float64).reshape(-1, 2)
        start = np.asarray(self.start, dtype=np.float64).reshape(3)
        route = np.asarray(self.route, dtype=np.float64).reshape(-1, 2)
        for what, array in (('walls', walls), ('obstacles', obstacles), ('landmarks', landmarks),
                            ('start', start), ('route', route)):
            if not np.all(np.isfinite(array)):
                raise WorldError(f'{self.name}: {what}: non-finite value')
        if np.any(obstacles[:, 2] <= 0) or not self.landmark_radius > 0:
            raise WorldError(f'{self.name}: radii must be positive')
        object.__setattr__(self, 'walls', walls)
        object.__setattr__(self, 'obstacles', obstacles)
        object.__setattr__(self, 'landmarks', landmarks)
        object.__setattr__(self, 'start', start)
        object.__setattr__(self, 'route', route)
        # Cached forms used by every raycast and collision check.
        discs = np.concatenate(
            [obstacles, np.column_stack([landmarks, np.full(len(landmarks), self.landmark_radius)])])
        object.__setattr__(self, '_discs', discs)
        object.__setattr__(self, '_edges', walls[:, 2:] - walls[:, :2])

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> World:
        """Read a world file (see the module docstring for the format).

        Raises:
            WorldError: the file is missing, not YAML, or an entry is malformed (the message
                names the file, the line and the key).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding='utf-8-sig')    # a UTF-8 byte-order mark is fine
        except OSError as exc:
            raise WorldError(f'{path}: cannot read world file: {exc}') from exc
        except UnicodeDecodeError as exc:
            raise WorldError(f'{path}: not a text (UTF-8) file: byte {exc.start} cannot be '
                             'decoded') from exc
        try:
            data = yaml.safe_load(text)
            tree = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise WorldError(f'{path}: not valid YAML: {exc}') from exc
        return cls.from_dict(data, source=str(path), tree=tree, default_name=path.stem)

    @classmethod
    def from_dict(cls, data: Any, source: str = '<dict>', tree: yaml.Node | None = None,
                  default_name: str = 'world') -> World:
        """Build a world from the parsed YAML mapping ``data`` (same format as the files).

        Args:
            data: the mapping.
            source: where it came from, for error messages.
            tree: the composed YAML node tree (gives line numbers in errors), if any.
            default_name: name used when ``data`` has no ``name``.
        """
        where = _Where(source, tree)
        if not isinstance(data, dict):
            raise WorldError(f'{where.at(())}: expected a mapping with keys {", ".join(_KEYS)}')
        for key in data:
            if key not in _KEYS:
                raise WorldError(f'{where.at((key,))}: unknown key {key!r} '
                                 f'(expected one of {", ".join(_KEYS)})')
        walls = []
        for i, entry in enumerate(_list(data, 'walls', where)):
            walls += _wall_segments(entry, ('walls', i), where)
        obstacles = [_numbers(entry, 3, ('obstacles', i), where, '[x, y, radius]')
                     for i, entry in enumerate(_list(data, 'obstacles', where))]
        for i, (_, _, radius) in enumerate(obstacles):
            if radius <= 0:
                raise WorldError(f'{where.at(("obstacles", i))}: obstacles[{i}]: radius {radius} '
                                 'must be positive')
        landmarks = [_numbers(entry, 2, ('landmarks', i), where, '[x, y]')
                     for i, entry in enumerate(_list(data, 'landmarks', where))]
        radius = data.get('landmark_radius', 0.1)
        if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 < radius < 10:
            raise WorldError(f'{where.at(("landmark_radius",))}: landmark_radius: expected a '
                             f'positive number of metres, got {radius!r}')
        route = [_numbers(entry, 2, ('route', i), where, '[x, y]')
                 for i, entry in enumerate(_list(data, 'route', where))]
        name = data.get('name', default_name)
        if not isinstance(name, str):
            raise WorldError(f'{where.at(("name",))}: name: expected a string, got {name!r}')
        description = data.get('description', '')
        if not walls and not obstacles and not landmarks:
            raise WorldError(f'{where.at(())}: the world has no walls, obstacles or landmarks')
        if data.get('start') is None:
            raise WorldError(f'{where.at(("start",))}: missing; give the start pose as '
                             'start: [x, y, yaw] (m, m, rad), clear of walls and obstacles')
        start = _numbers(data['start'], 3, ('start',), where, '[x, y, yaw]')
        world = cls(walls=np.array(walls).reshape(-1, 4),
                    obstacles=np.array(obstacles).reshape(-1, 3),
                    landmarks=np.array(landmarks).reshape(-1, 2), landmark_radius=float(radius),
                    start=np.array(start), route=np.array(route).reshape(-1, 2), name=name,
                    description=str(description), start_source=where.at(('start',)))
        world.check_start()
        return world

    @classmethod
    def load(cls, name: str | os.PathLike) -> World:
        """A world by file path, or by name under ``config/worlds/`` (``'loop'``, ``'corridors'``)."""
        from diffopt_ros.paths import config_path, resolve_config

        try:
            path = resolve_config(name, 'worlds')
        except FileNotFoundError as exc:
            folder = config_path('worlds')
            known = ', '.join(sorted(p.stem for p in folder.glob('*.yaml'))) or 'none'
            raise WorldError(f'{name}: no such world file, and no world of that name in {folder} '
                             f'(available: {known})') from exc
        return cls.from_yaml(path)

    def check_start(self, radius: float = 0.0, start=None) -> None:
        """Check that a robot of ``radius`` (m) at ``start`` ``(3,)`` (default: the world's
        start pose) is clear of every wall and obstacle.

        Raises:
            WorldError: it overlaps one; the message names where the start was given and what
                it overlaps.
        """
        pose = self.start if start is None else np.asarray(start, dtype=np.float64).reshape(3)
        clearance = self.clearance(pose[:2])
        if clearance > radius:
            return
        where = self.start_source if start is None and self.start_source else f'world {self.name}: start'
        hit = 'a wall'
        if len(self._discs):
            gaps = np.hypot(pose[0] - self._discs[:, 0], pose[1] - self._discs[:, 1]) - self._discs[:, 2]
            k = int(np.argmin(gaps))
            if gaps[k] <= clearance + 1e-12:
                hit = (f'obstacles[{k}] {self.obstacles[k].tolist()}' if k < len(self.obstacles)
                       else f'landmarks[{k - len(self.obstacles)}] '
                            f'{self.landmarks[k - len(self.obstacles)].tolist()}')
        inside = (('on' if hit == 'a wall' else 'inside') if clearance <= 0
                  else f'{clearance:.3f} m from')
        size = f', closer than the robot radius {radius} m' if radius > 0 else ''
        raise WorldError(f'{where}: [{pose[0]:g}, {pose[1]:g}] is {inside} {hit}{size}')

    # ------------------------------------------------------------------ geometry
    @property
    def discs(self) -> np.ndarray:
        """``(K + L, 3)`` all round things ``[x, y, radius]``: obstacles then landmark posts."""
        return self._discs

    @property
    def bounds(self) -> np.ndarray:
        """``(4,)`` ``[xmin, ymin, xmax, ymax]`` of all geometry (m)."""
        points = np.concatenate([self.walls.reshape(-1, 2),
                                 self._discs[:, :2] - self._discs[:, 2:],
                                 self._discs[:, :2] + self._discs[:, 2:]])
        return np.concatenate([points.min(axis=0), points.max(axis=0)])

    def raycast(self, origins, angles, max_range: float = math.inf,
                dtype: np.dtype = np.float64) -> np.ndarray:
        """Distance along rays to the first wall, obstacle or landmark post.

        Args:
            origins: ``(..., 2)`` ray origins (m, map frame).
            angles: ``(..., N)`` ray directions (rad, map frame); leading dimensions broadcast
                with those of ``origins``.
            max_range: hits farther than this are reported as ``inf`` (m).
            dtype: arithmetic precision; ``np.float32`` is about twice as fast (errors ~1e-5 m
                in a 30 m world, up to ~1e-3 m for rays grazing a wall).

        Returns:
            ``(..., N)`` ranges of ``dtype`` (m); ``inf`` where nothing is hit within
            ``max_range``. Memory is ``O(batch * N * (walls + discs))``; a batch of poses is not
            faster per pose than a loop (memory-bound), so chunk large batches.
        """
        origins = np.asarray(origins, dtype=np.float64)
        angles = np.asarray(angles, dtype=np.float64)
        dx = np.cos(angles).astype(dtype, copy=False)[..., None]          # (..., N, 1)
        dy = np.sin(angles).astype(dtype, copy=False)[..., None]
        px, py = origins[..., 0, None, None], origins[..., 1, None, None]  # (..., 1, 1)
        best = np.full(np.broadcast_shapes(angles.shape, origins.shape[:-1] + (1,)), np.inf,
                       dtype=dtype)
        if len(self.walls):
            # Endpoints a, b relative to the origin. The ray p + t d crosses the segment iff
            # a and b lie on opposite sides of it (cross(d, a) * cross(d, b) <= 0), at
            # t = cross(a, b) / cross(d, b - a). Neighbouring segments share an endpoint and
            # compute the same cross product for it, so no ray slips through a joint.
            ax, ay = (self.walls[:, 0] - px).astype(dtype), (self.walls[:, 1] - py).astype(dtype)
            bx, by = (self.walls[:, 2] - px).astype(dtype), (self.walls[:, 3] - py).astype(dtype)
            side_a = dx * ay - dy * ax                                      # (..., N, M)
            side_b = dx * by - dy * bx
            with np.errstate(divide='ignore', invalid='ignore'):
                t = (ax * by - ay * bx) / (side_b - side_a)
            hit = (side_a * side_b <= 0) & (t >= 0)
            best = np.minimum(best, np.where(hit, t, np.inf).min(axis=-1))
        if len(self._discs):
            fx = (px - self._discs[:, 0]).astype(dtype)                     # (..., 1, K)
            fy = (py - self._discs[:, 1]).astype(dtype)
            b = dx * fx + dy * fy                                           # (..., N, K)
            c = fx * fx + fy * fy - (self._discs[:, 2] ** 2).astype(dtype)  # (..., 1, K)
            disc = b * b - c
            root = np.sqrt(np.maximum(disc, 0))
            near, far = -b - root, -b + root
            t = np.where(near >= 0, near, np.where(far >= 0, far, np.inf))
            best = np.minimum(best, np.where(disc >= 0, t, np.inf).min(axis=-1))
        best[best > max_range] = np.inf
        return best

    def clearance(self, point) -> float:
        """Distance (m) from ``point`` ``(2,)`` to the nearest wall or disc surface (negative
        inside a disc)."""
        x, y = float(point[0]), float(point[1])
        best = math.inf
        if len(self.walls):
            ax, ay = x - self.walls[:, 0], y - self.walls[:, 1]
            ex, ey = self._edges[:, 0], self._edges[:, 1]
            length2 = np.maximum(ex * ex + ey * ey, 1e-300)
            t = np.clip((ax * ex + ay * ey) / length2, 0.0, 1.0)
            best = float(np.sqrt(np.min((ax - t * ex) ** 2 + (ay - t * ey) ** 2)))
        if len(self._discs):
            d = np.hypot(x - self._discs[:, 0], y - self._discs[:, 1]) - self._discs[:, 2]
            best = min(best, float(d.min()))
        return best


# ---------------------------------------------------------------------- YAML helpers
class _Where:
    """Turns a key path into ``file:line: key`` using the composed YAML tree (if any)."""

    def __init__(self, source: str, tree: yaml.Node | None):
        self.source, self.tree = source, tree

    def at(self, path: tuple) -> str:
        line = self._line(path)
        prefix = f'{self.source}:{line}' if line else self.source
        return f'{prefix}: {_key_text(path)}' if path else prefix

    def _line(self, path: tuple) -> int | None:
        node = self.tree
        if node is None:
            return None
        best = node.start_mark.line + 1
        for key in path:
            child = None
            if isinstance(node, yaml.MappingNode):
                child = next((v for k, v in node.value if k.value == key), None)
                if child is None:  # an unknown key: point at the key itself
                    child = next((k for k, _ in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) \
                    and key < len(node.value):
                child = node.value[key]
            if child is None:
                break
            node, best = child, child.start_mark.line + 1
        return best


def _key_text(path: tuple) -> str:
    text = ''
    for key in path:
        text += f'[{key}]' if isinstance(key, int) else (f'.{key}' if text else str(key))
    return text


def _list(data: dict, key: str, where: _Where) -> list:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise WorldError(f'{where.at((key,))}: expected a list, got {type(value).__name__}')
    return value


def _numbers(entry: Any, count: int, path: tuple, where: _Where, form: str) -> list[float]:
    if (not isinstance(entry, (list, tuple)) or len(entry) != count
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in entry)
            or not all(math.isfinite(v) for v in entry)):
        raise WorldError(f'{where.at(path)}: expected {count} finite numbers {form}, '
                         f'got {entry!r}')
    return [float(v) for v in entry]


def _wall_segments(entry: Any, path: tuple, where: _Where) -> list[list[float]]:
    if isinstance(entry, list):
        return [_numbers(entry, 4, path, where, '[x1, y1, x2, y2]')]
    if isinstance(entry, dict) and set(entry) == {'box'}:
        x0, y0, x1, y1 = _numbers(entry['box'], 4, path + ('box',), where,
                                  '[xmin, ymin, xmax, ymax]')
        if not (x0 < x1 and y0 < y1):
            raise WorldError(f'{where.at(path + ("box",))}: box needs xmin < xmax and '
                             f'ymin < ymax, got {entry["box"]!r}')
        corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        return [[*a, *b] for a, b in zip(corners[:-1], corners[1:])]
    if isinstance(entry, dict) and 'polyline' in entry and set(entry) <= {'polyline', 'closed'}:
        points = entry['polyline']
        if not isinstance(points, list) or len(points) < 2:
            raise WorldError(f'{where.at(path + ("polyline",))}: polyline needs a list of at '
                             f'least 2 points [x, y], got {points!r}')
        points = [_numbers(p, 2, path + ('polyline', j), where, '[x, y]')
                  for j, p in enumerate(points)]
        closed = entry.get('closed', False)
        if not isinstance(closed, bool):
            raise WorldError(f'{where.at(path + ("closed",))}: closed: expected true or false, '
                             f'got {closed!r}')
        if closed:
            points.append(points[0])
        return [[*a, *b] for a, b in zip(points[:-1], points[1:]) if a != b]
    raise WorldError(f'{where.at(path)}: a wall is [x1, y1, x2, y2], {{polyline: [[x, y], ...], '
                     f'closed: bool}} or {{box: [xmin, ymin, xmax, ymax]}}; got {entry!r}')
