"""Occupancy grids without ROS: map_server YAML + PGM files, and the grid of a simulator world.

:func:`load_map` reads the standard map_server form (``image``, ``resolution``, ``origin``,
``negate``, ``occupied_thresh``, ``free_thresh``, ``mode`` trinary / scale / raw; the image a
binary or ASCII PGM) into an :class:`~diffopt_ros.slam.occupancy.OccupancyGrid` (-1 unknown,
0 free, 100 occupied; row 0 at the lowest y), the form ``nav_msgs/OccupancyGrid`` and
``slam_node``'s ``/map`` use. :func:`world_grid` rasterises a :class:`~diffopt_ros.sim.World`
(what a map_server would serve for it). Units: m; map frame.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import yaml

from diffopt_ros.slam.occupancy import FREE, OCCUPIED, UNKNOWN, OccupancyGrid

_MODES = ('trinary', 'scale', 'raw')


class MapError(ValueError):
    """A map file that cannot be used; the message names the file and the key."""


def _number(data: dict, key: str, path: Path, default=None) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MapError(f'{path}: {key}: expected a number, got {value!r}')
    return float(value)


def read_pgm(path: str | os.PathLike) -> np.ndarray:
    """A PGM image (binary ``P5`` or ASCII ``P2``, 8 or 16 bit) as ``(H, W)`` integers, row 0 the
    top of the image.

    Raises:
        MapError: not a PGM file or truncated (the message names the file).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MapError(f'{path}: cannot read image: {exc}') from exc
    magic = raw[:2]
    if magic not in (b'P5', b'P2'):
        raise MapError(f'{path}: not a PGM image (magic {magic!r}; expected P5 or P2)')
    fields, pos = [], 2
    while len(fields) < 3:                       # width, height, maxval; comments start with '#'
        while pos < len(raw) and raw[pos:pos + 1].isspace():
            pos += 1
        if raw[pos:pos + 1] == b'#':
            pos = raw.find(b'\n', pos) + 1 or len(raw)
            continue
        end = pos
        while end < len(raw) and not raw[end:end + 1].isspace():
            end += 1
        try:
            fields.append(int(raw[pos:end]))
        except ValueError:
            raise MapError(f'{path}: malformed PGM header near byte {pos}') from None
        pos = end
    width, height, maxval = fields
    if width < 1 or height < 1 or not 0 < maxval < 65536:
        raise MapError(f'{path}: PGM header {width}x{height}, maxval {maxval} is invalid')
    if magic == b'P2':
        values = np.array(raw[pos:].split(), dtype=np.int64)
    else:
        dtype = np.dtype('>u2') if maxval > 255 else np.dtype(np.uint8)
        body = raw[pos + 1:pos + 1 + width * height * dtype.itemsize]
        values = np.frombuffer(body, dtype=dtype).astype(np.int64)
    if values.size != width * height:
        raise MapError(f'{path}: PGM holds {values.size} pixels, header says {width}x{height}')
    return values.reshape(height, width)


