"""Writing pose graphs: a solution into its source file (:func:`write_solution`) or a graph as
g2o (:func:`write_g2o`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffopt_ros.nlls.io.data import PoseGraphData
from diffopt_ros.nlls.io.geometry import _matrix_rpy, _np

if TYPE_CHECKING:
    import torch


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
