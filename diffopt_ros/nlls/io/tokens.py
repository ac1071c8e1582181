"""Lines to numbers, and the checks on them: the tag table, tokenizing and vectorised parsing
per tag, ids, information matrices, quaternions, references to declared vertices; each
problem a :class:`~diffopt_ros.nlls.io.data.GraphFormatError` naming ``file:line``."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from diffopt_ros.nlls.io.data import GraphFormatError

# tag -> number of numbers after the tag, dimension, role, number of leading id columns
_TAGS = {
    'VERTEX_SE2': (4, 2, 'pose', 1), 'VERTEX2': (4, 2, 'pose', 1), 'VERTEX': (4, 2, 'pose', 1),
    'VERTEX_XY': (3, 2, 'point', 1),
    'EDGE_SE2': (11, 2, 'edge', 2), 'EDGE2': (11, 2, 'edge', 2), 'EDGE': (11, 2, 'edge', 2),
    'ODOMETRY': (11, 2, 'edge', 2),
    'EDGE_SE2_XY': (7, 2, 'obs', 2), 'LANDMARK2': (7, 2, 'obs', 2), 'BR': (6, 2, 'obs', 2),
    'LANDMARK': (7, 2, 'obs', 2),
    'VERTEX_SE3:QUAT': (8, 3, 'pose', 1), 'VERTEX3': (7, 3, 'pose', 1),
    'VERTEX_TRACKXYZ': (4, 3, 'point', 1),
    'EDGE_SE3:QUAT': (30, 3, 'edge', 2), 'EDGE3': (29, 3, 'edge', 2),
    'EDGE_SE3_TRACKXYZ': (12, 3, 'obs', 3), 'PARAMS_SE3OFFSET': (8, 3, 'param', 1),
    'FIX': (None, 0, 'fix', None), 'EQUIV': (2, 0, 'skip', 2),
}


_ID_LIMIT = 2.0 ** 53


class _Group:
    """The lines of one tag: line numbers ``(R,)`` (1-based) and their numbers ``(R, count)``."""

    def __init__(self, tag: str, lines: np.ndarray, values: np.ndarray):
        self.tag, self.lines, self.values = tag, lines, values


def _decode(path: Path) -> list[str]:
    raw = path.read_bytes()
    nul = raw.find(b'\x00')
    if nul >= 0:
        line = raw.count(b'\n', 0, nul) + 1
        raise GraphFormatError(f'{path}:{line}: not a text file (NUL byte)')
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as exc:
        line = raw.count(b'\n', 0, exc.start) + 1
        bad = raw[exc.start]
        raise GraphFormatError(f'{path}:{line}: not a UTF-8 text file (byte 0x{bad:02x})') from None
    if text.startswith('\ufeff'):  # byte-order mark: part of no token
        text = text[1:]
    return text.split('\n')


def _parse_group(path: Path, tag: str, numbers: list[int], bodies: list[str], count: int) -> np.ndarray:
    """``(R, count)`` float64 numbers of one tag's lines, in one vectorised parse."""
    try:
        values = np.loadtxt(io.StringIO('\n'.join(bodies)), dtype=np.float64, ndmin=2, comments=None)
        if values.shape == (len(bodies), count):
            return values
    except ValueError:
        pass
    for n, body in zip(numbers, bodies):  # find the offending line
        tokens = body.split()
        if len(tokens) != count:
            raise GraphFormatError(f'{path}:{n}: {tag} needs {count} numbers, got {len(tokens)}')
        for tok in tokens:
            try:
                float(tok)
            except ValueError:
                raise GraphFormatError(f'{path}:{n}: {tag}: {tok!r} is not a number') from None
    raise GraphFormatError(f'{path}:{numbers[0]}: {tag}: cannot parse the numbers of these lines')


def _check_ids(path: Path, g: _Group, columns: int) -> np.ndarray:
    ids = g.values[:, :columns]
    bad = ~((ids == np.floor(ids)) & (ids >= 0) & (ids < _ID_LIMIT)).all(1)
    if bad.any():
        r = int(np.argmax(bad))
        raise GraphFormatError(f'{path}:{g.lines[r]}: {g.tag}: ids must be integers in [0, 2^53), '
                               f'got {" ".join(f"{v:.17g}" for v in ids[r])}')
    return ids.astype(np.int64)


