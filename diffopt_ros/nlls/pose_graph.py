"""The objective of a pose-graph file: what ``diffopt-ros pgo`` and ``bench/pgo_files.py`` solve.

:func:`objective_from_data` turns the data of :func:`~diffopt_ros.nlls.io.read_graph` (g2o /
TORO files: poses, optional points, edges with information) into an :class:`Objective`. Online
SLAM assembles its pose graph in :mod:`diffopt_ros.slam.graph` (one assembly for its
incremental and batch solvers).
"""
from __future__ import annotations

import torch

from diffopt_ros.nlls.factors import Between, Prior
from diffopt_ros.nlls.objective import Objective
from diffopt_ros.nlls.variables import Variable


def objective_from_data(data, device: str | torch.device = 'cpu', dtype: torch.dtype | None = None,
                        anchor_information: float = 1e6):
    """The objective of a graph read by :func:`~diffopt_ros.nlls.io.read_graph`.

    Poses, points (when the file has any), a prior of information ``anchor_information * I``
    at the initial value of each ``FIX`` pose (the first pose when the file fixes none, as
    GTSAM's examples anchor it), one :class:`Between` for the pose edges and one factor per
    kind of pose-point edge (:class:`PoseToPoint`, :class:`BearingRangeFactor`).

    Returns:
        ``(objective, poses, points)``: the :class:`Objective` and its two :class:`Variable`\\ s
        (``points`` None when the file has no points).
    """
    from diffopt_ros.nlls.factors import BearingRangeFactor, PoseToPoint
    from diffopt_ros.nlls.variables import Vector

    dtype = data.poses.dtype if dtype is None else dtype
    as_t = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    poses0 = as_t(data.poses)
    poses = Variable(data.group, poses0, name='poses')
    d = data.group.dof
    anchors = data.fixed if len(data.fixed) else torch.zeros(1, dtype=torch.long)
    factors = [Prior(poses, anchors, poses0[anchors.to(poses0.device)],
                     anchor_information * torch.eye(d, dtype=dtype, device=device), name='anchor')]
    if len(data.i):
        factors.append(Between(poses, data.i, data.j, as_t(data.measurements), as_t(data.information),
                               name='between'))
    points = None
    if data.points is not None and len(data.points):
        points = Variable(Vector(data.points.shape[-1]), as_t(data.points), name='points')
        for pe in data.point_edges:
            cls = PoseToPoint if pe.kind == 'position' else BearingRangeFactor
            factors.append(cls(poses, points, pe.pose, pe.point, as_t(pe.measurement),
                               as_t(pe.information), name=pe.kind))
    return Objective(factors), poses, points
