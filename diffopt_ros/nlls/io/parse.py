"""Reading a pose-graph file: :func:`parse_graph` (checked numpy arrays, without torch) and
:func:`read_graph` (tensors). The formats are described in :mod:`diffopt_ros.nlls.io`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffopt_ros.nlls.io.data import GraphFormatError, ParsedGraph, PoseGraphData, _Source, to_tensors
from diffopt_ros.nlls.io.geometry import _compose_tree, _first_sightings, _quat_matrix, _rpy_matrix
from diffopt_ros.nlls.io.tokens import (
    _TAGS,
    _check_ids,
    _declared,
    _decode,
    _fix_ids,
    _Group,
    _index_of,
    _not_pd,
    _quaternions,
    _require_pd,
    _tokenize,
    _upper,
)

if TYPE_CHECKING:
    import torch


def read_graph(path: str | Path, dtype: torch.dtype | None = None) -> PoseGraphData:
    """Parse a g2o/TORO/GTSAM file (2D or 3D, not mixed) into a :class:`PoseGraphData` of
    ``dtype`` tensors (default float64): :func:`to_tensors` of :func:`parse_graph`."""
    return to_tensors(parse_graph(path), dtype)


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
            bad_toro = _not_pd(toro)
            bad_g2o = _not_pd(g2o) if bad_toro.any() else bad_toro
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
        if tag not in ('EDGE2', 'EDGE'):  # their information is checked above, in the order read
            _require_pd(path, info[-1], g.lines)
    shape = (3,) if planar else (3, 4)
    ij = np.concatenate(ij) if ij else np.zeros((0, 2), np.int64)
    meas = np.concatenate(meas) if meas else np.zeros((0, *shape))
    info = np.concatenate(info) if info else np.zeros((0, d, d))
    elines = np.concatenate(elines) if elines else np.zeros(0, np.int64)

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