def _tokenize(path: Path, lines: list[str]) -> tuple[dict[str, _Group], dict[str, list]]:
    """Group lines by tag and parse each group; FIX lines are returned raw."""
    found: dict[str, tuple[list[int], list[str]]] = {}
    for n, line in enumerate(lines, 1):
        parts = line.split(None, 1)
        if not parts or parts[0].startswith('#'):
            continue
        entry = found.get(parts[0])
        if entry is None:
            entry = found[parts[0]] = ([], [])
        entry[0].append(n)
        entry[1].append(parts[1] if len(parts) > 1 else '')
    groups, raw = {}, {}
    for tag, (numbers, bodies) in found.items():
        if tag not in _TAGS:
            known = ', '.join(sorted(_TAGS))
            raise GraphFormatError(f'{path}:{numbers[0]}: unknown tag {tag!r} (supported: {known})')
        count = _TAGS[tag][0]
        if count is None:
            raw[tag] = list(zip(numbers, bodies))
            continue
        values = _parse_group(path, tag, numbers, bodies, count)
        g = _Group(tag, np.asarray(numbers), values)
        finite = np.isfinite(values).all(1)
        if not finite.all():
            raise GraphFormatError(f'{path}:{g.lines[int(np.argmin(finite))]}: {tag}: non-finite number')
        groups[tag] = g
    return groups, raw


def _upper(values: np.ndarray, d: int) -> np.ndarray:
    """Symmetric ``(E, d, d)`` from row-major upper triangles ``(E, d (d+1) / 2)``."""
    m = np.zeros((len(values), d, d))
    r, c = np.triu_indices(d)
    m[:, r, c] = values
    m[:, c, r] = values
    return m


def _not_pd(m: np.ndarray) -> np.ndarray:
    """``(E,)`` True where the symmetric ``m (E, d, d)`` is not positive definite."""
    if not len(m):
        return np.zeros(0, dtype=bool)
    return ~(np.linalg.eigvalsh(m)[:, 0] > 0)


def _require_pd(path: Path, m: np.ndarray, lines: np.ndarray, what: str = 'information') -> None:
    bad = _not_pd(m)
    if bad.any():
        raise GraphFormatError(f'{path}:{lines[int(np.argmax(bad))]}: {what} matrix is not positive definite')


def _quaternions(path: Path, g: _Group, q: np.ndarray) -> np.ndarray:
    """Normalized ``(R, 4)`` quaternions; a zero one is an error."""
    norm = np.linalg.norm(q, axis=1)
    bad = norm < 1e-12
    if bad.any():
        raise GraphFormatError(f'{path}:{g.lines[int(np.argmax(bad))]}: {g.tag}: quaternion has zero length')
    return q / norm[:, None]


def _index_of(path: Path, universe: np.ndarray, ids: np.ndarray, lines: np.ndarray, tag: str,
              what: str) -> np.ndarray:
    """Positions of ``ids`` in sorted ``universe``; an id not in it is an error at its line."""
    pos = np.searchsorted(universe, ids)
    pos_c = np.minimum(pos, max(len(universe) - 1, 0))
    ok = (pos < len(universe)) & (universe[pos_c] == ids) if len(universe) else np.zeros(ids.shape, bool)
    if not ok.all():
        r = np.argwhere(~ok)[0]  # lines: one per row of ids
        raise GraphFormatError(f'{path}:{lines[r[0]]}: {tag} refers to {what} {ids[tuple(r)]}, '
                               f'which no vertex line declares')
    return pos


def _declared(path: Path, groups: dict[str, _Group], tags: tuple[str, ...], what: str):
    """Ids, line numbers, tags and rows of the vertex lines of ``tags``, sorted by id; a
    duplicate id is an error at its second line."""
    parts = [(groups[t], t) for t in tags if t in groups]
    if not parts:
        return None
    ids = np.concatenate([_check_ids(path, g, 1)[:, 0] for g, _ in parts])
    lines = np.concatenate([g.lines for g, _ in parts])
    which = np.concatenate([np.full(len(g.lines), k) for k, (g, _) in enumerate(parts)])
    row = np.concatenate([np.arange(len(g.lines)) for g, _ in parts])
    order = np.lexsort((lines, ids))
    ids, lines, which, row = ids[order], lines[order], which[order], row[order]
    dup = np.nonzero(ids[1:] == ids[:-1])[0]
    if len(dup):
        first = dup[np.argmin(lines[dup + 1])]
        raise GraphFormatError(f'{path}:{lines[first + 1]}: {what} {ids[first]} is already declared '
                               f'at line {lines[first]}')
    return ids, lines, [parts[k][1] for k in which], which, row, [g for g, _ in parts]


def _fix_ids(path: Path, entries: list) -> tuple[np.ndarray, np.ndarray]:
    ids, lines = [], []
    for n, body in entries:
        tokens = body.split()
        if not tokens:
            raise GraphFormatError(f'{path}:{n}: FIX needs at least one vertex id')
        for tok in tokens:
            if not tok.isdigit() or int(tok) >= _ID_LIMIT:
                raise GraphFormatError(f'{path}:{n}: FIX: {tok!r} is not a vertex id '
                                       f'(an integer in [0, 2^53))')
            ids.append(int(tok))
            lines.append(n)
    return np.asarray(ids, np.int64), np.asarray(lines, np.int64)
