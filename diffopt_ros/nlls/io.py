"""Read g2o and TORO pose-graph files; write g2o.

Supported lines: ``VERTEX_SE2 id x y theta``, ``EDGE_SE2 i j dx dy dtheta`` + 6 information
entries (upper triangle, row-major), TORO ``VERTEX2``/``EDGE2`` (information order
``xx xy yy tt xt yt``), ``VERTEX_SE3:QUAT id x y z qx qy qz qw``, ``EDGE_SE3:QUAT i j x y z qx qy
qz qw`` + 21 entries (upper triangle, translation first), TORO ``VERTEX3 id x y z roll pitch
yaw`` and ``EDGE3 i j x y z roll pitch yaw`` + 21 entries (upper triangle, read as GTSAM does:
rotation first). Rotations from roll-pitch-yaw are ``Rz(yaw) Ry(pitch) Rx(roll)``. Other tags
(``FIX``, landmarks) are ignored. Vertices missing from the file are initialized by composing
edge measurements from known vertices (the first vertex at the identity), which is how GTSAM's
reference results for ``sphere2500`` are obtained.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffopt_ros.lie import SE2, SE3
from diffopt_ros.lie.so3 import rpy_to_matrix


class GraphFormatError(ValueError):
    """A malformed line in a pose-graph file; the message starts with ``file:line:``."""


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
    """

    group: type
    ids: torch.Tensor
    poses: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    measurements: torch.Tensor
    information: torch.Tensor


_COUNTS = {'VERTEX_SE2': 4, 'VERTEX2': 4, 'EDGE_SE2': 11, 'EDGE2': 11,
           'VERTEX_SE3:QUAT': 8, 'VERTEX3': 7, 'EDGE_SE3:QUAT': 30, 'EDGE3': 29}


def _upper(values: np.ndarray, d: int) -> np.ndarray:
    """Symmetric ``(E, d, d)`` from row-major upper triangles ``(E, d (d+1) / 2)``."""
    m = np.zeros((len(values), d, d))
    r, c = np.triu_indices(d)
    m[:, r, c] = values
    m[:, c, r] = values
    return m


def read_graph(path: str | Path, dtype: torch.dtype = torch.float64) -> PoseGraphData:
    """Parse a g2o/TORO file (2D or 3D, not mixed) into a :class:`PoseGraphData`."""
    path = Path(path)
    vertices: dict[int, tuple[str, list[float]]] = {}
    edges: dict[str, list[list[float]]] = {}
    kinds = set()
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0].startswith('#') or parts[0] not in _COUNTS:
                continue
            tag = parts[0]
            want = _COUNTS[tag]
            if len(parts) - 1 < want:
                raise GraphFormatError(f'{path}:{lineno}: {tag} needs {want} numbers, got {len(parts) - 1}')
            try:
                nums = [float(x) for x in parts[1:want + 1]]
            except ValueError as exc:
                raise GraphFormatError(f'{path}:{lineno}: {tag}: {exc}') from None
            if not all(np.isfinite(nums)):
                raise GraphFormatError(f'{path}:{lineno}: {tag}: non-finite number')
            kinds.add('2d' if tag in ('VERTEX_SE2', 'VERTEX2', 'EDGE_SE2', 'EDGE2') else '3d')
            if tag.startswith('VERTEX'):
                vertices[int(nums[0])] = (tag, nums[1:])
            else:
                if nums[0] != int(nums[0]) or nums[1] != int(nums[1]):
                    raise GraphFormatError(f'{path}:{lineno}: {tag}: vertex ids must be integers')
                edges.setdefault(tag, []).append(nums)
    if len(kinds) != 1:
        raise GraphFormatError(f'{path}: ' + ('no vertices or edges found' if not kinds
                                              else 'mixes 2D and 3D elements'))
    planar = kinds == {'2d'}
    group = SE2 if planar else SE3
    d = group.dof
    ij, meas, info = [], [], []
    for tag, rows in edges.items():
        a = np.asarray(rows)
        ij.append(a[:, :2].astype(np.int64))
        if tag == 'EDGE_SE2':
            meas.append(torch.as_tensor(a[:, 2:5], dtype=dtype))
            info.append(_upper(a[:, 5:11], 3))
        elif tag == 'EDGE2':  # TORO: xx xy yy tt xt yt
            xx, xy, yy, tt, xt, yt = a[:, 5:11].T
            meas.append(torch.as_tensor(a[:, 2:5], dtype=dtype))
            info.append(_upper(np.stack((xx, xy, xt, yy, yt, tt), 1), 3))
        elif tag == 'EDGE_SE3:QUAT':
            meas.append(SE3.from_translation_quaternion(torch.as_tensor(a[:, 2:9], dtype=dtype)))
            info.append(_upper(a[:, 9:30], 6))
        else:  # EDGE3: x y z roll pitch yaw, information (rotation, translation) as GTSAM reads it
            R = rpy_to_matrix(torch.as_tensor(a[:, 5:8], dtype=dtype))
            t = torch.as_tensor(a[:, 2:5], dtype=dtype)
            meas.append(torch.cat((R, t.unsqueeze(-1)), -1))
            m = _upper(a[:, 8:29], 6)
            perm = [3, 4, 5, 0, 1, 2]
            info.append(m[:, perm][:, :, perm])
    ij = np.concatenate(ij) if ij else np.zeros((0, 2), np.int64)
    measurements = torch.cat(meas) if meas else torch.zeros(0, *group.shape, dtype=dtype)
    information = torch.as_tensor(np.concatenate(info) if info else np.zeros((0, d, d)), dtype=dtype)
    ids = sorted(set(vertices) | set(ij.reshape(-1).tolist()))
    index = {v: k for k, v in enumerate(ids)}
    poses = _vertex_poses(group, ids, vertices, ij, measurements, dtype)
    i = torch.as_tensor([index[v] for v in ij[:, 0]], dtype=torch.long)
    j = torch.as_tensor([index[v] for v in ij[:, 1]], dtype=torch.long)
    return PoseGraphData(group, torch.as_tensor(ids), poses, i, j, measurements, information)


