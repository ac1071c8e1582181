"""Pose graphs: build from a file's data or incrementally (online SLAM), solve, query covariance.

:class:`PoseGraph` keeps poses, a prior and between-edges grouped by ``kind`` (e.g. ``'odom'``,
``'scan'``, ``'loop'``); each kind becomes one vectorized :class:`Between` factor with its own
optional robust loss. ``optimize`` warm-starts Levenberg-Marquardt from the current poses with
a bounded number of iterations / time, so it fits in a SLAM update. Example (2D)::

    graph = PoseGraph(SE2)
    a = graph.add_pose(torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64))
    b = graph.add_pose(torch.tensor([1.0, 0.1, 0.0], dtype=torch.float64))
    graph.add_prior(a, graph.poses[a], 1e6 * torch.eye(3, dtype=torch.float64))
    graph.add_between(a, b, torch.tensor([1.0, 0.0, 0.1], dtype=torch.float64),
                      torch.diag(torch.tensor([100.0, 100.0, 400.0], dtype=torch.float64)), kind='odom')
    result = graph.optimize(max_iterations=10)
    cov = graph.covariance(b, frame='world')   # (3, 3): x, y, yaw in the map frame
"""
from __future__ import annotations

import torch

from diffopt_ros.lie import SE2
from diffopt_ros.nlls.factors import Between, Prior
from diffopt_ros.nlls.losses import RobustLoss
from diffopt_ros.nlls.objective import Objective
from diffopt_ros.nlls.optimizer import Optimizer, SolveResult
from diffopt_ros.nlls.variables import Variable


