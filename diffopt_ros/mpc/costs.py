"""Trajectory costs with analytic quadratic expansions: the interface and the tracking cost.

A cost sees a whole trajectory - states ``x (B, T+1, n_x)``, controls ``u (B, T, n_u)``, an
optional ``target`` and the previously applied control ``u_prev (B, n_u)`` - and provides

* ``total(x, u, target, u_prev) -> (B,)``, differentiable w.r.t. everything, and
* ``expand(x, u, target, u_prev, exact) ->`` :class:`CostExpansion`, its gradient and Hessian
  blocks (exact for quadratic costs; Gauss-Newton where a cost says so, unless ``exact``).

Here: the :class:`Cost` interface, :class:`PSDWeight` and :class:`TrackingCost` (goal or
reference tracking, learnable PSD weights, terminal scale, control-rate penalty, wrapped angles).
Other costs live in their own modules: :class:`~diffopt_ros.mpc.quadratic_cost.QuadraticCost`
(general stage-wise quadratic, the mpc.pytorch ``QuadCost`` form),
:class:`~diffopt_ros.mpc.residual_cost.ResidualCost` (any ``nn.Module`` residual, Gauss-Newton),
:class:`~diffopt_ros.mpc.obstacles.ObstacleCost` and :class:`~diffopt_ros.mpc.cost_sum.CostSum`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from diffopt_ros.lie import wrap_angle
from diffopt_ros.params.mpc import SCHEMA as _MPC_SCHEMA

from .exact import ExactFloats
from .solve_blocks import SolveBlocks

#: mpc_node's ``weights.*`` defaults: the defaults of :meth:`TrackingCost.diff_drive`.
_NODE_WEIGHTS = {p.name: p.default for p in _MPC_SCHEMA if p.name.startswith('weights.')}


class CostExpansion(NamedTuple):
    """Derivatives of a trajectory cost ``J`` at ``(x, u)``.

    Attributes:
        lxx: ``(B, T+1, n_x, n_x)`` d2J/dx_t2 (index ``T``: terminal).
        lx: ``(B, T+1, n_x)`` dJ/dx_t.
        luu: ``(B, T, n_u, n_u)`` d2J/du_t2.
        lu: ``(B, T, n_u)`` dJ/du_t.
        lux: ``(B, T, n_u, n_x)`` d2J/du_t dx_t, or ``None`` when zero.
        luu_prev: ``(B, T, n_u, n_u)`` d2J/du_t du_{t-1} (index 0 unused), or ``None`` when the
            cost does not couple consecutive controls.
    """

    lxx: torch.Tensor
    lx: torch.Tensor
    luu: torch.Tensor
    lu: torch.Tensor
    lux: torch.Tensor | None = None
    luu_prev: torch.Tensor | None = None


class Cost(nn.Module):
    """Base class of trajectory costs (see the module docstring for the interface).

    Attributes:
        quadratic: the cost is quadratic in ``(x, u)`` (its expansion is exact everywhere); with
            linear dynamics one exact subproblem solve then finishes the solver.
    """

    quadratic: bool = False

    @property
    def batched(self) -> bool:
        """Whether the cost holds per-sample data (a leading batch axis ``B``); the solver then
        gives each subset of samples its own rows (:meth:`take`)."""
        return False

    def check(self, batch: int, horizon: int, dtype: torch.dtype) -> None:
        """Raise a ``ValueError`` naming the offending argument if the cost's data do not fit a
        problem of ``batch`` samples, ``horizon`` steps and ``dtype`` (called by ``MPC`` before each
        solve; the default checks nothing)."""

    def take(self, rows: torch.Tensor) -> Cost:
        """The cost of the samples ``rows (K,)`` (int64 indices into the batch, repeats allowed):
        ``self`` unless the cost is :attr:`batched`, else a cost holding those rows of its
        per-sample data (differentiable: indexing keeps the graph)."""
        return self

    def total(self, x: torch.Tensor, u: torch.Tensor, target: torch.Tensor | None = None,
              u_prev: torch.Tensor | None = None) -> torch.Tensor:
        """Cost of each trajectory, ``(B,)``."""
        raise NotImplementedError

    def expand(self, x: torch.Tensor, u: torch.Tensor, target: torch.Tensor | None = None,
               u_prev: torch.Tensor | None = None, exact: bool = False) -> CostExpansion:
        """Gradient and Hessian blocks at ``(x, u)`` (see :class:`CostExpansion`)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, u: torch.Tensor, target: torch.Tensor | None = None,
                u_prev: torch.Tensor | None = None) -> torch.Tensor:
        return self.total(x, u, target, u_prev)


