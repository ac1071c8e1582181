"""Box-constrained iLQR (box-DDP with Gauss-Newton dynamics) as a differentiable ``nn.Module``.

    min_u  J(x, u)   s.t.  x_{t+1} = f(x_t, u_t),  x_0 = x_init,  u_lower <= u_t <= u_upper

Each iteration linearises the dynamics and expands the cost along the current trajectory, runs
the box-DDP Riccati pass (:mod:`.lqr`) and a closed-loop roll-out for several step sizes at once
(a parallel line search: one batched roll-out instead of a sequential loop). Samples converge
and freeze individually. Gradients: ``grad_mode='implicit'`` (KKT conditions at the solution,
:mod:`.implicit`), ``'unroll'`` (autograd through the iterations) or ``'none'``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .condensed import condensed_step
from .costs import Cost
from .dynamics import Dynamics, StepFn
from .lqr import riccati, stage_matrices

GRAD_MODES = ('implicit', 'unroll', 'none')
SOLVERS = ('auto', 'riccati', 'condensed')


class MPCSolution(NamedTuple):
    """Result of :class:`MPC` for a batch of ``B`` problems.

    Attributes:
        states: ``(B, T+1, n_x)`` optimal states, ``states[:, 0] = x_init``.
        controls: ``(B, T, n_u)`` optimal controls.
        costs: ``(B,)`` objective values.
        iterations: ``(B,)`` int64, iterations each sample used.
        converged: ``(B,)`` bool, whether the sample met the tolerance within the iteration cap.
        gains: ``(B, T, n_u, n_x)`` state-feedback gains of the last Riccati pass (detached), or
            ``None`` when the condensed solver ran.
        clamped: ``(B, T, n_u)`` bool, controls held at a bound (the active set).
    """

    states: torch.Tensor
    controls: torch.Tensor
    costs: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    gains: torch.Tensor | None
    clamped: torch.Tensor


def shift_controls(controls: torch.Tensor) -> torch.Tensor:
    """Warm start for the next receding-horizon step: drop ``u_0``, repeat the last control.

    ``controls (B, T, n_u)`` -> ``(B, T, n_u)``.
    """
    return torch.cat((controls[:, 1:], controls[:, -1:]), 1)


def rollout(step: StepFn, x_init: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
    """Open-loop roll-out: ``x_init (B, n_x)``, ``controls (B, T, n_u)`` -> states ``(B, T+1, n_x)``."""
    xs = [x_init]
    for u in controls.unbind(1):
        xs.append(step(xs[-1], u))
    return torch.stack(xs, 1)


def _bound(value, batch: int, T: int, n_u: int, like: torch.Tensor) -> torch.Tensor | None:
    """A control bound as ``(B, T, n_u)`` (``None`` stays ``None``)."""
    if value is None:
        return None
    b = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if b.ndim == 3 and b.shape[1] != T:
        raise ValueError(f'MPC: bound has horizon {b.shape[1]}, expected T={T}')
    return b.expand(batch, T, n_u) if b.ndim <= 3 else b


class MPC(nn.Module):
    """Differentiable box-constrained iLQR model-predictive controller.

    Args:
        dynamics: a :class:`~diffopt_ros.mpc.dynamics.Dynamics` model.
        cost: a :class:`~diffopt_ros.mpc.costs.Cost`.
        horizon: ``T`` steps.
        u_lower, u_upper: control bounds: float, ``(n_u,)`` or ``(B, T, n_u)``; ``None`` = unbounded.
        max_iterations: iteration cap.
        tolerance: converged when the largest control change of an accepted step is below this
            (control units) ...
        cost_tolerance: ... or when the predicted or actual relative cost decrease is below this
            (at least ``1600 eps`` of the dtype; ``0`` disables this test).
        line_search: step sizes tried in parallel (the best decreasing one is taken).
        regularization: initial Levenberg-Marquardt term on ``Q_uu`` (grows on failed steps).
        grad_mode: ``'implicit'``, ``'unroll'`` or ``'none'``.
        solver: subproblem solver: ``'riccati'`` (box-DDP: sequential Riccati pass, closed-loop
            line search; scales to large batches), ``'condensed'`` (one dense box QP in the
            controls, open-loop line search; fewest operations for small batches and horizons)
            or ``'auto'`` (condensed for ``B <= 2``, or ``B <= 16`` with ``n_u > 1``, while
            ``B (T n_x)^2 T n_u <= 3e8`` and ``T n_u <= 200``).
    """

    def __init__(self, dynamics: Dynamics, cost: Cost, horizon: int, u_lower=None, u_upper=None, *,
                 max_iterations: int = 50, tolerance: float = 1e-6, cost_tolerance: float = 1e-10,
                 line_search: tuple[float, ...] = (1.0, 0.5, 0.2, 0.05), regularization: float = 0.0,
                 grad_mode: str = 'implicit', solver: str = 'auto'):
        super().__init__()
        if grad_mode not in GRAD_MODES:
            raise ValueError(f'MPC: grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}')
        if solver not in SOLVERS:
            raise ValueError(f'MPC: solver must be one of {SOLVERS}, got {solver!r}')
        if horizon < 1:
            raise ValueError(f'MPC: horizon must be >= 1, got {horizon}')
        self.dynamics, self.cost = dynamics, cost
        self.horizon = int(horizon)
        self.u_lower, self.u_upper = u_lower, u_upper
        self.max_iterations = int(max_iterations)
        self.tolerance, self.cost_tolerance = float(tolerance), float(cost_tolerance)
        self.line_search = tuple(float(a) for a in line_search)
        self.regularization = float(regularization)
        self.grad_mode = grad_mode
        self.solver = solver

    def forward(self, x_init: torch.Tensor, target: torch.Tensor | None = None,
                u_init: torch.Tensor | None = None, u_prev: torch.Tensor | None = None, *,
                u_lower=None, u_upper=None, grad_mode: str | None = None) -> MPCSolution:
        """Solve a batch of problems.

        Args:
            x_init: ``(B, n_x)`` initial states.
            target: goal ``(B, n_x)`` or reference ``(B, T+1, n_x)`` passed to the cost.
            u_init: ``(B, T, n_u)`` initial controls (warm start, e.g. :func:`shift_controls`).
            u_prev: ``(B, n_u)`` last applied control (for a control-rate penalty).
            u_lower: override the constructor's lower bound for this call.
            u_upper: override the constructor's upper bound for this call.
            grad_mode: override the constructor's gradient mode.

        Returns:
            :class:`MPCSolution`.
        """
        mode = self.grad_mode if grad_mode is None else grad_mode
        if mode not in GRAD_MODES:
            raise ValueError(f'MPC: grad_mode must be one of {GRAD_MODES}, got {mode!r}')
        dyn = self.dynamics
        if x_init.ndim != 2:
            raise ValueError(f'MPC: x_init must be (B, n_x), got shape {tuple(x_init.shape)}')
        dyn.check_shapes(x_init)
        batch, T, n_u = x_init.shape[0], self.horizon, dyn.n_u
        lower = _bound(self.u_lower if u_lower is None else u_lower, batch, T, n_u, x_init)
        upper = _bound(self.u_upper if u_upper is None else u_upper, batch, T, n_u, x_init)
        if (lower is None) != (upper is None):
            inf = torch.full((batch, T, n_u), float('inf'), dtype=x_init.dtype, device=x_init.device)
            lower = -inf if lower is None else lower
            upper = inf if upper is None else upper
        if u_init is None:
            u_init = x_init.new_zeros(batch, T, n_u)
        elif u_init.shape != (batch, T, n_u):
            raise ValueError(f'MPC: u_init must be {(batch, T, n_u)}, got {tuple(u_init.shape)}')
        if lower is not None:
            u_init = torch.maximum(torch.minimum(u_init, upper), lower)
        if mode == 'unroll':
            return self._solve(x_init, target, u_init, u_prev, lower, upper)
        with torch.no_grad():
            sol = self._solve(x_init.detach(), _detach(target), u_init.detach(), _detach(u_prev),
                              lower, upper)
        if mode == 'none' or not torch.is_grad_enabled():
            return sol
        from .implicit import attach_implicit_gradients
        return attach_implicit_gradients(self, sol, x_init, target, u_prev)

    def _solve(self, x_init, target, u, u_prev, lower, upper) -> MPCSolution:
        dyn, cost = self.dynamics, self.cost
        batch = u.shape[0]
        step = dyn.stepper()
        x = rollout(step, x_init, u)
        J = cost.total(x, u, target, u_prev)
        alphas = torch.tensor(self.line_search, dtype=x.dtype, device=x.device)
        n_alpha = alphas.shape[0]
        active = torch.ones(batch, dtype=torch.bool, device=x.device)
        iterations = torch.zeros(batch, dtype=torch.long, device=x.device)
        reg = torch.full((batch,), self.regularization, dtype=x.dtype, device=x.device)
        use_reg = self.regularization > 0
        roundoff = 16.0 * torch.finfo(x.dtype).eps
        # relative cost changes below ~100 eps are not measurable (0 disables the cost test)
        cost_tolerance = max(self.cost_tolerance, 100 * roundoff) if self.cost_tolerance > 0 else -1.0
        condensed = self.solver == 'condensed' or (self.solver == 'auto' and _condensed_is_cheaper(x, u))
        G = clamped = None
        for _ in range(self.max_iterations):
            A, B = dyn.jacobians(x[:, :-1], u)
            expansion = cost.expand(x, u, target, u_prev)
            dlow = dhigh = None
            if lower is not None:
                dlow, dhigh = lower - u, upper - u
            if condensed:
                du, clamped, predicted = condensed_step(expansion, A, B, dlow, dhigh,
                                                         reg if use_reg else None)
                x_new, u_new = _open_loop_search(step, x_init, u, du, alphas, lower, upper)
            else:
                stages = stage_matrices(expansion, A, B)
                G, clamped, predicted = riccati(stages, dlow, dhigh, reg if use_reg else None)
                x_new, u_new = _line_search(step, stages.augmented, x, u, G, alphas, lower, upper, u_prev)
            J_new = cost.total(x_new.flatten(0, 1), u_new.flatten(0, 1), _repeat(target, n_alpha),
                               _repeat(u_prev, n_alpha)).view(n_alpha, batch)
            # the longest step whose cost is within round-off of the best one
            J_min = J_new.amin(0)
            best = (J_new <= J_min + roundoff * J_min.abs()).to(torch.int8).argmax(0)
            pick = torch.arange(batch, device=x.device)
            J_best = J_new[best, pick]
            x_best, u_best = x_new[best, pick], u_new[best, pick]
            # accept round-off level increases too, so that steps keep converging to stationarity
            improved = (J_best <= J + roundoff * J.abs()) & active
            change = (u_best - u).abs().amax((1, 2))
            decrease = J - J_best
            keep = improved.view(-1, 1, 1)
            x, u = torch.where(keep, x_best, x), torch.where(keep, u_best, u)
            J_old, J = J, torch.where(improved, J_best, J)
            iterations = iterations + active.long()
            done = improved & ((change <= self.tolerance) | (predicted <= cost_tolerance * J_old.abs())
                               | (decrease.abs() < cost_tolerance * J_old.abs()))
            stalled = active & ~improved & (change <= self.tolerance)
            if use_reg or bool((active & ~improved & ~stalled).any()):
                use_reg = True
                grow = active & ~improved & ~stalled
                reg = torch.where(grow, (reg * 10.0).clamp_min(1e-6), reg * 0.5)
            active = active & ~done & ~stalled & (reg < 1e8)
            if not bool(active.any()):
                break
        converged = ~active & (reg < 1e8)
        gains = None if G is None else G[..., :dyn.n_x].detach()
        return MPCSolution(x, u, J, iterations, converged, gains, clamped)


def _condensed_is_cheaper(x: torch.Tensor, u: torch.Tensor) -> bool:
    """Rule for ``solver='auto'``: the dense work of the condensed step (the ``(T n_x)^2 T n_u``
    triangular solve per sample) is small enough that saving ``T`` sequential Riccati steps wins."""
    batch, T, n_u = u.shape
    n_x = x.shape[-1]
    small = batch <= 2 or (n_u > 1 and batch <= 16)   # m > 1: Riccati's per-step box QPs cost most
    return small and T * n_u <= 200 and batch * (T * n_x) ** 2 * (T * n_u) <= 3e8


def _detach(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


def _repeat(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """``(B, ...)`` -> ``(n * B, ...)`` (``None`` stays ``None``; unbatched tensors pass)."""
    if t is None or t.ndim < 2:
        return t
    return t.repeat(n, *([1] * (t.ndim - 1)))


def _open_loop_search(step: StepFn, x_init: torch.Tensor, u: torch.Tensor, du: torch.Tensor,
                      alphas: torch.Tensor, lower, upper) -> tuple[torch.Tensor, torch.Tensor]:
    """Open-loop roll-outs of ``clip(u + a du)`` per step size: ``(S, B, T+1, n_x)``, ``(S, B, T, n_u)``."""
    n_alpha, (batch, T, n_u) = alphas.shape[0], u.shape
    trial = u.unsqueeze(0) + alphas.view(-1, 1, 1, 1) * du.unsqueeze(0)
    if lower is not None:
        trial = torch.maximum(torch.minimum(trial, upper), lower)
    x = rollout(step, x_init.repeat(n_alpha, 1), trial.view(n_alpha * batch, T, n_u))
    return x.view(n_alpha, batch, T + 1, -1), trial


def _line_search(step: StepFn, augmented: bool, x: torch.Tensor, u: torch.Tensor, G: torch.Tensor,
                 alphas: torch.Tensor, lower, upper, u_prev) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-loop roll-outs ``u_t = clip(u_t + a k_t + K_t dz_t)`` for every step size ``a``.

    Returns states ``(S, B, T+1, n_x)`` and controls ``(S, B, T, n_u)`` for ``S`` step sizes.
    """
    n_alpha, (batch, T, n_u), n_x = alphas.shape[0], u.shape, x.shape[-1]
    N = n_alpha * batch
    feed = (u.unsqueeze(0) + alphas.view(-1, 1, 1, 1) * G[..., -1].unsqueeze(0)).reshape(N, T, n_u, 1)
    Kx = G[..., :n_x].repeat(n_alpha, 1, 1, 1)
    x_nom = x.repeat(n_alpha, 1, 1)
    feeds, Kxs, xs_nom = feed.unbind(1), Kx.unbind(1), x_nom.unbind(1)
    if augmented:
        Kus = G[..., n_x:-1].repeat(n_alpha, 1, 1, 1).unbind(1)
        us_nom = u.repeat(n_alpha, 1, 1).unbind(1)
    if lower is not None:
        lows, highs = lower.repeat(n_alpha, 1, 1).unbind(1), upper.repeat(n_alpha, 1, 1).unbind(1)
    xt = x_nom[:, 0]
    xs, us = [xt], []
    for t in range(T):
        ut = torch.baddbmm(feeds[t], Kxs[t], (xt - xs_nom[t]).unsqueeze(-1))
        if augmented and t > 0:
            ut = torch.baddbmm(ut, Kus[t], (us[-1] - us_nom[t - 1]).unsqueeze(-1))
        ut = ut.squeeze(-1)
        if lower is not None:
            ut = torch.maximum(torch.minimum(ut, highs[t]), lows[t])
        xt = step(xt, ut)
        xs.append(xt)
        us.append(ut)
    return (torch.stack(xs, 1).view(n_alpha, batch, T + 1, n_x),
            torch.stack(us, 1).view(n_alpha, batch, T, n_u))
