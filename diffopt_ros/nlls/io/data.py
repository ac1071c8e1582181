"""What a pose-graph file becomes: :class:`ParsedGraph` (numpy, checked) and
:class:`PoseGraphData` (torch tensors), and the error every reading problem raises."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


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


class ParsedGraph:
    """A checked file as numpy arrays (what :func:`parse_graph` returns; torch not needed)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


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