def load_map(path: str | os.PathLike) -> OccupancyGrid:
    """Read a map_server map (YAML + image) into an occupancy grid.

    As map_server: ``p = (255 - pixel) / 255`` (``pixel / 255`` with ``negate: 1``); trinary and
    scale modes mark ``p > occupied_thresh`` occupied and ``p < free_thresh`` free, the rest
    unknown (scale mode's intermediate values count as unknown here: the costs use occupied
    cells only); raw mode takes the pixel as the cell value. Alpha channels are not read.

    Raises:
        MapError: a missing file, a missing or malformed key, an image that is not PGM.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except OSError as exc:
        raise MapError(f'{path}: cannot read map file: {exc}') from exc
    except yaml.YAMLError as exc:
        raise MapError(f'{path}: not valid YAML: {exc}') from exc
    if not isinstance(data, dict):
        raise MapError(f'{path}: expected a mapping with image, resolution, origin')
    image = data.get('image')
    if not isinstance(image, str) or not image:
        raise MapError(f'{path}: image: expected the image file name, got {image!r}')
    resolution = _number(data, 'resolution', path)
    if resolution <= 0:
        raise MapError(f'{path}: resolution: must be > 0 m, got {resolution}')
    origin = data.get('origin')
    if (not isinstance(origin, list) or len(origin) < 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in origin)):
        raise MapError(f'{path}: origin: expected [x, y, yaw], got {origin!r}')
    if len(origin) > 2 and origin[2] != 0:
        raise MapError(f'{path}: origin: a rotated map (yaw {origin[2]}) is not supported')
    mode = data.get('mode', 'trinary')
    if mode not in _MODES:
        raise MapError(f'{path}: mode: expected one of {", ".join(_MODES)}, got {mode!r}')
    negate = data.get('negate', 0)
    if negate not in (0, 1, True, False):
        raise MapError(f'{path}: negate: expected 0 or 1, got {negate!r}')
    occupied = _number(data, 'occupied_thresh', path, 0.65)
    free = _number(data, 'free_thresh', path, 0.25)
    if not 0 <= free <= occupied <= 1:
        raise MapError(f'{path}: need 0 <= free_thresh <= occupied_thresh <= 1, got {free}, {occupied}')
    pixels = read_pgm(path.parent / image)[::-1]           # row 0 = lowest y, as OccupancyGrid
    if mode == 'raw':
        cells = np.clip(pixels, -1, 100).astype(np.int8)
    else:
        p = pixels / 255.0 if negate else (255.0 - pixels) / 255.0
        cells = np.full(pixels.shape, UNKNOWN, np.int8)
        cells[p > occupied] = OCCUPIED
        cells[p < free] = FREE
    return OccupancyGrid(data=np.ascontiguousarray(cells), resolution=resolution,
                         origin=(float(origin[0]), float(origin[1])))


def world_grid(world, resolution: float = 0.05, padding: float = 0.5) -> OccupancyGrid:
    """The occupancy grid of a :class:`~diffopt_ros.sim.World` (no unknown cells).

    A cell is occupied when a wall or disc comes within half its diagonal of the cell centre
    (every cell a wall passes through: no gaps, also where a wall runs along cell edges), free
    otherwise.

    Args:
        world: the world.
        resolution: cell edge (m).
        padding: free margin around the world's bounds (m).
    """
    xmin, ymin, xmax, ymax = world.bounds
    x0, y0 = xmin - padding, ymin - padding
    width = int(math.ceil((xmax + padding - x0) / resolution))
    height = int(math.ceil((ymax + padding - y0) / resolution))
    xs = x0 + (np.arange(width) + 0.5) * resolution
    ys = y0 + (np.arange(height) + 0.5) * resolution
    centres = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    distance = np.full(len(centres), np.inf)
    walls, discs = world.walls, world.discs
    for chunk in range(0, len(centres), 1 << 14):
        p = centres[chunk:chunk + (1 << 14)]
        best = np.full(len(p), np.inf)
        if len(walls):
            a, edge = walls[:, :2], walls[:, 2:] - walls[:, :2]
            rel = p[:, None, :] - a                                       # (n, M, 2)
            t = np.clip((rel * edge).sum(-1) / np.maximum((edge * edge).sum(-1), 1e-300), 0, 1)
            best = np.sqrt(((rel - t[..., None] * edge) ** 2).sum(-1)).min(-1)
        if len(discs):
            d = np.hypot(p[:, None, 0] - discs[:, 0], p[:, None, 1] - discs[:, 1]) - discs[:, 2]
            best = np.minimum(best, d.min(-1))
        distance[chunk:chunk + len(p)] = best
    cells = np.where(distance <= 0.5 * math.sqrt(2.0) * resolution + 1e-9, OCCUPIED, FREE).astype(np.int8)
    return OccupancyGrid(data=cells.reshape(height, width), resolution=float(resolution),
                         origin=(float(x0), float(y0)))
