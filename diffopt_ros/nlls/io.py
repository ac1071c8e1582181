"""Read g2o, TORO and GTSAM pose-graph files (poses and point landmarks); write them back.

Lines are grouped by tag and each group's numbers are parsed in one vectorised call, so a file
of 80 000 lines reads in about 0.1 s. Every line must be understood: an unknown tag, a wrong
number count, a duplicate vertex, an edge to a vertex the file does not declare, a zero
quaternion or an information matrix that is not positive definite is a
:class:`GraphFormatError` whose message starts with ``file:line:``.

Tags (ids are non-negative integers below 2^53; poses and points have separate id spaces, as
GTSAM's ``L(id)`` landmark keys):

* 2D poses: ``VERTEX_SE2`` / ``VERTEX2`` / ``VERTEX id x y theta``.
* 2D pose edges ``EDGE_SE2 i j dx dy dtheta`` + information upper triangle row-major (g2o);
  ``EDGE2`` / ``EDGE`` (TORO): information in TORO order ``xx xy yy tt xt yt``, unless some line
  is not positive definite in that order while every line is in g2o order: then the whole file
  is read in g2o order (the two orders are decided per file; GTSAM's ``load2D`` decides from the
  zero pattern and agrees on every file in gtsam/Data); ``ODOMETRY`` (victoria_park): covariance
  in g2o order.
* 2D points: ``VERTEX_XY id x y``; ``EDGE_SE2_XY`` / ``LANDMARK2 pose point x y ixx ixy iyy``
  (position in the pose frame, information); ``BR pose point bearing range sigma_b sigma_r``;
  ``LANDMARK pose point x y vxx vxy vyy`` (victoria_park), converted to bearing and range with
  GTSAM's rule (sigmas ``sqrt(vxx / 10)`` rad and ``sqrt(vxx)`` m when ``vxx = vyy``, else 1 and 1).
* 3D poses: ``VERTEX_SE3:QUAT id x y z qx qy qz qw`` (quaternion normalized, as GTSAM does),
  ``VERTEX3 id x y z roll pitch yaw`` (``Rz(yaw) Ry(pitch) Rx(roll)``); edges
  ``EDGE_SE3:QUAT`` + 21 information entries (upper triangle, translation first) and
  ``EDGE3 i j x y z roll pitch yaw`` + 21 entries (read as GTSAM does: rotation first).
* 3D points: ``VERTEX_TRACKXYZ id x y z``; ``EDGE_SE3_TRACKXYZ pose point offset x y z`` + 6
  information entries, the position seen from the sensor ``PARAMS_SE3OFFSET offset x y z qx qy
  qz qw`` mounted on the pose.
* ``FIX id...``: anchor these poses (default: the first pose). ``EQUIV i j`` (TORO vertex
  equivalences): skipped, as GTSAM's loaders skip them, and reported in ``notes``.
* ``#`` starts a comment line; a UTF-8 byte-order mark is allowed.

Initial values: a file that declares no pose vertices (e.g. ``sphere2500.txt``) gets its poses by
composing edges along a breadth-first spanning tree from the first pose (at the identity), as
GTSAM's ``load2D`` does for pure odometry files; points that no vertex line declares are placed
at their first observation. Otherwise every referenced vertex must be declared.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# torch (and the Lie groups on it) is imported only once a file has been read and checked: a
# malformed file is reported without paying for the torch import


class GraphFormatError(ValueError):
    """A malformed line in a pose-graph file; the message starts with ``file:line:``."""


@dataclass
class PointEdges:
    """Pose-to-point measurements of one kind.

    Attributes:
        kind: ``'position'`` (the point in the pose frame, m) or ``'bearing_range'`` (2D:
            bearing rad, range m).
        pose, point: ``(E,)`` indices into the graph's poses and points.
        measurement: ``(E, m)``; information: ``(E, m, m)``; lines: ``(E,)`` source line numbers.
    """

    kind: str
    pose: torch.Tensor
    point: torch.Tensor
    measurement: torch.Tensor
    information: torch.Tensor
    lines: np.ndarray | None = None


@dataclass
class PoseGraphData:
    """A pose graph read from a file.

    Attributes:
        group: SE2 or SE3.
        ids: vertex ids ``(N,)`` in index order (sorted).
        poses: initial poses ``(N, *group.shape)``.
        i, j: edge endpoints ``(E,)`` as indices into ``poses``; the measurement is ``x_i^-1 x_j``.
        measurements: ``(E, *group.shape)``.
        information: ``(E, d, d)`` in this library's tangent order (SE3: translation first).
        point_ids: point landmark ids ``(M,)`` (sorted); points: ``(M, 2 or 3)`` initial values (m).
        point_edges: pose-to-point measurements, one :class:`PointEdges` per kind present.
        fixed: pose indices the file anchors with ``FIX`` (empty: none).
        notes: what the reader decided that a user should know (skipped lines, orders, guesses).
        source: the file's lines and where its vertices are, for :func:`write_solution`.
    """

    group: type
    ids: torch.Tensor
    poses: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    measurements: torch.Tensor
    information: torch.Tensor
    point_ids: torch.Tensor = field(default_factory=lambda: _empty_index())
    points: torch.Tensor | None = None
    point_edges: list[PointEdges] = field(default_factory=list)
    fixed: torch.Tensor = field(default_factory=lambda: _empty_index())
    notes: list[str] = field(default_factory=list)
    source: _Source | None = None

    @property
    def point_dim(self) -> int:
        """2 or 3 (the pose group's dimension)."""
        return 2 if self.group.dof == 3 else 3


def _empty_index():
    import torch
    return torch.zeros(0, dtype=torch.long)


@dataclass
class _Source:
    path: Path
    lines: list[str]
    pose_lines: np.ndarray    # (N,) line number of each pose's vertex line, 0 if none
    pose_tags: list[str]      # tag of each pose's vertex line ('' if none)
    point_lines: np.ndarray   # (M,)
    point_tags: list[str]


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


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    """Unit ``(R, 4) = (x, y, z, w)`` -> ``(R, 3, 3)``."""
    x, y, z, w = q.T
    return np.stack((
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)), -1).reshape(-1, 3, 3)


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _rpy_matrix(rpy: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw ``(R, 3)`` -> ``Rz(yaw) Ry(pitch) Rx(roll)`` ``(R, 3, 3)``."""
    cr, cp, cy = np.cos(rpy).T
    sr, sp, sy = np.sin(rpy).T
    return np.stack((
        cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
        sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
        -sp, cp * sr, cp * cr), -1).reshape(-1, 3, 3)


def _matrix_rpy(R: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` -> roll, pitch, yaw ``(N, 3)`` with ``R = Rz(yaw) Ry(pitch) Rx(roll)``."""
    yaw = np.arctan2(R[:, 1, 0], R[:, 0, 0])
    pitch = np.arctan2(-R[:, 2, 0], np.hypot(R[:, 0, 0], R[:, 1, 0]))
    roll = np.arctan2(R[:, 2, 1], R[:, 2, 2])
    return np.stack((roll, pitch, yaw), 1)


def _homogeneous(planar: bool, pose: np.ndarray) -> np.ndarray:
    """Poses ``(R, 3)`` (SE2) or ``(R, 3, 4)`` (SE3) -> ``(R, k, k)`` homogeneous matrices."""
    if planar:
        c, s = np.cos(pose[:, 2]), np.sin(pose[:, 2])
        m = np.zeros((len(pose), 3, 3))
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
        m[:, :2, 2] = pose[:, :2]
        m[:, 2, 2] = 1
        return m
    m = np.zeros((len(pose), 4, 4))
    m[:, :3] = pose
    m[:, 3, 3] = 1
    return m


def _from_homogeneous(planar: bool, m: np.ndarray) -> np.ndarray:
    if planar:
        return np.stack((m[:, 0, 2], m[:, 1, 2], np.arctan2(m[:, 1, 0], m[:, 0, 0])), 1)
    return m[:, :3].copy()


def _inverse_homogeneous(m: np.ndarray) -> np.ndarray:
    k = m.shape[-1] - 1
    out = np.zeros_like(m)
    Rt = m[:, :k, :k].transpose(0, 2, 1)
    out[:, :k, :k] = Rt
    out[:, :k, k] = -np.einsum('eab,eb->ea', Rt, m[:, :k, k])
    out[:, k, k] = 1
    return out


def _compose_tree(planar: bool, n: int, ij: np.ndarray, meas: np.ndarray, notes: list[str]) -> np.ndarray:
    """Poses ``(n, *shape)`` by composing edges ``ij (E, 2)`` along a spanning tree that prefers
    earlier edges (a minimum spanning tree with the line order as weight: the odometry chain when
    it comes first, as in GTSAM's file-order initialization), from the lowest index of each
    connected part (at the identity). Compositions along the tree by pointer jumping:
    log2(depth) batched matrix products."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree

    k = 3 if planar else 4
    T = np.broadcast_to(np.eye(k), (n, k, k)).copy()
    if not len(ij):
        return _from_homogeneous(planar, T)
    lo, hi = ij.min(1), ij.max(1)
    pair = lo * n + hi
    _, first = np.unique(pair, return_index=True)  # earliest edge of each vertex pair
    first = first[lo[first] != hi[first]]
    weight = coo_matrix((first + 1.0, (lo[first], hi[first])), shape=(n, n)).tocsr()
    tree = minimum_spanning_tree(weight)
    parts, label = connected_components(tree, directed=False)
    if parts > 1:
        notes.append(f'the graph has {parts} parts not linked by edges; each part starts at the identity')
    parent = np.arange(n)
    roots = np.unique(label, return_index=True)[1]
    for r in roots:
        if (label == label[r]).sum() > 1:
            _, pred = breadth_first_order(tree, r, directed=False, return_predecessors=True)
            reached = pred >= 0
            parent[reached] = pred[reached]
    child = np.nonzero(parent != np.arange(n))[0]
    # the edge joining each child to its parent, in either direction
    M = _homogeneous(planar, meas)
    key = ij[:, 0] * n + ij[:, 1]
    order = np.argsort(key, kind='stable')
    fwd_key = parent[child] * n + child
    pos = np.minimum(np.searchsorted(key[order], fwd_key), len(key) - 1)
    forward = key[order][pos] == fwd_key
    rev_key = child * n + parent[child]
    rpos = np.minimum(np.searchsorted(key[order], rev_key), len(key) - 1)
    T[child[forward]] = M[order[pos[forward]]]
    T[child[~forward]] = _inverse_homogeneous(M[order[rpos[~forward]]])
    done = parent == np.arange(n)
    anc = parent.copy()
    while not done.all():
        todo = np.nonzero(~done)[0]
        T[todo] = T[anc[todo]] @ T[todo]
        finished = done[anc[todo]]
        anc[todo] = anc[anc[todo]]
        done[todo[finished]] = True
    return _from_homogeneous(planar, T)


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


def read_graph(path: str | Path, dtype: torch.dtype | None = None) -> PoseGraphData:
    """Parse a g2o/TORO/GTSAM file (2D or 3D, not mixed) into a :class:`PoseGraphData` of
    ``dtype`` tensors (default float64): :func:`to_tensors` of :func:`parse_graph`."""
    return to_tensors(parse_graph(path), dtype)


class ParsedGraph:
    """A checked file as numpy arrays (what :func:`parse_graph` returns; torch not needed)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def parse_graph(path: str | Path) -> ParsedGraph:
    """Read and check a file without importing torch (see the module docstring); every problem
    is a :class:`GraphFormatError` naming ``file:line``."""
    path = Path(path)
    lines = _decode(path)
    groups, raw = _tokenize(path, lines)
    notes: list[str] = []
    dims = {_TAGS[t][1] for t in groups if _TAGS[t][1]}
    if len(dims) > 1:
        first = {d: min(int(g.lines[0]) for t, g in groups.items() if _TAGS[t][1] == d) for d in dims}
        late = max(first, key=first.get)
        tag = next(t for t, g in groups.items() if int(g.lines[0]) == first[late])
        raise GraphFormatError(f'{path}:{first[late]}: {tag} is {late}D, but line {first[5 - late]} '
                               f'is {5 - late}D: a file holds one or the other')
    if not any(_TAGS[t][2] in ('pose', 'edge') for t in groups):
        raise GraphFormatError(f'{path}: no vertices or edges found (no pose vertex or pose edge line)')
    planar = dims == {2}
    d = 3 if planar else 6
    if 'EQUIV' in groups:
        g = groups['EQUIV']
        notes.append(f'skipped {len(g.lines)} EQUIV lines (TORO vertex equivalences; GTSAM skips them too), '
                     f'first at line {g.lines[0]}')

    # ---------------------------------------------------------------- pose edges
    ij, meas, info, elines = [], [], [], []
    for tag in ('EDGE_SE2', 'EDGE2', 'EDGE', 'ODOMETRY', 'EDGE_SE3:QUAT', 'EDGE3'):
        g = groups.get(tag)
        if g is None:
            continue
        a = g.values
        ij.append(_check_ids(path, g, 2))
        elines.append(g.lines)
        if tag == 'EDGE_SE2':
            meas.append(a[:, 2:5])
            info.append(_upper(a[:, 5:11], 3))
        elif tag == 'ODOMETRY':  # covariance, g2o order (victoria_park, as GTSAM reads it)
            cov = _upper(a[:, 5:11], 3)
            _require_pd(path, cov, g.lines, 'covariance')
            meas.append(a[:, 2:5])
            info.append(np.linalg.inv(cov))
        elif tag in ('EDGE2', 'EDGE'):
            xx, xy, yy, tt, xt, yt = a[:, 5:11].T
            toro = _upper(np.stack((xx, xy, xt, yy, yt, tt), 1), 3)
            g2o = _upper(a[:, 5:11], 3)
            bad_toro, bad_g2o = _not_pd(toro), _not_pd(g2o)
            use_g2o = bad_toro.any() and not bad_g2o.any()
            if use_g2o:
                notes.append(f'{tag} information read in g2o order (upper triangle, row-major): '
                             f'{int(bad_toro.sum())} of {len(a)} lines are not positive definite in '
                             f'TORO order (xx xy yy tt xt yt)')
            elif bad_toro.any():
                bad = bad_g2o if bad_g2o.sum() < bad_toro.sum() else bad_toro
                raise GraphFormatError(f'{path}:{g.lines[int(np.argmax(bad))]}: information matrix is '
                                       f'not positive definite (in TORO and in g2o order)')
            meas.append(a[:, 2:5])
            info.append(g2o if use_g2o else toro)
        elif tag == 'EDGE_SE3:QUAT':
            q = _quaternions(path, g, a[:, 5:9])
            m = np.zeros((len(a), 3, 4))
            m[:, :, :3] = _quat_matrix(q)
            m[:, :, 3] = a[:, 2:5]
            meas.append(m)
            info.append(_upper(a[:, 9:30], 6))
        else:  # EDGE3: x y z roll pitch yaw, information (rotation, translation) as GTSAM reads it
            m = np.zeros((len(a), 3, 4))
            m[:, :, :3] = _rpy_matrix(a[:, 5:8])
            m[:, :, 3] = a[:, 2:5]
            meas.append(m)
            perm = [3, 4, 5, 0, 1, 2]
            info.append(_upper(a[:, 8:29], 6)[:, perm][:, :, perm])
    shape = (3,) if planar else (3, 4)
    ij = np.concatenate(ij) if ij else np.zeros((0, 2), np.int64)
    meas = np.concatenate(meas) if meas else np.zeros((0, *shape))
    info = np.concatenate(info) if info else np.zeros((0, d, d))
    elines = np.concatenate(elines) if elines else np.zeros(0, np.int64)
    _require_pd(path, info, elines)

    # ---------------------------------------------------------------- pose-point edges
    obs = _observations(path, groups, planar)

    # ---------------------------------------------------------------- poses
    pose_tags = ('VERTEX_SE2', 'VERTEX2', 'VERTEX') if planar else ('VERTEX_SE3:QUAT', 'VERTEX3')
    decl = _declared(path, groups, pose_tags, 'vertex')
    point_tags = ('VERTEX_XY',) if planar else ('VERTEX_TRACKXYZ',)
    pdecl = _declared(path, groups, point_tags, 'point')
    if decl is None and pdecl is not None:  # points declared: so must every pose be
        empty = np.zeros(0, np.int64)
        decl = (empty, empty, [], empty, empty, [])
    referenced = [ij.reshape(-1)] + [o['pose'] for o in obs]
    fixed_ids, fixed_lines = _fix_ids(path, raw.get('FIX', []))
    if decl is not None:
        ids, vlines, vtags, which, row, vgroups = decl
        values = np.zeros((len(ids), *shape))
        for k, g in enumerate(vgroups):
            sel = which == k
            a = g.values[row[sel]]
            if g.tag in ('VERTEX_SE2', 'VERTEX2', 'VERTEX'):
                values[sel] = a[:, 1:4]
            elif g.tag == 'VERTEX_SE3:QUAT':
                q = _quaternions(path, _Group(g.tag, g.lines[row[sel]], a), a[:, 4:8])
                values[sel, :, :3] = _quat_matrix(q)
                values[sel, :, 3] = a[:, 1:4]
            else:
                values[sel, :, :3] = _rpy_matrix(a[:, 4:7])
                values[sel, :, 3] = a[:, 1:4]
        i_idx = _index_of(path, ids, ij, elines, 'the edge', 'vertex')
        for o in obs:
            o['pose_index'] = _index_of(path, ids, o['pose'], o['lines'], o['tag'], 'vertex')
        pose_lines, pose_vtags = np.asarray(vlines), vtags
    else:
        ids = np.unique(np.concatenate(referenced))
        i_idx = np.searchsorted(ids, ij)
        for o in obs:
            o['pose_index'] = np.searchsorted(ids, o['pose'])
        notes.append(f'no pose vertex lines: initial poses composed from the edges, pose {ids[0]} '
                     f'at the identity')
        values = _compose_tree(planar, len(ids), i_idx, meas, notes)
        pose_lines, pose_vtags = np.zeros(len(ids), np.int64), [''] * len(ids)
    fixed = (_index_of(path, ids, fixed_ids, fixed_lines, 'FIX', 'vertex') if len(fixed_ids)
             else np.zeros(0, np.int64))

    # ---------------------------------------------------------------- points
    pdim = 2 if planar else 3
    if pdecl is None and len(pose_lines) and pose_lines.any():
        # a file that declares its vertices declares them all; only bearing-range sightings
        # place their points (GTSAM's load2D does the same for BR and LANDMARK lines)
        for o in obs:
            if o['kind'] == 'position':
                raise GraphFormatError(f"{path}:{o['lines'][0]}: {o['tag']} refers to point {o['point'][0]}, "
                                       f'which no vertex line declares')
    if pdecl is not None:
        pids, plines, ptags, pwhich, prow, pgroups = pdecl
        points = np.concatenate([g.values[prow[pwhich == k]][:, 1:] for k, g in enumerate(pgroups)])
        for o in obs:
            o['point_index'] = _index_of(path, pids, o['point'], o['lines'], o['tag'], 'point')
    else:
        pids = np.unique(np.concatenate([o['point'] for o in obs])) if obs else np.zeros(0, np.int64)
        for o in obs:
            o['point_index'] = np.searchsorted(pids, o['point'])
        points = _first_sightings(planar, values, obs, len(pids))
        if len(pids):
            notes.append(f'no point vertex lines: {len(pids)} points placed at their first observation')
        plines, ptags = np.zeros(len(pids), np.int64), [''] * len(pids)

    source = _Source(path, lines, np.asarray(pose_lines), list(pose_vtags), np.asarray(plines), list(ptags))
    return ParsedGraph(planar=planar, ids=ids, values=values, i_idx=i_idx, meas=meas, info=info,
                       pids=pids, points=points.reshape(-1, pdim), obs=obs, fixed=fixed, notes=notes,
                       source=source)


def to_tensors(parsed: ParsedGraph, dtype: torch.dtype | None = None) -> PoseGraphData:
    """The :class:`PoseGraphData` of a :func:`parse_graph` result, ``dtype`` (default float64)."""
    import torch

    from diffopt_ros.lie import SE2, SE3
    if dtype is None:
        dtype = torch.float64
    g = parsed
    obs = g.obs
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
    point_edges = []
    for kind in ('position', 'bearing_range'):
        sel = [o for o in obs if o['kind'] == kind]
        if sel:
            point_edges.append(PointEdges(
                kind, torch.as_tensor(np.concatenate([o['pose_index'] for o in sel])),
                torch.as_tensor(np.concatenate([o['point_index'] for o in sel])),
                as_t(np.concatenate([o['measurement'] for o in sel])),
                as_t(np.concatenate([o['information'] for o in sel])),
                np.concatenate([o['lines'] for o in sel])))
    return PoseGraphData(SE2 if g.planar else SE3, torch.as_tensor(g.ids), as_t(g.values),
                         torch.as_tensor(g.i_idx[:, 0]), torch.as_tensor(g.i_idx[:, 1]), as_t(g.meas),
                         as_t(g.info), point_ids=torch.as_tensor(g.pids, dtype=torch.long),
                         points=as_t(g.points), point_edges=point_edges,
                         fixed=torch.as_tensor(g.fixed, dtype=torch.long), notes=g.notes, source=g.source)


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


def _observations(path: Path, groups: dict[str, _Group], planar: bool) -> list[dict]:
    """Pose-to-point measurements of every tag: dicts of pose/point ids, measurement, information."""
    out = []
    for tag in ('EDGE_SE2_XY', 'LANDMARK2', 'BR', 'LANDMARK', 'EDGE_SE3_TRACKXYZ'):
        g = groups.get(tag)
        if g is None:
            continue
        a = g.values
        ids = _check_ids(path, g, _TAGS[tag][3])
        if tag in ('EDGE_SE2_XY', 'LANDMARK2'):
            kind, z, info = 'position', a[:, 2:4], _upper(a[:, 4:7], 2)
        elif tag == 'BR':
            sig = a[:, 4:6]
            bad = (sig <= 0).any(1)
            if bad.any():
                raise GraphFormatError(f'{path}:{g.lines[int(np.argmax(bad))]}: information matrix is not '
                                       f'positive definite (BR standard deviations must be > 0)')
            info = np.zeros((len(a), 2, 2))
            info[:, 0, 0], info[:, 1, 1] = 1 / sig[:, 0] ** 2, 1 / sig[:, 1] ** 2
            kind, z = 'bearing_range', a[:, 2:4]
        elif tag == 'LANDMARK':  # GTSAM's conversion of a victoria_park sighting to bearing-range
            lx, ly, v1, v3 = a[:, 2], a[:, 3], a[:, 4], a[:, 6]
            if (v1 <= 0).any():
                r = int(np.argmax(v1 <= 0))
                raise GraphFormatError(f'{path}:{g.lines[r]}: covariance matrix is not positive definite')
            iso = np.abs(v1 - v3) < 1e-4
            sb = np.where(iso, np.sqrt(v1 / 10.0), 1.0)
            sr = np.where(iso, np.sqrt(v1), 1.0)
            z = np.stack((np.arctan2(ly, lx), np.hypot(lx, ly)), 1)
            info = np.zeros((len(a), 2, 2))
            info[:, 0, 0], info[:, 1, 1] = 1 / sb ** 2, 1 / sr ** 2
            kind = 'bearing_range'
        else:  # EDGE_SE3_TRACKXYZ pose point offset x y z + 6 information entries
            offsets = _offsets(path, groups)
            k = np.searchsorted(offsets[0], ids[:, 2])
            kc = np.minimum(k, max(len(offsets[0]) - 1, 0))
            ok = np.zeros(len(a), bool)
            if len(offsets[0]):
                ok = (k < len(offsets[0])) & (offsets[0][kc] == ids[:, 2])
            if not ok.all():
                r = int(np.argmin(ok))
                raise GraphFormatError(f'{path}:{g.lines[r]}: EDGE_SE3_TRACKXYZ refers to PARAMS_SE3OFFSET '
                                       f'{ids[r, 2]}, which the file does not declare')
            Ro, to = offsets[1][kc], offsets[2][kc]
            lam = _upper(a[:, 6:12], 3)
            _require_pd(path, lam, g.lines)
            # the point in the sensor frame z = Ro^T (q - to): the same residual norm as
            # q - (to + Ro z) with information Ro Lambda Ro^T, q the point in the pose frame
            z = to + np.einsum('eab,eb->ea', Ro, a[:, 3:6])
            info = Ro @ lam @ Ro.transpose(0, 2, 1)
            kind = 'position'
        _require_pd(path, info, g.lines)
        out.append(dict(tag=tag, kind=kind, pose=ids[:, 0], point=ids[:, 1], lines=g.lines,
                        measurement=z, information=info))
    return out


def _offsets(path: Path, groups: dict[str, _Group]):
    g = groups.get('PARAMS_SE3OFFSET')
    if g is None:
        return np.zeros(0, np.int64), np.zeros((0, 3, 3)), np.zeros((0, 3))
    ids = _check_ids(path, g, 1)[:, 0]
    order = np.argsort(ids, kind='stable')
    dup = np.nonzero(ids[order][1:] == ids[order][:-1])[0]
    if len(dup):
        raise GraphFormatError(f'{path}:{g.lines[order[dup[0] + 1]]}: PARAMS_SE3OFFSET {ids[order[dup[0]]]} '
                               f'is already declared at line {g.lines[order[dup[0]]]}')
    R = _quat_matrix(_quaternions(path, g, g.values[:, 4:8]))
    return ids[order], R[order], g.values[order, 1:4]


def _first_sightings(planar: bool, poses: np.ndarray, obs: list[dict], m: int) -> np.ndarray:
    """Each point at its first observation (by line): pose * local position."""
    dim = 2 if planar else 3
    points = np.zeros((m, dim))
    if not m:
        return points
    lines = np.concatenate([o['lines'] for o in obs])
    pidx = np.concatenate([o['point_index'] for o in obs])
    local = []
    for o in obs:
        z = o['measurement']
        if o['kind'] == 'bearing_range':
            z = np.stack((z[:, 1] * np.cos(z[:, 0]), z[:, 1] * np.sin(z[:, 0])), 1)
        local.append(z)
    local = np.concatenate(local)
    pose = poses[np.concatenate([o['pose_index'] for o in obs])]
    order = np.argsort(lines, kind='stable')
    _, first = np.unique(pidx[order], return_index=True)
    sel = order[first]
    T = _homogeneous(planar, pose[sel])
    points[pidx[sel]] = np.einsum('eab,eb->ea', T[:, :dim, :dim], local[sel]) + T[:, :dim, dim]
    return points


# ------------------------------------------------------------------------------------- writing
def _fmt(values, digits: int = 9) -> str:
    return ' '.join(f'{float(v):.{digits}g}' for v in values)


def _vertex_line(tag: str, vid: int, pose: np.ndarray, planar: bool) -> str:
    import torch

    from diffopt_ros.lie import SE3
    if planar:
        return f'{tag or "VERTEX_SE2"} {vid} {_fmt(pose, 17)}'
    if tag == 'VERTEX3':
        return f'VERTEX3 {vid} {_fmt(pose[:, 3], 17)} {_fmt(_matrix_rpy(pose[None, :, :3])[0], 17)}'
    tq = _np(SE3.to_translation_quaternion(torch.from_numpy(pose)))
    return f'VERTEX_SE3:QUAT {vid} {_fmt(tq, 17)}'


def write_solution(path: str | Path, data: PoseGraphData, poses: torch.Tensor | None = None,
                   points: torch.Tensor | None = None) -> None:
    """Write ``data``'s source file with the vertices at ``poses (N, *shape)`` and ``points
    (M, 2 or 3)`` (default: the data's own values): every line of the source is kept (same
    order, same tags; vertex lines get the new values), and vertices the source did not declare
    are appended as ``VERTEX_SE2`` / ``VERTEX_SE3:QUAT`` / ``VERTEX_XY`` / ``VERTEX_TRACKXYZ``
    lines. Data without a source file is written with :func:`write_g2o`."""
    if data.source is None:
        write_g2o(path, data, poses, points)
        return
    planar = data.group.dof == 3
    poses = _np(data.poses if poses is None else poses)
    points = _np(data.points if points is None else points) if data.points is not None else np.zeros((0, 2))
    src = data.source
    out = list(src.lines)
    extra = []
    ids, pids = data.ids.tolist(), data.point_ids.tolist()
    for k, (n, tag) in enumerate(zip(src.pose_lines.tolist(), src.pose_tags)):
        line = _vertex_line(tag, ids[k], poses[k], planar)
        if n:
            out[n - 1] = line + ('\r' if out[n - 1].endswith('\r') else '')
        else:
            extra.append(line)
    ptag = 'VERTEX_XY' if planar else 'VERTEX_TRACKXYZ'
    for k, n in enumerate(src.point_lines.tolist()):
        line = f'{ptag} {pids[k]} {_fmt(points[k], 17)}'
        if n:
            out[n - 1] = line + ('\r' if out[n - 1].endswith('\r') else '')
        else:
            extra.append(line)
    if out and out[-1] == '':
        out.pop()
    Path(path).write_text('\n'.join(out + extra) + '\n')


def write_g2o(path: str | Path, data: PoseGraphData, poses: torch.Tensor | None = None,
              points: torch.Tensor | None = None) -> None:
    """Write ``data`` (with ``poses (N, *shape)`` / ``points (M, dim)`` instead of the data's
    values if given) as g2o: ``VERTEX_SE2``/``EDGE_SE2`` or ``VERTEX_SE3:QUAT``/``EDGE_SE3:QUAT``,
    points as ``VERTEX_XY``/``EDGE_SE2_XY`` (2D), ``VERTEX_TRACKXYZ``/``EDGE_SE3_TRACKXYZ`` with an
    identity ``PARAMS_SE3OFFSET 0`` (3D), bearing-range sightings as ``BR`` lines (2D, GTSAM's
    tag, standard deviations from the diagonal of the information)."""
    import torch

    from diffopt_ros.lie import SE3
    poses = _np(data.poses if poses is None else poses)
    ids = data.ids.tolist()
    r, c = np.triu_indices(data.group.dof)
    info = _np(data.information)[:, r, c]
    lines = []
    planar = data.group.dof == 3
    if planar:
        for v, p in zip(ids, poses):
            lines.append(f'VERTEX_SE2 {v} {_fmt(p)}')
        for k in range(len(data.i)):
            lines.append(f'EDGE_SE2 {ids[data.i[k]]} {ids[data.j[k]]} '
                         f'{_fmt(data.measurements[k])} {_fmt(info[k])}')
    else:
        tq = _np(SE3.to_translation_quaternion(torch.from_numpy(poses)))
        mq = _np(SE3.to_translation_quaternion(data.measurements.detach().cpu().double()))
        for v, p in zip(ids, tq):
            lines.append(f'VERTEX_SE3:QUAT {v} {_fmt(p)}')
        for k in range(len(data.i)):
            lines.append(f'EDGE_SE3:QUAT {ids[data.i[k]]} {ids[data.j[k]]} {_fmt(mq[k])} {_fmt(info[k])}')
    if data.points is not None and len(data.points):
        pts = _np(data.points if points is None else points)
        pids = data.point_ids.tolist()
        lines += [f'{"VERTEX_XY" if planar else "VERTEX_TRACKXYZ"} {v} {_fmt(p)}' for v, p in zip(pids, pts)]
        if not planar:
            lines.append('PARAMS_SE3OFFSET 0 0 0 0 0 0 0 1')
        for pe in data.point_edges:
            z, lam = _np(pe.measurement), _np(pe.information)
            rr, cc = np.triu_indices(lam.shape[-1])
            for k in range(len(pe.pose)):
                a, b = ids[int(pe.pose[k])], pids[int(pe.point[k])]
                if pe.kind == 'bearing_range':
                    sig = 1 / np.sqrt(np.diagonal(lam[k]))
                    lines.append(f'BR {a} {b} {_fmt(z[k])} {_fmt(sig)}')
                elif planar:
                    lines.append(f'EDGE_SE2_XY {a} {b} {_fmt(z[k])} {_fmt(lam[k][rr, cc])}')
                else:
                    lines.append(f'EDGE_SE3_TRACKXYZ {a} {b} 0 {_fmt(z[k])} {_fmt(lam[k][rr, cc])}')
    Path(path).write_text('\n'.join(lines) + '\n')