def _vertex_poses(group, ids, vertices, ij, measurements, dtype) -> torch.Tensor:
    """Poses of all ids: from VERTEX lines, the rest by composing edges from known vertices."""
    known: dict[int, torch.Tensor] = {}
    for v, (tag, nums) in vertices.items():
        x = torch.as_tensor(nums, dtype=dtype)
        if tag in ('VERTEX_SE2', 'VERTEX2'):
            known[v] = x
        elif tag == 'VERTEX_SE3:QUAT':
            known[v] = SE3.from_translation_quaternion(x)
        else:
            known[v] = torch.cat((rpy_to_matrix(x[3:]), x[:3].unsqueeze(-1)), -1)
    if len(known) < len(ids):
        if not known:
            known[ids[0]] = group.identity(dtype=dtype)
        pending = list(range(len(ij)))
        while pending:
            left = []
            for e in pending:
                a, b = int(ij[e, 0]), int(ij[e, 1])
                if a in known and b not in known:
                    known[b] = group.compose(known[a], measurements[e])
                elif b in known and a not in known:
                    known[a] = group.compose(known[b], group.inverse(measurements[e]))
                elif a not in known:
                    left.append(e)
            if len(left) == len(pending):  # disconnected part: anchor it at the identity
                known[int(ij[left[0], 0])] = group.identity(dtype=dtype)
            pending = left
    return torch.stack([known[v] for v in ids])


def _fmt(values) -> str:
    return ' '.join(f'{float(v):.9g}' for v in values)


def write_g2o(path: str | Path, data: PoseGraphData, poses: torch.Tensor | None = None) -> None:
    """Write ``data`` (with ``poses (N, *shape)`` instead of ``data.poses`` if given) as g2o."""
    poses = (data.poses if poses is None else poses).detach().cpu().double()
    ids = data.ids.tolist()
    r, c = np.triu_indices(data.group.dof)
    info = data.information.detach().cpu().double().numpy()[:, r, c]
    lines = []
    if data.group is SE2:
        for v, p in zip(ids, poses):
            lines.append(f'VERTEX_SE2 {v} {_fmt(p)}')
        for k in range(len(data.i)):
            lines.append(f'EDGE_SE2 {ids[data.i[k]]} {ids[data.j[k]]} '
                         f'{_fmt(data.measurements[k])} {_fmt(info[k])}')
    else:
        tq = SE3.to_translation_quaternion(poses)
        mq = SE3.to_translation_quaternion(data.measurements.detach().cpu().double())
        for v, p in zip(ids, tq):
            lines.append(f'VERTEX_SE3:QUAT {v} {_fmt(p)}')
        for k in range(len(data.i)):
            lines.append(f'EDGE_SE3:QUAT {ids[data.i[k]]} {ids[data.j[k]]} {_fmt(mq[k])} {_fmt(info[k])}')
    Path(path).write_text('\n'.join(lines) + '\n')
