"""Trajectory costs with analytic quadratic expansions.

A cost sees a whole trajectory - states ``x (B, T+1, n_x)``, controls ``u (B, T, n_u)``, an
optional ``target`` and the previously applied control ``u_prev (B, n_u)`` - and provides

* ``total(x, u, target, u_prev) -> (B,)``, differentiable w.r.t. everything, and
* ``expand(x, u, target, u_prev, exact) ->`` :class:`CostExpansion`, its gradient and Hessian
  blocks (exact for quadratic costs; Gauss-Newton for :class:`ResidualCost` unless ``exact``).

Costs: :class:`TrackingCost` (goal or reference tracking, learnable PSD weights, terminal scale,
control-rate penalty, wrapped angles), :class:`QuadraticCost` (general stage-wise quadratic in
``(x, u)``, the mpc.pytorch ``QuadCost`` form) and :class:`ResidualCost` (any ``nn.Module``
residual, ``0.5 |r|^2``, Gauss-Newton).

The module is over 400 lines because it holds the :class:`Cost` interface with its three
implementations (100-120 lines each, their analytic expansions side by side) and the PSD weight
they share; a cost type added later goes in its own module.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from diffopt_ros.lie import wrap_angle
from diffopt_ros.params.mpc import SCHEMA as _MPC_SCHEMA

from .exact import ExactFloats

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

    def quad(self, e: torch.Tensor) -> torch.Tensor:
        """``e^T W e`` over the last axis of ``e (..., n)`` -> ``(...)``."""
        if self.full:
            return (e @ torch.tril(self.factor)).square().sum(-1)
        return (e.square() * self.sqrt_diag.square()).sum(-1)

    def apply(self, e: torch.Tensor) -> torch.Tensor:
        """``W e`` for ``e (..., n)``."""
        if self.full:
            return e @ self.matrix()
        return e * self.sqrt_diag.square()

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


class TrackingCost(Cost, ExactFloats):
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
        state = (self.state_weight.quad(e) * self._time_scale(x.shape[-2], e).squeeze(-1)).sum(-1)
        J = state + self.control_weight.quad(u).sum(-1)
        if self.rate_weight is not None:
            J = J + self.rate_weight.quad(self._rate_differences(u, u_prev)).sum(-1)
        return 0.5 * J

    def expand(self, x, u, target=None, u_prev=None, exact=False):
        e = self.errors(x, target)
        batch, T1 = x.shape[0], x.shape[1]
        scale = self._time_scale(T1, e)
        Q = self.state_weight.matrix().to(e)
        lxx = (scale.unsqueeze(-1) * Q).expand(batch, T1, self.n_x, self.n_x)
        lx = self.state_weight.apply(e) * scale
        R = self.control_weight.matrix().to(u)
        lu = self.control_weight.apply(u)
        T = u.shape[1]
        if self.rate_weight is None:
            return CostExpansion(lxx, lx, R.expand(batch, T, self.n_u, self.n_u), lu)
        S = self.rate_weight.diagonal().to(u)
        Sd = self._rate_differences(u, u_prev) * S
        lu = lu + Sd - torch.cat((Sd[:, 1:], torch.zeros_like(Sd[:, :1])), 1)
        count = torch.full((T, 1), 2.0, dtype=u.dtype, device=u.device)
        count[-1] = 1.0
        if u_prev is None:
            count[0] -= 1.0
        luu = R + torch.diag_embed(count * S)
        luu_prev = torch.diag_embed(-S).expand(batch, T, self.n_u, self.n_u)
        return CostExpansion(lxx, lx, luu.expand(batch, T, self.n_u, self.n_u), lu, None, luu_prev)


class QuadraticCost(Cost):
    """General stage-wise quadratic cost in ``tau_t = (x_t, u_t)`` (mpc.pytorch ``QuadCost`` form).

    ``J = sum_{t<T} 0.5 tau_t^T C_t tau_t + c_t^T tau_t + 0.5 x_T^T C_T x_T + c_T^T x_T``.
    ``target`` is ignored. Tensors given as ``nn.Parameter`` are learnable.

    Args:
        C: ``(n_x + n_u, n_x + n_u)``, ``(T, ...)`` or ``(B, T, ...)`` symmetric stage Hessians.
        c: ``(n_x + n_u,)``, ``(T, ...)`` or ``(B, T, ...)`` stage gradients.
        C_final: ``(n_x, n_x)`` or ``(B, n_x, n_x)`` terminal Hessian (default: zero).
        c_final: ``(n_x,)`` or ``(B, n_x)`` terminal gradient (default: zero).
        n_x: state dimension (splits ``tau``).
    """

    def __init__(self, C: torch.Tensor, c: torch.Tensor, n_x: int, C_final: torch.Tensor | None = None,
                 c_final: torch.Tensor | None = None):
        super().__init__()
        self.n_x, self.n_u = n_x, C.shape[-1] - n_x
        if C.shape[-1] != C.shape[-2] or c.shape[-1] != C.shape[-1] or self.n_u < 1:
            raise ValueError(f'QuadraticCost: C {tuple(C.shape)} and c {tuple(c.shape)} do not fit n_x={n_x}')
        self.quadratic = True
        C_final = C_final if C_final is not None else torch.zeros(n_x, n_x, dtype=C.dtype, device=C.device)
        c_final = c_final if c_final is not None else torch.zeros(n_x, dtype=C.dtype, device=C.device)
        for name, t in (('C', C), ('c', c), ('C_final', C_final), ('c_final', c_final)):
            if isinstance(t, nn.Parameter):
                setattr(self, name, t)                      # learnable
            else:                                           # converted with the module (.to, .double)
                self.register_buffer(name, t, persistent=False)

    def check(self, batch: int, horizon: int, dtype: torch.dtype) -> None:
        """Shapes ``C (n, n) | (T, n, n) | (B, T, n, n)``, ``c (n,) | (T, n) | (B, T, n)``,
        ``C_final (n_x, n_x) | (B, n_x, n_x)``, ``c_final (n_x,) | (B, n_x)``, dtype, finite values and
        positive semi-definite ``C_t``, ``C_final`` (the problem is convex); checked again only when
        the batch, horizon, dtype or a tensor (by identity and version) changes."""
        tensors = (self.C, self.c, self.C_final, self.c_final)
        key = (batch, horizon, dtype, *((id(t), t._version) for t in tensors))
        if getattr(self, '_checked', None) == key:
            return
        n, n_x, T = self.n_x + self.n_u, self.n_x, horizon
        specs = (('C', self.C, ((n, n), (T, n, n), (batch, T, n, n))),
                 ('c', self.c, ((n,), (T, n), (batch, T, n))),
                 ('C_final', self.C_final, ((n_x, n_x), (batch, n_x, n_x))),
                 ('c_final', self.c_final, ((n_x,), (batch, n_x))))
        for name, t, shapes in specs:
            if tuple(t.shape) not in shapes:
                raise ValueError(f'QuadraticCost: {name} has shape {tuple(t.shape)}, a problem of B={batch} '
                                 f'samples and T={T} steps needs one of {list(shapes)} (n_x={n_x}, '
                                 f'n_u={self.n_u})')
            if t.dtype != dtype:
                raise ValueError(f'QuadraticCost: {name} has dtype {t.dtype}, x_init {dtype}; convert one '
                                 f'of them')
        for name, t in (('C', self.C), ('C_final', self.C_final)):
            with torch.no_grad():
                sym = 0.5 * (t + t.mT)
                if not bool(torch.isfinite(sym).all()):
                    raise ValueError(f'QuadraticCost: {name} (shape {tuple(t.shape)}) contains NaN or inf')
                eig = torch.linalg.eigvalsh(sym)
                low = eig[..., 0]
                tol = 1e3 * torch.finfo(eig.dtype).eps * eig.abs().amax(-1).clamp_min(1.0)
                if bool((low < -tol).any()):
                    index = tuple((low < -tol).nonzero()[0].tolist())
                    raise ValueError(f'QuadraticCost: {name}{list(index) if index else ""} is not positive '
                                     f'semi-definite (smallest eigenvalue {float(low[index]):.3g}): the '
                                     f'problem is not convex and its minimum may not exist')
        self._checked = key           # the tensors are kept by the cost: their ids are not reused

    @property
    def batched(self) -> bool:
        return self.C.ndim == 4 or self.c.ndim == 3 or self.C_final.ndim == 3 or self.c_final.ndim == 2

    def take(self, rows: torch.Tensor) -> QuadraticCost:
        if not self.batched:
            return self
        sub = QuadraticCost.__new__(QuadraticCost)
        Cost.__init__(sub)
        sub.n_x, sub.n_u, sub.quadratic = self.n_x, self.n_u, True
        sub.C = self.C[rows] if self.C.ndim == 4 else self.C
        sub.c = self.c[rows] if self.c.ndim == 3 else self.c
        sub.C_final = self.C_final[rows] if self.C_final.ndim == 3 else self.C_final
        sub.c_final = self.c_final[rows] if self.c_final.ndim == 2 else self.c_final
        return sub

    def _stages(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The symmetric part of ``C`` and ``c`` as given (broadcastable against ``(B, T, ...)``)."""
        return 0.5 * (self.C + self.C.mT), self.c                  # only the symmetric part matters

    @staticmethod
    def _product(C: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """``C_t tau_t`` for ``tau (B, T, n)`` (or ``C tau`` for ``tau (B, n)``): one ``(B T, n) x (n, n)``
        product when ``C`` is shared."""
        if C.ndim == 2:
            return tau @ C                                           # C symmetric
        return (C @ tau.unsqueeze(-1)).squeeze(-1)

    def total(self, x, u, target=None, u_prev=None):
        C, c = self._stages()
        tau = torch.cat((x[:, :-1], u), -1)
        stage = (0.5 * self._product(C, tau) + c) * tau
        xT = x[:, -1]
        C_final = self.C_final.to(x)
        CxT = xT @ C_final if C_final.ndim == 2 else (xT.unsqueeze(-2) @ C_final).squeeze(-2)   # x_T^T C_T
        final = (0.5 * CxT + self.c_final.to(x)) * xT
        return stage.sum((-1, -2)) + final.sum(-1)

    def expand(self, x, u, target=None, u_prev=None, exact=False):
        batch, T, n_x, n_u = x.shape[0], u.shape[1], self.n_x, self.n_u
        C, c = self._stages()
        tau = torch.cat((x[:, :-1], u), -1)
        grad = self._product(C, tau) + c
        CT = (0.5 * (self.C_final + self.C_final.mT)).to(x)
        gT = self._product(CT, x[:, -1]) + self.c_final.to(x)
        CT = CT.expand(batch, n_x, n_x)
        lxx = torch.cat((C[..., :n_x, :n_x].expand(batch, T, n_x, n_x), CT.unsqueeze(1)), 1)
        lx = torch.cat((grad[..., :n_x], gT.unsqueeze(1)), 1)
        return CostExpansion(lxx, lx, C[..., n_x:, n_x:].expand(batch, T, n_u, n_u), grad[..., n_x:],
                             C[..., n_x:, :n_x].expand(batch, T, n_u, n_x))


class ResidualCost(Cost):
    """Any ``nn.Module`` residual as a cost: ``J = 0.5 sum_{t<T} |r(x_t, u_t)|^2 + 0.5 |r_T(x_T)|^2``.

    The solver uses the Gauss-Newton expansion (``J^T J``, ``J^T r``; Jacobians by ``vmap(jacrev)``);
    ``exact=True`` (the implicit backward) adds the residual curvature ``sum_i r_i d2 r_i``.

    Args:
        residual: ``(x (..., n_x), u (..., n_u), target (..., n_x) or None) -> (..., n_r)``.
        terminal: ``(x (..., n_x), target (..., n_x) or None) -> (..., n_f)``, or ``None``.
    """

    def __init__(self, residual: nn.Module, terminal: nn.Module | None = None):
        super().__init__()
        self.residual, self.terminal = residual, terminal

    @staticmethod
    def _targets(x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor | None:
        """The target per time step ``(B, T+1, n_x)`` (a goal is repeated), or ``None``."""
        if target is None:
            return None
        return target.unsqueeze(-2).expand_as(x) if target.ndim < x.ndim else target

    def total(self, x, u, target=None, u_prev=None):
        ref = self._targets(x, target)
        r = self.residual(x[:, :-1], u, None if ref is None else ref[:, :-1])
        J = 0.5 * r.square().sum((-1, -2))
        if self.terminal is not None:
            J = J + 0.5 * self.terminal(x[:, -1], None if ref is None else ref[:, -1]).square().sum(-1)
        return J

    def _expand_one(self, fn, args: list[torch.Tensor], target: torch.Tensor | None, exact: bool):
        """Per-sample Gauss-Newton blocks of ``0.5 |fn(*args, target)|^2`` over flattened rows."""
        n_args = len(args)

        def res(*a):
            return fn(*a[:n_args], a[n_args] if target is not None else None)

        inputs = [*args] + ([target] if target is not None else [])
        r = res(*inputs)
        jac = torch.func.vmap(torch.func.jacrev(res, argnums=tuple(range(n_args))))(*inputs)
        grads = [(j.mT @ r.unsqueeze(-1)).squeeze(-1) for j in jac]
        hess = [[ji.mT @ jk for jk in jac] for ji in jac]
        if exact:
            def weighted(*a):
                return (res(*a[:-1]) * a[-1]).sum()
            curv = torch.func.vmap(torch.func.hessian(weighted, argnums=tuple(range(n_args))))(*inputs, r)
            hess = [[hess[i][k] + curv[i][k] for k in range(n_args)] for i in range(n_args)]
        return grads, hess

    def expand(self, x, u, target=None, u_prev=None, exact=False):
        batch, T, n_x, n_u = x.shape[0], u.shape[1], x.shape[-1], u.shape[-1]
        ref = self._targets(x, target)
        ref_run = None if ref is None else ref[:, :-1].reshape(-1, n_x)
        (gx, gu), ((hxx, hxu), (hux, huu)) = self._expand_one(
            self.residual, [x[:, :-1].reshape(-1, n_x), u.reshape(-1, n_u)], ref_run, exact)
        lxx = hxx.view(batch, T, n_x, n_x)
        lx = gx.view(batch, T, n_x)
        if self.terminal is not None:
            (gT,), ((hT,),) = self._expand_one(self.terminal, [x[:, -1]], None if ref is None else ref[:, -1],
                                               exact)
        else:
            gT, hT = x.new_zeros(batch, n_x), x.new_zeros(batch, n_x, n_x)
        return CostExpansion(torch.cat((lxx, hT.unsqueeze(1)), 1), torch.cat((lx, gT.unsqueeze(1)), 1),
                             huu.view(batch, T, n_u, n_u), gu.view(batch, T, n_u),
                             hux.view(batch, T, n_u, n_x))