class PoseGraph:
    """An incrementally built pose graph over ``group`` (SE2 or SE3), unbatched (B = 1).

    Args:
        group: SE2 or SE3.
        dtype, device: of all tensors.
        losses: robust loss per edge kind (kinds not listed use plain least squares).
        optimizer_options: keyword arguments for :class:`Optimizer` (method, linear_solver, ...).
    """

    def __init__(self, group=SE2, dtype: torch.dtype = torch.float64, device: str | torch.device = 'cpu',
                 losses: dict[str, RobustLoss] | None = None, optimizer_options: dict | None = None):
        self.group = group
        self.dtype, self.device = dtype, torch.device(device)
        self.losses = dict(losses or {})
        self.optimizer_options = dict(optimizer_options or {})
        self._stacked: torch.Tensor | None = None
        self._edges: dict[str, dict[str, list]] = {}
        self._priors: dict[str, list] = {'index': [], 'pose': [], 'information': []}
        self._optimizer: Optimizer | None = None
        self._variable: Variable | None = None

    # ------------------------------------------------------------------ building
    def _tensor(self, x) -> torch.Tensor:
        return torch.as_tensor(x, dtype=self.dtype, device=self.device)

    def add_pose(self, pose) -> int:
        """Append a pose ``group.shape`` (initial guess); returns its index."""
        pose = self._tensor(pose)
        if tuple(pose.shape) != tuple(self.group.shape):
            raise ValueError(f'pose of shape {tuple(pose.shape)} is not '
                             f'{self.group.shape} ({self.group.name})')
        self._stacked = torch.cat((self._stacked, pose[None])) if self._stacked is not None else pose[None]
        self._optimizer = None
        return len(self._stacked) - 1

    def add_between(self, i: int, j: int, measurement, information, kind: str = 'odom') -> None:
        """Add edge ``x_i^-1 x_j = measurement`` with information ``(d, d)`` under ``kind``."""
        n = self.num_poses
        if not (0 <= i < n and 0 <= j < n):
            raise IndexError(f'edge ({i}, {j}) of kind {kind!r}: the graph has {n} poses')
        e = self._edges.setdefault(kind, {'i': [], 'j': [], 'z': [], 'info': []})
        e['i'].append(int(i))
        e['j'].append(int(j))
        e['z'].append(self._tensor(measurement))
        e['info'].append(self._tensor(information))
        self._optimizer = None

    def add_prior(self, index: int, pose, information) -> None:
        """Anchor pose ``index`` at ``pose`` with information ``(d, d)``."""
        self._priors['index'].append(int(index))
        self._priors['pose'].append(self._tensor(pose))
        self._priors['information'].append(self._tensor(information))
        self._optimizer = None

    # ------------------------------------------------------------------ queries
    @property
    def num_poses(self) -> int:
        """Number of poses."""
        return 0 if self._stacked is None else len(self._stacked)

    @property
    def poses(self) -> torch.Tensor:
        """Current estimates ``(N, *group.shape)``."""
        return self._stacked

    def num_edges(self, kind: str | None = None) -> int:
        """Edges of one kind, or of all kinds."""
        if kind is not None:
            return len(self._edges.get(kind, {'i': []})['i'])
        return sum(len(e['i']) for e in self._edges.values())

    def _build(self) -> Optimizer:
        if self._optimizer is not None:
            return self._optimizer
        if self.num_poses == 0:
            raise ValueError('the pose graph has no poses')
        var = Variable(self.group, self._stacked, name='poses')
        factors = []
        if self._priors['index']:
            factors.append(Prior(var, self._priors['index'], torch.stack(self._priors['pose']),
                                 torch.stack(self._priors['information']), name='prior'))
        for kind, e in self._edges.items():
            factors.append(Between(var, e['i'], e['j'], torch.stack(e['z']), torch.stack(e['info']),
                                   loss=self.losses.get(kind), name=kind))
        if not factors:
            raise ValueError('the pose graph has no prior and no edges')
        options = {'max_iterations': 20, **self.optimizer_options}
        self._variable = var
        self._optimizer = Optimizer(Objective(factors), **options)
        return self._optimizer

    def optimize(self, max_iterations: int | None = None, max_time: float | None = None) -> SolveResult:
        """Warm-started LM from the current poses (which are updated). Bounded by
        ``max_iterations`` and ``max_time`` seconds when given."""
        opt = self._build()
        saved = opt.max_iterations, opt.max_time
        opt.max_iterations = saved[0] if max_iterations is None else int(max_iterations)
        opt.max_time = max_time
        try:
            with torch.no_grad():
                result = opt.solve([self._stacked])
        finally:
            opt.max_iterations, opt.max_time = saved
        self._stacked = result.values[0][0].clone()
        self._variable.value = self._stacked[None]
        return result

    def error(self) -> float:
        """Current objective value (GTSAM convention)."""
        opt = self._build()
        with torch.no_grad():
            return float(opt.objective.error([self._stacked[None]])[0])

    def covariance(self, index: int = -1, frame: str = 'body') -> torch.Tensor:
        """Marginal covariance ``(d, d)`` of pose ``index`` at the current estimate.

        ``frame='body'``: in the pose's right (body-frame) tangent space, the solver's own (SE2:
        x, y, yaw; SE3: x, y, z, rx, ry, rz). ``frame='world'``: the same uncertainty with its axes
        rotated into the map frame, about the pose's position (what ROS PoseWithCovariance
        means): ``J S J^T`` with ``J = blockdiag(R, 1)`` (SE2) or ``blockdiag(R, R)`` (SE3).
        """
        if frame not in ('body', 'world'):
            raise ValueError(f"covariance frame {frame!r}: choose 'body' or 'world'")
        opt = self._build()
        index = index % self.num_poses
        cov = opt.marginal_covariance([self._stacked[None]], self._variable, index)[0]
        if frame == 'world':
            pose = self._stacked[index]
            d = self.group.dof
            J = torch.zeros(d, d, dtype=cov.dtype, device=cov.device)
            if self.group is SE2:
                c, s = torch.cos(pose[2]), torch.sin(pose[2])
                J[:2, :2] = torch.stack((torch.stack((c, -s)), torch.stack((s, c))))
                J[2, 2] = 1
            else:
                J[:3, :3] = J[3:, 3:] = pose[:, :3]
            cov = J @ cov @ J.T
        return cov


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