class PSDWeight(ExactFloats):
    """A learnable positive semi-definite weight: diagonal ``s**2`` or full ``L L^T``.

    The factor is computed in float64 from the value given and kept so until the module's dtype is
    known (:class:`~diffopt_ros.mpc.exact.ExactFloats`): a float64 weight from Python floats is
    within one rounding of them, not float32's.

    Args:
        value: initial weight, ``(n,)`` diagonal entries (>= 0) or a symmetric PSD ``(n, n)``.
        full: learn a full matrix (through a lower-triangular factor) instead of a diagonal.
    """

    def __init__(self, value: torch.Tensor | list[float] | tuple[float, ...], full: bool = False):
        super().__init__()
        dtype = value.dtype if isinstance(value, torch.Tensor) else torch.get_default_dtype()
        value = torch.as_tensor(value, dtype=torch.float64)
        self.full = bool(full)
        if value.ndim == 1 and (value < 0).any():
            raise ValueError(f'PSDWeight: diagonal weights must be >= 0, got {value.tolist()}')
        if self.full:
            matrix = torch.diag(value) if value.ndim == 1 else value
            n = matrix.shape[-1]
            factor = torch.linalg.cholesky(matrix + 1e-12 * torch.eye(n, dtype=matrix.dtype))
            self.factor = nn.Parameter(factor.to(dtype))
            self.record_exact('factor', factor)
        else:
            if value.ndim != 1:
                raise ValueError('PSDWeight: pass a vector for a diagonal weight (or full=True)')
            self.sqrt_diag = nn.Parameter(value.sqrt().to(dtype))
            self.record_exact('sqrt_diag', value.sqrt())

    @property
    def size(self) -> int:
        return (self.factor if self.full else self.sqrt_diag).shape[0]

    def matrix(self) -> torch.Tensor:
        """The weight as an ``(n, n)`` matrix."""
        if self.full:
            L = torch.tril(self.factor)
            return L @ L.mT
        return torch.diag_embed(self.sqrt_diag.square())

    def diagonal(self) -> torch.Tensor:
        """The diagonal ``(n,)``."""
        if self.full:
            return torch.tril(self.factor).square().sum(-1)
        return self.sqrt_diag.square()

    def quad_factor(self) -> torch.Tensor:
        """What :meth:`quad` multiplies by: the lower-triangular factor ``L (n, n)`` of a full
        weight (``W = L L^T``), the diagonal ``(n,)`` of a diagonal one."""
        return torch.tril(self.factor) if self.full else self.sqrt_diag.square()

    def operator(self) -> torch.Tensor:
        """What :meth:`apply` multiplies by: the matrix ``(n, n)`` of a full weight, the diagonal
        ``(n,)`` of a diagonal one."""
        return self.matrix() if self.full else self.sqrt_diag.square()

    def quad(self, e: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor:
        """``e^T W e`` over the last axis of ``e (..., n)`` -> ``(...)`` (``factor``:
        :meth:`quad_factor` where already formed)."""
        factor = self.quad_factor() if factor is None else factor
        if self.full:
            return (e @ factor).square().sum(-1)
        return (e.square() * factor).sum(-1)

    def apply(self, e: torch.Tensor, operator: torch.Tensor | None = None) -> torch.Tensor:
        """``W e`` for ``e (..., n)`` (``operator``: :meth:`operator` where already formed)."""
        operator = self.operator() if operator is None else operator
        return e @ operator if self.full else e * operator

    def set_(self, value: torch.Tensor | list[float]) -> None:
        """Overwrite the weight in place (same kind: diagonal vector or full matrix)."""
        value = torch.as_tensor(value, dtype=self.diagonal().dtype)
        with torch.no_grad():
            if self.full:
                matrix = torch.diag(value) if value.ndim == 1 else value
                eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype)
                self.factor.copy_(torch.linalg.cholesky(matrix + 1e-12 * eye))
            else:
                if (value < 0).any():
                    raise ValueError(f'PSDWeight: diagonal weights must be >= 0, got {value.tolist()}')
                self.sqrt_diag.copy_(value.sqrt())


