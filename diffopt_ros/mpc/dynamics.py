"""Discrete-time dynamics interface, linear dynamics and the neural residual wrapper.

A dynamics model is an ``nn.Module`` mapping ``(x (..., n_x), u (..., n_u)) -> x_next (..., n_x)``
over one step of ``dt`` seconds. Any leading batch shape works, so the same module is used in
batched roll-outs ``(B, n_x)``, time-stacked linearisations ``(B, T, n_x)`` and under
``torch.func.vmap`` (single samples ``(n_x,)``). Learnable quantities are ``nn.Parameter``s.
A ``forward`` must therefore index the last axis (``x[..., 0]``, ``torch.stack(..., dim=-1)``):
one written batch-first (``x[:, 0]``) fails on a single sample, and the solver's automatic
Jacobians say so in a ``ValueError`` (a model may instead override ``jacobians`` and
``weighted_hessian``, and must then still accept ``(B, T, n_x)`` inputs).

The solver asks these of a model:

* :meth:`Dynamics.stepper` - a step function with parameter-derived constants computed once per
  solve, and :meth:`Dynamics.rollout_fn` - the open-loop roll-out (by default ``T`` calls of the
  step; models override it with a cheaper recursion where one exists: the roll-outs of the
  iterations and line searches are the hot path at small batch);
* :meth:`Dynamics.jacobians` - ``A = df/dx (..., n_x, n_x)``, ``B = df/du (..., n_x, n_u)``,
  differentiable w.r.t. the parameters (analytic where cheap, else ``vmap(jacrev)``), and
  :meth:`Dynamics.weighted_hessian` - the curvature the implicit backward needs (likewise);
* ``angle_indices`` - state entries that are angles, so costs wrap their errors.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RolloutFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def rollout(step: StepFn, x_init: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
    """Open-loop roll-out: ``x_init (B, n_x)``, ``controls (B, T, n_u)`` -> states ``(B, T+1, n_x)``."""
    xs = [x_init]
    for u in controls.unbind(1):
        xs.append(step(xs[-1], u))
    return torch.stack(xs, 1)


class Dynamics(nn.Module):
    """Base class of discrete-time models ``x_{t+1} = f(x_t, u_t)``.

    Attributes:
        n_x: state dimension.
        n_u: control dimension.
        dt: step (s).
        angle_indices: indices of angular state entries (rad), wrapped by tracking costs.
        linear: the model is affine in ``(x, u)`` (the implicit backward skips its Hessian).
    """

    n_x: int
    n_u: int
    dt: float
    angle_indices: tuple[int, ...] = ()
    linear: bool = False        # affine in (x, u): second derivatives vanish
    # time-varying: the step depends on the step index t; stepper() then returns step(x, u, t) and
    # forward/jacobians take whole horizons (B, T, n_x)
    time_varying: bool = False

    @property
    def batched(self) -> bool:
        """Whether the model holds per-sample data (a leading batch axis); the solver then gives
        each subset of samples its own rows (:meth:`take`)."""
        return False

    def take(self, rows: torch.Tensor) -> Dynamics:
        """The model of the samples ``rows (K,)`` (indices into the batch, repeats allowed): ``self``
        unless the model is :attr:`batched`."""
        return self

    def graph_tensors(self) -> list[torch.Tensor]:
        """Tensors other than ``parameters()`` that the model computes with and that may carry a graph
        (the implicit gradients reach them too); default none."""
        return []

    def check(self, batch: int, horizon: int, dtype: torch.dtype) -> None:
        """Raise a ``ValueError`` if the model's own data do not fit a problem of ``batch`` samples,
        ``horizon`` steps and ``dtype`` (called by ``MPC`` before a solve; default: nothing to check)."""

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One step: ``x (..., n_x)``, ``u (..., n_u)`` -> ``x_next (..., n_x)``."""
        raise NotImplementedError

    def stepper(self) -> StepFn:
        """The step function used in roll-outs (override to precompute parameter constants)."""
        return self.forward

    def rollout_fn(self) -> RolloutFn:
        """The open-loop roll-out used by the solvers, ``(x_init (B, n_x), controls (B, T, n_u)) ->
        states (B, T+1, n_x)``: :func:`rollout` of :meth:`stepper` unless a model overrides it."""
        step = self.stepper()
        return lambda x_init, controls: rollout(step, x_init, controls)

    def jacobians(self, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)`` at ``x (..., n_x)``, ``u (..., n_u)``: shapes ``(..., n_x, n_x)``, ``(..., n_x, n_u)``.

        The default differentiates :meth:`forward` with ``torch.func.jacrev`` under ``vmap``;
        models override it with closed forms.
        """
        return autodiff_jacobians(self.forward, x, u)

    def weighted_hessian(self, x: torch.Tensor, u: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Second derivatives ``d2 (lam . f(x, u)) / d(x, u)2`` ``(N, n_x + n_u, n_x + n_u)`` for
        ``x (N, n_x)``, ``u (N, n_u)``, ``lam (N, n_x)`` (the dynamics' curvature in the exact
        Hessian of the implicit backward). The default differentiates :meth:`forward` twice with
        ``torch.func`` under ``vmap``; models override it with closed forms."""
        n_x = x.shape[-1]

        def weighted(xu: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return (w * self(xu[:n_x], xu[n_x:])).sum()

        try:
            return torch.func.vmap(torch.func.hessian(weighted))(torch.cat((x, u), -1), lam)
        except (IndexError, RuntimeError, ValueError) as error:
            check_unbatched(self.forward, x, u, error)
            raise

    def check_shapes(self, x: torch.Tensor, u: torch.Tensor | None = None) -> None:
        """Raise ``ValueError`` naming the model if ``x``/``u`` have the wrong trailing size."""
        if x.shape[-1] != self.n_x:
            raise ValueError(f'{type(self).__name__}: state has {x.shape[-1]} entries, '
                             f'expected n_x={self.n_x}')
        if u is not None and u.shape[-1] != self.n_u:
            raise ValueError(f'{type(self).__name__}: control has {u.shape[-1]} entries, '
                             f'expected n_u={self.n_u}')


def check_unbatched(fn: Callable, x: torch.Tensor, u: torch.Tensor, error: Exception) -> None:
    """Raise a ``ValueError`` explaining ``error`` (raised by ``fn`` under ``torch.func.vmap``) if
    ``fn`` fails on a single unbatched sample ``x (n_x,)``, ``u (n_u,)`` but works on a batch: a
    model written batch-first (``x[:, 0]``). Returns (the caller re-raises ``error``) otherwise."""
    name = getattr(fn, '__self__', fn)
    name = type(name).__name__ if isinstance(name, nn.Module) else getattr(fn, '__qualname__', repr(fn))
    with torch.no_grad():
        try:
            fn(x[:1], u[:1])
        except Exception:       # noqa: BLE001  (fails batched too: not a batch-first model)
            return
        try:
            fn(x[0], u[0])
        except (IndexError, RuntimeError, ValueError):
            raise ValueError(
                f'{name}: the dynamics work on a batch (B, n_x) but not on a single state (n_x,) '
                f'({type(error).__name__}: {error}). The solver differentiates them with torch.func.vmap, '
                f'which calls them on unbatched samples: index the last axis (x[..., 0], not x[:, 0]) '
                f'and use dim=-1 (torch.cat/stack/sum), or override Dynamics.jacobians and '
                f'Dynamics.weighted_hessian') from error


def batch_shape(x: torch.Tensor, u: torch.Tensor) -> torch.Size:
    """The batch shape ``(...)`` of ``x (..., n_x)`` and ``u (..., n_u)`` broadcast together
    (``torch.broadcast_shapes`` only where they differ: it costs tens of microseconds a call, a
    millisecond on a loaded machine, once per iteration in the Jacobians)."""
    batch = x.shape[:-1]
    return batch if u.shape[:-1] == batch else torch.broadcast_shapes(batch, u.shape[:-1])


def autodiff_jacobians(fn: StepFn, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Jacobians of ``fn(x, u)`` by batched reverse mode; ``x (..., n_x)``, ``u (..., n_u)``.

    ``fn`` must accept any leading shape, including none (single samples under ``torch.func.vmap``);
    a batch-first ``fn`` raises a ``ValueError`` that says so (:func:`check_unbatched`).
    """
    batch = batch_shape(x, u)
    xf = x.expand(*batch, x.shape[-1]).reshape(-1, x.shape[-1])
    uf = u.expand(*batch, u.shape[-1]).reshape(-1, u.shape[-1])
    try:
        A, B = torch.func.vmap(torch.func.jacrev(fn, argnums=(0, 1)))(xf, uf)
    except (IndexError, RuntimeError, ValueError) as error:
        check_unbatched(fn, xf, uf, error)
        raise
    return A.reshape(*batch, *A.shape[-2:]), B.reshape(*batch, *B.shape[-2:])


def positive_parameter(value: float, name: str) -> nn.Parameter:
    """A log-parametrised positive scalar parameter initialised to ``value`` (> 0): ``log(value)``
    computed in float64 and rounded once to the default dtype."""
    value = float(value)
    if not value > 0.0:
        raise ValueError(f'{name} must be > 0, got {value}')
    return nn.Parameter(torch.tensor(math.log(value), dtype=torch.float64).to(torch.get_default_dtype()))


class LinearDynamics(Dynamics):
    """``x_{t+1} = A x_t + B u_t (+ c)``, learnable, shared or per step and per sample.

    ``A``, ``B`` and ``c`` are shared ``(n_x, n_x)``, ``(n_x, n_u)``, ``(n_x,)``, time-varying
    ``(T, ...)`` or per sample and time-varying ``(B, T, ...)`` (mpc.pytorch's ``LinDx``; see
    :meth:`from_lindx`). Shared matrices are ``nn.Parameter``s (learnable); time-varying ones are
    kept as given, so a tensor that requires grad (or a parameter) passes gradients to whatever
    produced it (e.g. a learned linearisation). A time-varying model's ``forward`` and
    ``jacobians`` take whole horizons ``(B, T, n_x)`` (or ``(T, n_x)``) and its :meth:`stepper`
    returns ``step(x (B', n_x), u (B', n_u), t)`` with ``B'`` a multiple of the model's batch.

    Args:
        A: initial state matrix ``(n_x, n_x)``, ``(T, n_x, n_x)`` or ``(B, T, n_x, n_x)``.
        B: initial input matrix ``(n_x, n_u)``, ``(T, n_x, n_u)`` or ``(B, T, n_x, n_u)``.
        c: optional drift ``(n_x,)``, ``(T, n_x)`` or ``(B, T, n_x)`` (learnable when shared).
        dt: step (s), informational.
    """

    def __init__(self, A: torch.Tensor, B: torch.Tensor, c: torch.Tensor | None = None, dt: float = 1.0):
        super().__init__()
        lead = A.shape[:-2]
        if (A.ndim not in (2, 3, 4) or A.shape[-1] != A.shape[-2] or B.ndim != A.ndim
                or B.shape[:-1] != A.shape[:-1] or (c is not None and tuple(c.shape) != tuple(A.shape[:-1]))):
            raise ValueError(f'LinearDynamics: A must be (n_x, n_x), (T, n_x, n_x) or (B, T, n_x, n_x) and '
                             f'B, c the same leading shape with (n_x, n_u), (n_x,); got A {tuple(A.shape)}, '
                             f'B '
                             f'{tuple(B.shape)}, c {None if c is None else tuple(c.shape)}')
        self.n_x, self.n_u, self.dt = A.shape[-1], B.shape[-1], float(dt)
        self.linear = True
        self.time_varying = len(lead) > 0
        if self.time_varying:                # kept as given (a graph passes); converted with .to/.double
            for name, t in (('A', A), ('B', B), ('c', c)):
                if isinstance(t, nn.Parameter) or t is None:
                    setattr(self, name, t)
                else:
                    self.register_buffer(name, t, persistent=False)
        else:
            self.A = nn.Parameter(A.detach().clone())
            self.B = nn.Parameter(B.detach().clone())
            self.c = None if c is None else nn.Parameter(c.detach().clone())

    @classmethod
    def from_lindx(cls, F: torch.Tensor, f: torch.Tensor | None = None, dt: float = 1.0) -> LinearDynamics:
        """mpc.pytorch's ``LinDx(F, f)``: ``x_{t+1} = F_t [x_t; u_t] (+ f_t)`` with ``F`` of shape
        ``(B, T, n_x, n_x + n_u)``, ``(T, ...)`` or ``(n_x, n_x + n_u)`` and ``f`` of ``F``'s leading
        shape with ``(n_x,)``. (mpc.pytorch stores ``(T, B, ...)``: pass ``F.transpose(0, 1)``.)"""
        n_x = F.shape[-2]
        return cls(F[..., :n_x], F[..., n_x:], f, dt)

    @property
    def batched(self) -> bool:
        return self.A.ndim == 4

    def graph_tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.A, self.B, self.c) if t is not None and not isinstance(t, nn.Parameter)]

    def check(self, batch: int, horizon: int, dtype: torch.dtype) -> None:
        if not self.time_varying:
            return
        lead = (batch, horizon) if self.batched else (horizon,)
        for name, t in (('A', self.A), ('B', self.B), ('c', self.c)):
            if t is None:
                continue
            if tuple(t.shape[:len(lead)]) != lead:
                raise ValueError(f'LinearDynamics: {name} has shape {tuple(t.shape)}, a problem of B={batch} '
                                 f'samples and T={horizon} steps needs leading axes {lead}')
            if t.dtype != dtype:
                raise ValueError(f'LinearDynamics: {name} has dtype {t.dtype}, x_init {dtype}; convert one '
                                 f'of them')

    def take(self, rows: torch.Tensor) -> LinearDynamics:
        if not self.batched:
            return self
        return LinearDynamics(self.A[rows], self.B[rows], None if self.c is None else self.c[rows], self.dt)

    def _check_horizon(self, x: torch.Tensor) -> None:
        T = self.A.shape[-3]
        if x.ndim < 2 or x.shape[-2] != T or (self.batched and x.ndim != 3):
            expected = f'(B, {T}, n_x)' if self.batched else f'(..., {T}, n_x)'
            raise ValueError(f'LinearDynamics: time-varying over T={T} steps: states must be {expected} '
                             f'(whole horizons), got {tuple(x.shape)}; step with stepper()(x, u, t)')

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if not self.time_varying:
            return nn.functional.linear(x, self.A) + nn.functional.linear(u, self.B, self.c)
        self._check_horizon(x)
        out = (self.A @ x.unsqueeze(-1)).squeeze(-1) + (self.B @ u.unsqueeze(-1)).squeeze(-1)
        return out if self.c is None else out + self.c

    def stepper(self) -> StepFn:
        if self.time_varying:
            return self._timed_step
        At, Bt = self.A.mT.contiguous(), self.B.mT.contiguous()
        c = torch.zeros_like(self.A[0]) if self.c is None else self.c

        def step(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            if x.ndim == 2 and u.ndim == 2:
                return torch.addmm(torch.addmm(c, u, Bt), x, At)
            return x @ At + u @ Bt + c

        return step

    def _timed_step(self, x: torch.Tensor, u: torch.Tensor, t: int) -> torch.Tensor:
        """Step ``t`` for ``x (B', n_x)``, ``u (B', n_u)``: ``B'`` rows, sample-major, per sample of a
        batched model (``B'`` a multiple of its batch: the trials of a line search)."""
        A, B = self.A[..., t, :, :], self.B[..., t, :, :]
        if not self.batched:
            out = x @ A.mT + u @ B.mT
            return out if self.c is None else out + self.c[t]
        batch = A.shape[0]
        xs, us = x.reshape(batch, -1, self.n_x), u.reshape(batch, -1, self.n_u)
        out = xs @ A.mT + us @ B.mT
        if self.c is not None:
            out = out + self.c[:, t].unsqueeze(1)
        return out.reshape(x.shape)

    def rollout_fn(self) -> RolloutFn:
        if not self.time_varying:
            return super().rollout_fn()

        def roll_out(x_init: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
            xs = [x_init]
            for t, u in enumerate(controls.unbind(1)):
                xs.append(self._timed_step(xs[-1], u, t))
            return torch.stack(xs, 1)

        return roll_out

    def jacobians(self, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = batch_shape(x, u)
        if self.time_varying:
            self._check_horizon(x)
        return self.A.expand(*batch, self.n_x, self.n_x), self.B.expand(*batch, self.n_x, self.n_u)


class NeuralResidual(Dynamics):
    """A base model plus a learned correction: ``f(x, u) = base(x, u) + dt * mlp([x, u])``.

    The last layer starts at zero, so the wrapped model initially equals ``base``. Jacobians are
    the base model's (analytic when it has them) plus the MLP's by ``vmap(jacrev)``.

    Args:
        base: the physical model (its parameters stay learnable).
        hidden: hidden layer widths.
        activation: hidden activation module class.
    """

    def __init__(self, base: Dynamics, hidden: tuple[int, ...] = (64, 64),
                 activation: type[nn.Module] = nn.Tanh):
        super().__init__()
        self.base = base
        self.n_x, self.n_u, self.dt = base.n_x, base.n_u, base.dt
        self.angle_indices = base.angle_indices
        widths = (base.n_x + base.n_u, *hidden, base.n_x)
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers.append(activation())
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.mlp = nn.Sequential(*layers)

    def residual(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The learned term ``dt * mlp([x, u])``, shape ``(..., n_x)``."""
        return self.dt * self.mlp(torch.cat((x, u), dim=-1))

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.base(x, u) + self.residual(x, u)

    def stepper(self) -> StepFn:
        base_step = self.base.stepper()
        return lambda x, u: base_step(x, u) + self.residual(x, u)

    def jacobians(self, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        A, B = self.base.jacobians(x, u)
        Ar, Br = autodiff_jacobians(self.residual, x, u)
        return A + Ar, B + Br
