"""The SLAM pose graph as plain data, and the estimator weights that learning tunes.

:class:`SlamGraph` is what :class:`~diffopt_ros.slam.system.SlamSystem` built online
(keyframe stamps, raw odometry poses, current estimate, edges with measurements and kinds), so
offline learning can rebuild the same least-squares problem with learnable weights
(:func:`edge_information`). :class:`SlamWeights` are the ``slam_node`` parameters of
``docs/CONTRACTS.md`` (``weights.odom_xy``, ``weights.odom_yaw``, ``weights.scan_xy``,
``weights.scan_yaw``, ``robust.scale``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import Between, Huber, Objective, Prior, Variable
from diffopt_ros.nlls.io import PoseGraphData

EDGE_KINDS = ('odom', 'scan', 'loop')
"""Edge kinds; ``SlamGraph.kinds`` holds indices into this tuple."""
ODOM, SCAN, LOOP = range(3)


@dataclass(frozen=True)
class SlamWeights:
    """Information (inverse variance) of the pose-graph factors, and the robust-loss scale.

    Attributes:
        odom_xy: odometry between-factors, x and y (1/m^2).
        odom_yaw: odometry between-factors, yaw (1/rad^2).
        scan_xy: scan-matching between-factors, consecutive keyframes and loop closures (1/m^2).
        scan_yaw: scan-matching between-factors, yaw (1/rad^2).
        robust_scale: robust (Huber) loss scale of scan and loop factors, in whitened residual
            units (standard deviations).

    The defaults (per keyframe edge: odometry sigma 2 cm and 1.1 deg, scan match 1 cm and
    0.3 deg) are a middle ground between a real lidar and the simulator, where the measured
    errors are smaller still (odometry 1.3 cm / 0.7 deg, ICP 1-2 mm / 0.05 deg on the loop
    world); offline learning tunes them to the data.
    """

    odom_xy: float = 2500.0
    odom_yaw: float = 2500.0
    scan_xy: float = 1.0e4
    scan_yaw: float = 4.0e4
    robust_scale: float = 1.0

    PARAMETER_NAMES = {'odom_xy': 'weights.odom_xy', 'odom_yaw': 'weights.odom_yaw',
                       'scan_xy': 'weights.scan_xy', 'scan_yaw': 'weights.scan_yaw',
                       'robust_scale': 'robust.scale'}

    @classmethod
    def from_params(cls, params: dict) -> SlamWeights:
        """From ROS parameter names (``weights.odom_xy``, ..., ``robust.scale``); missing = default."""
        return cls(**{f.name: float(params[cls.PARAMETER_NAMES[f.name]]) for f in fields(cls)
                      if cls.PARAMETER_NAMES[f.name] in params})

    def as_params(self) -> dict[str, float]:
        """``{ROS parameter name: value}`` (the learned-YAML keys)."""
        return {self.PARAMETER_NAMES[f.name]: float(getattr(self, f.name)) for f in fields(self)}

    def information_by_kind(self, dtype: torch.dtype = torch.float64,
                            device: torch.device | str | None = None) -> Tensor:
        """``(3, 3)``: row ``k`` is the information diagonal ``(xx, yy, yaw)`` of edge kind ``k``."""
        return information_by_kind(*(torch.tensor(getattr(self, name), dtype=dtype, device=device)
                                     for name in ('odom_xy', 'odom_yaw', 'scan_xy', 'scan_yaw')))


def information_by_kind(odom_xy: Tensor, odom_yaw: Tensor, scan_xy: Tensor, scan_yaw: Tensor
                        ) -> Tensor:
    """``(3, 3)`` information diagonals per edge kind (odom, scan, loop) from scalar weights.

    Differentiable in the weights (learning passes ``nn.Parameter`` s, e.g. ``exp`` of a log).
    Loop closures are scan matches, so they use the scan weights.
    """
    odom = torch.stack((odom_xy, odom_xy, odom_yaw))
    scan = torch.stack((scan_xy, scan_xy, scan_yaw))
    return torch.stack((odom, scan, scan))


UNMEASURED_FRACTION = 1e-4
"""Fraction of its information that a scan or loop edge keeps along a direction its scan match
did not measure (:func:`edge_information`): the odometry's, 2500 1/m^2 by default, then
outweighs the scan's there (1 1/m^2 at the default ``scan_xy``) by three orders of magnitude,
while the matrix stays positive definite for the Cholesky factorisation of the solvers."""


def edge_information(kinds: Tensor, by_kind: Tensor, degenerate: Tensor) -> Tensor:
    """``(E, 3, 3)`` information matrix of each edge.

    An edge of kind ``k`` starts from the diagonal ``by_kind[k]``; each direction ``v`` (a
    column of ``degenerate``, in the edge's tangent coordinates) is then marginalised out: the
    information becomes the Schur complement ``L - L v v^T L / (v^T L v)`` (what the edge
    tells about the residual with its component along ``v`` left free), keeping
    :data:`UNMEASURED_FRACTION` of ``L v v^T L / (v^T L v)``. Along ``v`` the edge then weighs
    ``UNMEASURED_FRACTION v^T L v``; a direction ``u`` with ``u^T L v = 0`` keeps ``u^T L u``.
    Several directions are marginalised one after the other (the block Schur complement).

    Args:
        kinds: ``(E,)`` index into :data:`EDGE_KINDS`.
        by_kind: ``(3, 3)`` information diagonals per kind (:func:`information_by_kind`);
            the result is differentiable in it.
        degenerate: ``(E, 3, 3)``: columns are the directions the edge's scan match did not
            measure (:attr:`~diffopt_ros.slam.icp.ScanMatch.degenerate_directions`), zero
            columns none (all zero for odometry edges).
    """
    information = torch.diag_embed(by_kind[kinds])
    for column in range(degenerate.shape[-1]):
        v = degenerate[..., column:column + 1]                             # (E, 3, 1)
        lv = information @ v
        vlv = (v.mT @ lv).squeeze(-1)                                      # (E, 1)
        unused = (v.square().sum(-2) == 0).to(vlv.dtype)                  # zero column: no change
        information = information - (1 - UNMEASURED_FRACTION) * (lv @ lv.mT) / (vlv + unused)[..., None]
    return 0.5 * (information + information.mT)


def robust_edges(kinds: Tensor) -> Tensor:
    """``(E,)`` bool: the edges that get the Huber loss (scan matches and loop closures; an
    odometry edge is plain least squares)."""
    return kinds != ODOM


@dataclass
class SlamGraph:
    """A pose graph as tensors (all on one device; poses float, indices int64).

    Attributes:
        stamps: ``(K,)`` keyframe stamps (s).
        odom_poses: ``(K, 3)`` raw odometry ``(x, y, yaw)`` at the keyframes (odom frame; the
            map frame starts equal to it), the initial guess of a batch solve.
        estimate: ``(K, 3)`` current SLAM estimate ``(x, y, yaw)`` in the map frame.
        edges: ``(E, 2)`` keyframe indices ``(i, j)``.
        measurements: ``(E, 3)`` measured ``T_i^-1 T_j`` as ``(x, y, yaw)`` (m, rad).
        kinds: ``(E,)`` index into :data:`EDGE_KINDS`.
        fitness: ``(E,)`` scan-match inlier ratio (1 for odometry edges).
        degenerate: ``(E, 3, 3)``: columns are the directions, in the edge's tangent
            coordinates, that its scan match did not measure (zero columns: none; see
            :func:`edge_information`).
    """

    stamps: Tensor
    odom_poses: Tensor
    estimate: Tensor
    edges: Tensor
    measurements: Tensor
    kinds: Tensor
    fitness: Tensor
    degenerate: Tensor

    def save(self, path: str | Path) -> Path:
        """Write a ``.npz`` (no pickles) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f.name: getattr(self, f.name).detach().cpu().numpy() for f in fields(self)})
        return path

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float64,
             device: torch.device | str = 'cpu') -> SlamGraph:
        """Read a file written by :meth:`save` (one without ``degenerate`` has no degenerate
        direction on any edge)."""
        with np.load(path, allow_pickle=False) as data:
            values = {}
            for f in fields(cls):
                array = torch.from_numpy(data[f.name] if f.name in data else
                                         np.zeros((len(data['kinds']), 3, 3))).to(device)
                values[f.name] = array if f.name in ('edges', 'kinds') else array.to(dtype)
        return cls(**values)

    def edges_of(self, kind: str) -> Tensor:
        """``(E_kind, 2)`` the edges of one kind."""
        return self.edges[self.kinds == EDGE_KINDS.index(kind)]