class TrackingCost(Cost, ExactFloats, SolveBlocks):
    """Quadratic tracking of a goal state or a reference trajectory.

    ``J = 0.5 sum_{t<T} e_t^T Q e_t + 0.5 s_T e_T^T Q e_T + 0.5 sum_{t<T} u_t^T R u_t
    + 0.5 sum_t (u_t - u_{t-1})^T S (u_t - u_{t-1})``, with ``e_t = x_t - r_t`` (angle entries
    wrapped to ``(-pi, pi]`` by :func:`diffopt_ros.lie.wrap_angle`), ``u_{-1} = u_prev`` when
    given (else the rate sum starts at ``t = 1``). The target ``r`` is a goal ``(B, n_x)`` /
    ``(n_x,)`` or a reference ``(B, T+1, n_x)``. All weights are learnable and kept PSD (:class:`PSDWeight`).

    Args:
        state_weight: ``Q`` diagonal ``(n_x,)`` or matrix ``(n_x, n_x)`` (with ``full``).
        control_weight: ``R`` diagonal ``(n_u,)`` or matrix (with ``full``).
        terminal_scale: ``s_T >= 0``, learnable.
        rate_weight: ``S`` diagonal ``(n_u,)`` (``None``: no rate term).
        angle_indices: state entries that are angles (rad).
        full: learn full ``Q`` and ``R`` matrices instead of diagonals.
    """

    def __init__(self, state_weight, control_weight, terminal_scale: float = 1.0,
                 rate_weight=None, angle_indices: tuple[int, ...] = (), full: bool = False):
        super().__init__()
        self.state_weight = PSDWeight(state_weight, full)
        self.control_weight = PSDWeight(control_weight, full)
        if terminal_scale < 0:
            raise ValueError(f'TrackingCost: terminal_scale must be >= 0, got {terminal_scale}')
        exact = torch.tensor(float(terminal_scale), dtype=torch.float64).sqrt()
        self.sqrt_terminal_scale = nn.Parameter(exact.to(torch.get_default_dtype()))
        self.record_exact('sqrt_terminal_scale', exact)
        self.rate_weight = None if rate_weight is None else PSDWeight(rate_weight)
        self.n_x, self.n_u = self.state_weight.size, self.control_weight.size
        mask = torch.zeros(self.n_x)
        for i in angle_indices:
            if not 0 <= i < self.n_x:
                raise ValueError(f'TrackingCost: angle index {i} outside the state (n_x={self.n_x})')
            mask[i] = 1.0
        self.register_buffer('angle_mask', mask, persistent=False)
        self.has_angles = bool(angle_indices)
        self.quadratic = not self.has_angles                    # wrapped errors are piecewise quadratic

    @classmethod
    def diff_drive(cls, position: float = _NODE_WEIGHTS['weights.position'],
                   heading: float = _NODE_WEIGHTS['weights.heading'],
                   v: float = _NODE_WEIGHTS['weights.v'], omega: float = _NODE_WEIGHTS['weights.omega'],
                   v_cmd: float = _NODE_WEIGHTS['weights.v_cmd'],
                   omega_cmd: float = _NODE_WEIGHTS['weights.omega_cmd'],
                   rate: float = _NODE_WEIGHTS['weights.rate'],
                   terminal_scale: float = _NODE_WEIGHTS['weights.terminal_scale']) -> TrackingCost:
        """The cost of the ``DiffDriveLag`` robot from the node's ``weights.*`` parameters
        (defaults: mpc_node's, :mod:`diffopt_ros.params.mpc`).

        State weights ``(position, position, heading, v, omega)`` (``1/m^2``, ``1/rad^2``, ``s^2/m^2``,
        ``s^2/rad^2``), control weights ``(v_cmd, omega_cmd)``, rate weight ``(rate, rate)`` on
        ``u_t - u_{t-1}`` (no rate term when ``rate == 0``), heading wrapped.
        """
        return cls([position, position, heading, v, omega], [v_cmd, omega_cmd], terminal_scale=terminal_scale,
                   rate_weight=[rate, rate] if rate > 0 else None, angle_indices=(2,))

    @property
    def terminal_scale(self) -> torch.Tensor:
        return self.sqrt_terminal_scale.square()

    def errors(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """``e = x - r`` with wrapped angle entries, ``(B, T+1, n_x)``."""
        if target is None:
            e = x
        else:
            if target.shape[-1] != self.n_x:
                raise ValueError(f'TrackingCost: target has {target.shape[-1]} entries, n_x={self.n_x}')
            e = x - (target.unsqueeze(-2) if target.ndim < x.ndim else target)
        if self.has_angles:
            mask = self.angle_mask.to(e)
            e = e + mask * (wrap_angle(e) - e)
        return e

    def _time_scale(self, T1: int, like: torch.Tensor) -> torch.Tensor:
        """``(T+1, 1)``: ones and the terminal scale in the last row."""
        scale = torch.ones(T1, 1, dtype=like.dtype, device=like.device)
        return torch.cat((scale[:-1], self.terminal_scale.to(like).view(1, 1)))

    def _rate_differences(self, u: torch.Tensor, u_prev: torch.Tensor | None) -> torch.Tensor:
        """``(B, T, n_u)``: ``u_t - u_{t-1}``, zero at ``t = 0`` without ``u_prev``."""
        first = torch.zeros_like(u[:, :1]) if u_prev is None else (u[:, 0] - u_prev).unsqueeze(1)
        return torch.cat((first, u[:, 1:] - u[:, :-1]), 1)

    def total(self, x, u, target=None, u_prev=None):
        e = self.errors(x, target)
        T1 = x.shape[-2]
        rate = self.rate_weight
        scale, Fx, Fu, Fr = self.solve_blocks(('total', T1, e.dtype, e.device), lambda: (
            self._time_scale(T1, e).squeeze(-1), self.state_weight.quad_factor(),
            self.control_weight.quad_factor(), None if rate is None else rate.quad_factor()))
        state = (self.state_weight.quad(e, Fx) * scale).sum(-1)
        J = state + self.control_weight.quad(u, Fu).sum(-1)
        if rate is not None:
            J = J + rate.quad(self._rate_differences(u, u_prev), Fr).sum(-1)
        return 0.5 * J

    def expand(self, x, u, target=None, u_prev=None, exact=False):
        e = self.errors(x, target)
        batch, T1, T = x.shape[0], x.shape[1], u.shape[1]
        key = ('expand', batch, T1, T, u_prev is None, e.dtype, u.dtype, e.device, u.device)
        scale, lxx, S, luu, luu_prev, Wx, Wu = self.solve_blocks(
            key, lambda: self._expansion_blocks(batch, T1, T, u_prev is None, e, u))
        lx = self.state_weight.apply(e, Wx) * scale
        lu = self.control_weight.apply(u, Wu)
        if self.rate_weight is None:
            return CostExpansion(lxx, lx, luu, lu)
        Sd = self._rate_differences(u, u_prev) * S
        lu = lu + Sd - torch.cat((Sd[:, 1:], torch.zeros_like(Sd[:, :1])), 1)
        return CostExpansion(lxx, lx, luu, lu, None, luu_prev)

    def _expansion_blocks(self, batch: int, T1: int, T: int, no_u_prev: bool, e: torch.Tensor,
                          u: torch.Tensor) -> tuple:
        """The blocks of :meth:`expand` that do not depend on the trajectory: the time scale
        ``(T+1, 1)``, ``lxx (B, T+1, n_x, n_x)``, the rate diagonal ``S (n_u,)``
        (``None`` without a rate term), ``luu (B, T, n_u, n_u)``, ``luu_prev (B, T, n_u, n_u)``
        (``None`` without a rate term), dtypes and devices of ``e`` (states) and ``u`` (controls),
        and the weights' :meth:`PSDWeight.operator` (``Q``'s, ``R``'s; their own dtype)."""
        scale = self._time_scale(T1, e)
        Q = self.state_weight.matrix().to(e)
        lxx = (scale.unsqueeze(-1) * Q).expand(batch, T1, self.n_x, self.n_x)
        R = self.control_weight.matrix().to(u)
        operators = self.state_weight.operator(), self.control_weight.operator()
        if self.rate_weight is None:
            return scale, lxx, None, R.expand(batch, T, self.n_u, self.n_u), None, *operators
        S = self.rate_weight.diagonal().to(u)
        count = torch.full((T, 1), 2.0, dtype=u.dtype, device=u.device)
        count[-1] = 1.0
        if no_u_prev:
            count[0] -= 1.0
        luu = R + torch.diag_embed(count * S)
        luu_prev = torch.diag_embed(-S).expand(batch, T, self.n_u, self.n_u)
        return scale, lxx, S, luu.expand(batch, T, self.n_u, self.n_u), luu_prev, *operators
