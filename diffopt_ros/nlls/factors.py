"""Factors: vectorized residual terms over many edges of one type.

One factor object holds ``E`` edges (e.g. every odometry edge of a pose graph): each edge links
one element of each of its variables, chosen by index tensors ``(E,)``. ``residual_and_jacobians``
returns the residuals ``(B, E, m)`` and, for each variable slot, the Jacobian ``(B, E, m, d)``
with respect to a right perturbation ``x exp(d)`` of that element. Weights are information
matrices ``Lambda`` (inverse covariances, ``(m, m)``, ``(E, m, m)`` or ``(B, E, m, m)``) and may be
learnable tensors; the error of an edge is ``rho(r^T Lambda r)`` with ``rho(s) = s/2`` unless a
robust loss is given (GTSAM's convention).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from diffopt_ros.lie import SE2, SE3
from diffopt_ros.lie._util import skew, wrap_angle
from diffopt_ros.nlls.losses import RobustLoss
from diffopt_ros.nlls.variables import Variable


def diagonal_information(weights: torch.Tensor) -> torch.Tensor:
    """Information matrices ``(..., m, m)`` from diagonal weights ``(..., m)`` (1/sigma^2)."""
    return torch.diag_embed(weights)


def _as_index(index, name: str) -> torch.Tensor:
    index = torch.as_tensor(index, dtype=torch.long)
    if index.dim() != 1:
        raise ValueError(f'factor {name!r}: index tensors must be 1-D (E,), got {tuple(index.shape)}')
    return index


class Factor:
    """Base class of vectorized factors.

    Args:
        variables: the variable of each slot (a variable may fill several slots).
        indices: for each slot, element indices ``(E,)`` into that variable.
        dim: residual dimension ``m``.
        information: ``(m, m)``, ``(E, m, m)`` or ``(B, E, m, m)`` positive definite, or None
            for the identity. Differentiable.
        loss: a :class:`~diffopt_ros.nlls.losses.RobustLoss`, or None for plain least squares.
        name: used in messages.
    """

    def __init__(self, variables: Sequence[Variable], indices: Sequence, dim: int,
                 information: torch.Tensor | None = None, loss: RobustLoss | None = None,
                 name: str = 'factor'):
        self.name = name
        self.variables = list(variables)
        self.indices = [_as_index(i, name) for i in indices]
        self.dim = int(dim)
        if len({len(i) for i in self.indices}) != 1:
            raise ValueError(f'factor {name!r}: index tensors differ in length')
        for var, idx in zip(self.variables, self.indices):
            if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= var.num):
                raise IndexError(f'factor {name!r}: index out of range for variable {var.name!r} '
                                 f'with {var.num} elements')
        if information is not None and tuple(information.shape[-2:]) != (self.dim, self.dim):
            raise ValueError(f'factor {name!r}: information of shape {tuple(information.shape)} '
                             f'is not (..., {self.dim}, {self.dim})')
        self.information = information
        self.loss = loss

    @property
    def num_edges(self) -> int:
        """Number of edges E."""
        return len(self.indices[0])

    def data_tensors(self) -> list[torch.Tensor]:
        """Measurements and other data of subclasses (for gradients); override."""
        return []

    def tensors(self) -> list[torch.Tensor]:
        """Every differentiable datum: data, information, loss scale."""
        out = list(self.data_tensors())
        if self.information is not None:
            out.append(self.information)
        if self.loss is not None:
            out.extend(self.loss.tensors())
        return out

    def batch_size(self) -> int:
        """Batch size B of the factor's data (1 when unbatched); subclasses add their data."""
        info = self.information
        return info.shape[0] if info is not None and info.dim() == 4 else 1

    def sqrt_information(self) -> torch.Tensor | None:
        """Upper-triangular ``S`` with ``S^T S = Lambda`` (``(..., m, m)``), or None (identity)."""
        if self.information is None:
            return None
        L, info = torch.linalg.cholesky_ex(self.information)
        if bool((info != 0).any()):
            bad = torch.nonzero(info.reshape(-1) != 0)[0].item()
            where = f'edge {bad}' if info.dim() else 'the shared matrix'
            if info.dim() > 1:
                b_, e = divmod(bad, info.shape[-1])
                where = f'batch element {b_}, edge {e}'
            raise ValueError(f'factor {self.name!r}: the information matrix of {where} '
                             f'is not positive definite')
        return L.mT

    def residual_and_jacobians(self, values: Sequence[torch.Tensor], jacobians: bool = True
                               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Unwhitened residuals ``(B, E, m)`` and per-slot Jacobians ``(B, E, m, d_slot)``.

        ``values[k]`` are the slot's elements ``(B, E, *shape)``.
        """
        raise NotImplementedError


def _batched(t: torch.Tensor, rank: int) -> torch.Tensor:
    """Add a batch dimension to an unbatched ``(E, ...)`` datum of element rank ``rank``."""
    return t if t.dim() == rank + 2 else t.unsqueeze(0)


class _GroupMeasurementFactor(Factor):
    """A factor with one measured group element per edge (``Between``, ``Prior``)."""

    def _set_measurement(self, variable: Variable, measurement: torch.Tensor):
        self.group = variable.group
        self.measurement = _batched(measurement, len(self.group.shape))
        if self.measurement.shape[1] != self.num_edges:
            raise ValueError(f'factor {self.name!r}: {self.measurement.shape[1]} measurements for '
                             f'{self.num_edges} edges')

    def data_tensors(self):
        return [self.measurement]

    def batch_size(self):
        return max(self.measurement.shape[0], super().batch_size())


class Between(_GroupMeasurementFactor):
    """Relative-pose factor ``r = log(z^-1 x_i^-1 x_j)`` between elements ``i`` and ``j``.

    Args:
        variable: the poses (any group of :mod:`diffopt_ros.lie` or a Vector).
        i, j: ``(E,)`` indices; ``z`` is ``x_j`` seen from ``x_i``.
        measurement: ``(E, *shape)`` or ``(B, E, *shape)``, differentiable.
        information, loss, name: see :class:`Factor`.
    """

    def __init__(self, variable: Variable, i, j, measurement: torch.Tensor,
                 information: torch.Tensor | None = None, loss: RobustLoss | None = None,
                 name: str = 'between'):
        super().__init__([variable, variable], [i, j], variable.dof, information, loss, name)
        self._set_measurement(variable, measurement)

    def residual_and_jacobians(self, values, jacobians=True):
        G = self.group
        xi, xj = values
        rel = G.between(xi, xj)
        r = G.log(G.between(self.measurement, rel))
        if not jacobians:
            return r, []
        return r, list(G.between_log_jacobians(rel, r))


class Prior(_GroupMeasurementFactor):
    """Prior ``r = log(z^-1 x)`` on elements ``index (E,)`` of ``variable``.

    ``measurement`` ``(E, *shape)`` or ``(B, E, *shape)``; see :class:`Factor` for the rest.
    """

    def __init__(self, variable: Variable, index, measurement: torch.Tensor,
                 information: torch.Tensor | None = None, loss: RobustLoss | None = None,
                 name: str = 'prior'):
        super().__init__([variable], [index], variable.dof, information, loss, name)
        self._set_measurement(variable, measurement)

    def residual_and_jacobians(self, values, jacobians=True):
        G = self.group
        r = G.log(G.between(self.measurement, values[0]))
        if not jacobians:
            return r, []
        return r, [G.right_jacobian_inv(r)]


class PoseToPoint(Factor):
    """A point landmark seen from a pose: ``r = x^-1 p - z`` (the point in the pose frame, m).

    GTSAM's ``PoseToPointFactor``; g2o's ``EDGE_SE2_XY`` / ``EDGE_SE3_TRACKXYZ``.

    Args:
        poses: SE2 or SE3 variable; points: ``Vector(2)`` or ``Vector(3)`` variable.
        pose_index, point_index: ``(E,)``.
        measured: ``(E, k)`` or ``(B, E, k)`` (m), differentiable.
        information, loss, name: see :class:`Factor` (``(k, k)`` blocks).
    """

    def __init__(self, poses: Variable, points: Variable, pose_index, point_index,
                 measured: torch.Tensor, information: torch.Tensor | None = None,
                 loss: RobustLoss | None = None, name: str = 'pose_to_point'):
        k = points.dof
        if poses.group not in (SE2, SE3) or k != (2 if poses.group is SE2 else 3):
            raise ValueError(f'factor {name!r}: poses must be SE2 with 2D points or SE3 with 3D points')
        super().__init__([poses, points], [pose_index, point_index], k, information, loss, name)
        self.measured = _batched(measured, 1)
        if self.measured.shape[1] != self.num_edges:
            raise ValueError(f'factor {name!r}: {self.measured.shape[1]} measurements for '
                             f'{self.num_edges} edges')

    def data_tensors(self):
        return [self.measured]

    def batch_size(self):
        return max(self.measured.shape[0], super().batch_size())

    def residual_and_jacobians(self, values, jacobians=True):
        x, p = values
        if self.variables[0].group is SE2:
            c, s = torch.cos(x[..., 2]), torch.sin(x[..., 2])
            dx, dy = p[..., 0] - x[..., 0], p[..., 1] - x[..., 1]
            q = torch.stack((c * dx + s * dy, -s * dx + c * dy), -1)   # R^T (p - t)
            r = q - self.measured
            if not jacobians:
                return r, []
            one, zero = torch.ones_like(c), torch.zeros_like(c)
            # right perturbation (v, w): q -> Exp(-w) (q - v)
            J_x = torch.stack((-one, zero, q[..., 1], zero, -one, -q[..., 0]), -1).reshape(*c.shape, 2, 3)
            J_p = torch.stack((c, s, -s, c), -1).reshape(*c.shape, 2, 2)
            return r, [J_x, J_p]
        R, t = x[..., :3], x[..., 3]
        Rt = R.mT
        q = (Rt @ (p - t).unsqueeze(-1)).squeeze(-1)
        r = q - self.measured
        if not jacobians:
            return r, []
        eye = torch.eye(3, dtype=q.dtype, device=q.device).expand(*q.shape[:-1], 3, 3)
        return r, [torch.cat((-eye, skew(q)), -1), Rt]


class AutoDiffFactor(Factor):
    """A factor from a user function, with Jacobians by forward-mode autodiff (``torch.func``).

    Args:
        fn: ``fn(*elements, *data) -> (m,)`` for ONE edge: ``elements[k]`` has the slot's group
            shape, ``data[k]`` one edge's slice of ``data[k]``. Must be ``torch.func``-friendly
            (no in-place ops, no ``.item()``).
        variables, indices: slots, as in :class:`Factor`.
        dim: residual dimension m.
        data: per-edge tensors ``(E, ...)`` (unbatched) or ``(B, E, ...)`` with ``batched_data``;
            differentiable.
        information, loss, name: see :class:`Factor`.
        batched_data: whether ``data`` tensors carry a leading batch dimension.
    """

    def __init__(self, fn: Callable, variables: Sequence[Variable], indices: Sequence, dim: int,
                 data: Sequence[torch.Tensor] = (), information: torch.Tensor | None = None,
                 loss: RobustLoss | None = None, name: str = 'autodiff', batched_data: bool = False):
        super().__init__(variables, indices, dim, information, loss, name)
        self.fn = fn
        self.data = [d if batched_data else d.unsqueeze(0) for d in data]

    def data_tensors(self):
        return list(self.data)

    def batch_size(self):
        return max([d.shape[0] for d in self.data] + [super().batch_size()])

    def residual_and_jacobians(self, values, jacobians=True):
        B, E = values[0].shape[:2]
        groups = [v.group for v in self.variables]
        flat_vals = [v.expand(B, *v.shape[1:]).reshape(B * E, *v.shape[2:]) for v in values]
        flat_data = [d.expand(B, *d.shape[1:]).reshape(B * E, *d.shape[2:]) for d in self.data]
        r = torch.vmap(self.fn)(*flat_vals, *flat_data)
        if not jacobians:
            return r.reshape(B, E, self.dim), []

        def perturbed(deltas, vals, data):
            return self.fn(*[g.retract(v, d) for g, v, d in zip(groups, vals, deltas)], *data)

        zeros = tuple(v.new_zeros(B * E, g.dof) for v, g in zip(flat_vals, groups))
        jac = torch.vmap(torch.func.jacfwd(perturbed, argnums=0))(zeros, tuple(flat_vals), tuple(flat_data))
        return (r.reshape(B, E, self.dim),
                [J.reshape(B, E, self.dim, g.dof) for J, g in zip(jac, groups)])


def _range_2d(pose, point, measured):
    return (torch.linalg.vector_norm(pose[:2] - point) - measured).reshape(1)


def _range_3d(pose, point, measured):
    return (torch.linalg.vector_norm(pose[:, 3] - point) - measured).reshape(1)


def _bearing_range_2d(pose, point, measured):
    q = SE2.act(SE2.inverse(pose), point)
    bearing = wrap_angle(torch.atan2(q[1], q[0]) - measured[0])
    return torch.stack((bearing, torch.linalg.vector_norm(q) - measured[1]))


def _bearing_range_3d(pose, point, measured):
    q = SE3.act(SE3.inverse(pose), point)
    dist = torch.linalg.vector_norm(q)
    return torch.cat((q / dist - measured[:3], (dist - measured[3]).reshape(1)))


class RangeFactor(AutoDiffFactor):
    """Range (m) from a pose (SE2 or SE3) to a landmark point (Vector(2) or Vector(3)).

    ``measured`` ``(E,)``; residual ``||t_pose - p|| - measured`` (m).
    """

    def __init__(self, poses: Variable, points: Variable, pose_index, point_index,
                 measured: torch.Tensor, information=None, loss=None, name='range'):
        fn = _range_2d if poses.group is SE2 else _range_3d
        super().__init__(fn, [poses, points], [pose_index, point_index], 1, [measured],
                         information, loss, name)


class BearingRangeFactor(AutoDiffFactor):
    """Bearing and range from a pose to a landmark, in the pose frame.

    SE2: ``measured (E, 2) = (bearing rad, range m)``, residual ``(wrapped bearing error, range
    error)``. SE3: ``measured (E, 4) = (unit direction (3), range m)``, residual ``(direction error
    (3), range error)``.
    """

    def __init__(self, poses: Variable, points: Variable, pose_index, point_index,
                 measured: torch.Tensor, information=None, loss=None, name='bearing_range'):
        planar = poses.group is SE2
        super().__init__(_bearing_range_2d if planar else _bearing_range_3d, [poses, points],
                         [pose_index, point_index], 2 if planar else 4, [measured],
                         information, loss, name)

    def residual_and_jacobians(self, values, jacobians=True):
        """SE2: analytic (``q = x^-1 p``, bearing ``atan2(q_y, q_x)``, range ``|q|``); SE3 by
        forward-mode autodiff."""
        if self.variables[0].group is not SE2:
            return super().residual_and_jacobians(values, jacobians)
        x, p = values
        measured = self.data[0]
        c, s = torch.cos(x[..., 2]), torch.sin(x[..., 2])
        dx, dy = p[..., 0] - x[..., 0], p[..., 1] - x[..., 1]
        qx, qy = c * dx + s * dy, -s * dx + c * dy
        n2 = qx * qx + qy * qy
        n = torch.sqrt(n2)
        r = torch.stack((wrap_angle(torch.atan2(qy, qx) - measured[..., 0]), n - measured[..., 1]), -1)
        if not jacobians:
            return r, []
        one, zero = torch.ones_like(c), torch.zeros_like(c)
        J_q = torch.stack((-qy / n2, qx / n2, qx / n, qy / n), -1).reshape(*c.shape, 2, 2)
        dq_dx = torch.stack((-one, zero, qy, zero, -one, -qx), -1).reshape(*c.shape, 2, 3)
        dq_dp = torch.stack((c, s, -s, c), -1).reshape(*c.shape, 2, 2)
        return r, [J_q @ dq_dx, J_q @ dq_dp]