PRIOR_INFORMATION = 1e6
"""Information (1/m^2, 1/rad^2) of the prior that anchors the first keyframe (the gauge)."""

# The pose-graph problem of a SlamGraph is assembled in one place for both of its solvers:
# the anchor prior (PRIOR_INFORMATION at keyframe 0's odometry pose), edge information by kind
# less the directions a scan match did not measure (edge_information) and the Huber loss on
# scan and loop edges (robust_edges) make the batch, differentiable objective here
# (build_objective) and the factors of the online incremental solver
# (diffopt_ros.slam.backend.PoseGraphBackend).


def build_objective(graph: SlamGraph, by_kind: Tensor, robust_scale: float | Tensor,
                    initial: Tensor | None = None) -> tuple[Objective, Variable]:
    """The full pose-graph least-squares problem of ``graph`` with the given weights.

    Factors: a prior anchoring keyframe 0 at its odometry pose (the map frame starts at the
    odom frame), a ``Between`` factor per odometry edge, and ``Between`` factors with a Huber
    loss of scale ``robust_scale`` for scan-matching and loop-closure edges; each edge's
    information from :func:`edge_information`.

    Args:
        graph: the graph.
        by_kind: ``(3, 3)`` information diagonals per edge kind (see :func:`information_by_kind`);
            may require grad (learning the weights through the solver).
        robust_scale: Huber scale (whitened units), float or scalar tensor (learnable).
        initial: ``(K, 3)`` starting poses; default ``graph.estimate``.

    Returns:
        ``(objective, poses)``: solve with ``nlls.Optimizer(objective)``; the solution is
        ``result['poses']`` ``(B, K, 3)``.
    """
    poses = Variable(SE2, graph.estimate if initial is None else initial, name='poses')
    dtype, device = poses.value.dtype, poses.value.device
    eye = torch.eye(3, dtype=dtype, device=device)
    factors = [Prior(poses, [0], graph.odom_poses[:1], information=PRIOR_INFORMATION * eye,
                     name='anchor')]
    information = edge_information(graph.kinds, by_kind, graph.degenerate)
    robust = robust_edges(graph.kinds)
    for name, mask, loss in (('odom', ~robust, None), ('scan', robust, Huber(robust_scale))):
        if bool(mask.any()):
            factors.append(Between(poses, graph.edges[mask, 0], graph.edges[mask, 1],
                                   graph.measurements[mask], information=information[mask],
                                   loss=loss, name=name))
    return Objective(factors), poses


def to_g2o_data(graph: SlamGraph, by_kind: Tensor) -> PoseGraphData:
    """The graph as :class:`diffopt_ros.nlls.io.PoseGraphData` (for ``write_g2o``): vertices
    are keyframe indices at the current estimate, edge information from ``by_kind`` and the
    edges' degenerate directions (:func:`edge_information`)."""
    return PoseGraphData(group=SE2, ids=torch.arange(len(graph.stamps)),
                         poses=graph.estimate.detach(), i=graph.edges[:, 0], j=graph.edges[:, 1],
                         measurements=graph.measurements.detach(),
                         information=edge_information(graph.kinds, by_kind.detach(),
                                                      graph.degenerate))
