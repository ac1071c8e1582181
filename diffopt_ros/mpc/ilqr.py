"""Box-constrained iLQR (box-DDP with Gauss-Newton dynamics) as a differentiable ``nn.Module``.

    min_u  J(x, u)   s.t.  x_{t+1} = f(x_t, u_t),  x_0 = x_init,  u_lower <= u_t <= u_upper

Each iteration linearises the dynamics and expands the cost along the current trajectory, runs
the box-DDP Riccati pass (:mod:`.lqr`) and a closed-loop roll-out for several step sizes at once
(a parallel line search: one batched roll-out instead of a sequential loop; in groups of step
sizes when the batch is large). Samples converge and freeze individually, and each iteration
runs on the samples still iterating only. Gradients (:class:`~diffopt_ros.modes.Backward`):
``backward='implicit'`` (KKT conditions at the solution, :mod:`.implicit`), ``'unroll'`` (autograd
through the iterations) or ``'none'``.

The module holds the iteration itself (:class:`MPC`'s forward, convergence and freezing, the
backward dispatch), about 400 lines; the pieces that stand alone are its neighbours
(:mod:`.lqr`, :mod:`.line_search`, :mod:`.condensed`, :mod:`.tensors`, :mod:`.implicit`).
"""
from __future__ import annotations

import math
import time
from functools import partial

import torch
from torch import nn

from diffopt_ros.modes import Backward, backward_mode
from diffopt_ros.status import batch_status

from .condensed import (
    CondensedModel,
    condensed_fits,
    condensed_is_cheaper,
    condensed_step,
    linear_rollout,
    model_certificate,
)
from .costs import Cost
from .dynamics import Dynamics
from .implicit import attach_implicit_gradients
from .kkt import certificate
from .line_search import closed_loop_search, exact_step, linear_search, open_loop_search, search_steps
from .lqr import riccati, stage_matrices
from .solution import MPCSolution
from .solve_blocks import solve_scope
from .tensors import detached, normal_tensors, take_rows
from .validate import (
    bound_tensor,
    check_bound_order,
    check_inputs,
    check_problem,
    diagnose_nonfinite,
    dtype_probe,
)

#: The backward modes MPC implements (:class:`~diffopt_ros.modes.Backward`).
BACKWARD_MODES = (Backward.IMPLICIT, Backward.UNROLL, Backward.NONE)
KKT_TOLERANCE = 1e-3        # least default largest MPCSolution.kkt_residual of a converged sample
SOLVERS = ('auto', 'riccati', 'condensed')


_UNCACHED = object()


def _bound_key(value):
    """What identifies a bound argument for :meth:`MPC._bounds`' cache: a number or ``None`` itself,
    a flat sequence of numbers by value, a tensor without a graph by identity and version; anything
    else (a tensor that requires grad, nested sequences) is not cached (``_UNCACHED``)."""
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, torch.Tensor):
        return _UNCACHED if value.requires_grad else (id(value), value._version)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return tuple(value)
    return _UNCACHED


def shift_one_step(controls: torch.Tensor) -> torch.Tensor:
    """Warm start for the next receding-horizon step, one step ``dt`` later: drop ``u_0``, repeat
    the last control (for a plan made an arbitrary time ago, see
    :func:`diffopt_ros.mpc.receding.advance_plan`).

    ``controls (B, T, n_u)`` -> ``(B, T, n_u)``.
    """
    return torch.cat((controls[:, 1:], controls[:, -1:]), 1)


class MPC(nn.Module):
    """Differentiable box-constrained iLQR model-predictive controller.

    Control loops call :meth:`plan` (no gradients, whatever ``backward`` is): calling the module
    itself with the default ``backward='implicit'`` and a model or cost with ``nn.Parameter``s
    builds the implicit-gradient graph on every call (about twice the time of a warm step).

    Args:
        dynamics: a :class:`~diffopt_ros.mpc.dynamics.Dynamics` model.
        cost: a :class:`~diffopt_ros.mpc.costs.Cost`.
        horizon: ``T`` steps.
        u_lower, u_upper: control bounds: float, ``(n_u,)`` or ``(B, T, n_u)``; ``None`` = unbounded.
        max_iterations: iteration cap.
        tolerance: converged when the largest control change of an accepted step is below this
            (control units) ...
        cost_tolerance: ... or when the predicted or actual relative cost decrease is below this
            (at least ``1600 eps`` of the dtype: ``1.9e-4`` in float32, so that a float32 solve stops
            after fewer iterations than a float64 one with the same settings; pass the same
            ``cost_tolerance >= 2e-4`` to both for the same stopping rule; ``0`` disables this test).
        line_search: step sizes, longest first, rolled out in parallel (in groups for large
            batches, to bound memory); the longest within round-off of the best cost is taken.
            With linear dynamics, a quadratic cost and the condensed solver only the full step
            (``1.0`` first) is tried (it is the exact optimum), and one whose cost decrease matches
            the model's prediction ends the solve.
        regularization: initial Levenberg-Marquardt term on ``Q_uu`` (grows on failed steps).
        backward: a :class:`~diffopt_ros.modes.Backward` (or its string): ``'implicit'``,
            ``'unroll'`` or ``'none'`` (the mode of ``forward``; :meth:`plan`
            never builds gradients).
        kkt_tolerance: largest :attr:`MPCSolution.kkt_residual` of a sample reported converged.
            Default: ``max(1e-3, 2 sqrt(c))`` with ``c`` the effective relative cost tolerance (a
            relative cost decrease ``c`` left by the stopping rule goes with a scaled gradient of
            about ``sqrt(2 c)``): ``1e-3`` in float64, ``2.8e-2`` in float32.
        solver: subproblem solver: ``'riccati'`` (box-DDP: sequential Riccati pass, closed-loop
            line search; scales to large batches), ``'condensed'`` (one dense box QP in the
            controls, open-loop line search; fewest operations for small batches and horizons)
            or ``'auto'`` (condensed for ``B <= 2``, or ``B <= 16`` with ``n_u > 1``, while
            ``B (T n_x)^2 T n_u <= 3e8`` and ``T n_u <= 200``).
    """

    def __init__(self, dynamics: Dynamics, cost: Cost, horizon: int, u_lower=None, u_upper=None, *,
                 max_iterations: int = 50, tolerance: float = 1e-6, cost_tolerance: float = 1e-10,
                 line_search: tuple[float, ...] = (1.0, 0.5, 0.2, 0.05), regularization: float = 0.0,
                 backward: str | Backward = 'implicit', solver: str = 'auto',
                 kkt_tolerance: float | None = None):
        super().__init__()
        backward = backward_mode(backward, BACKWARD_MODES, 'MPC')
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
        self.backward = backward
        self.solver = solver
        self.kkt_tolerance = None if kkt_tolerance is None else float(kkt_tolerance)
        self._probes = self._bound_cache = None        # what forward's checks keep between calls

    def plan(self, x_init: torch.Tensor, target: torch.Tensor | None = None,
             u_init: torch.Tensor | None = None, u_prev: torch.Tensor | None = None, *,
             u_lower=None, u_upper=None, deadline: float | None = None) -> MPCSolution:
        """The control-loop call: :meth:`forward` with ``backward='none'`` (no graph, whatever the
        module's ``backward`` and whether its parameters require grad); arguments as :meth:`forward`.
        """
        return self.forward(x_init, target, u_init, u_prev, u_lower=u_lower, u_upper=u_upper,
                            backward='none', deadline=deadline)

    def forward(self, x_init: torch.Tensor, target: torch.Tensor | None = None,
                u_init: torch.Tensor | None = None, u_prev: torch.Tensor | None = None, *,
                u_lower=None, u_upper=None, backward: str | Backward | None = None,
                deadline: float | None = None) -> MPCSolution:
        """Solve a batch of problems.

        Args:
            x_init: ``(B, n_x)`` initial states.
            target: goal ``(B, n_x)`` or reference ``(B, T+1, n_x)`` passed to the cost.
            u_init: ``(B, T, n_u)`` initial controls (warm start, e.g. :func:`shift_one_step`).
            u_prev: ``(B, n_u)`` last applied control (for a control-rate penalty).
            u_lower: override the constructor's lower bound for this call.
            u_upper: override the constructor's upper bound for this call.
            backward: override the constructor's gradient mode.
            deadline: ``time.perf_counter()`` value after which no further iteration starts
                (a compute budget, e.g. of a control loop): the best iterate so far is returned
                (costs never increase from one iterate to the next), ``converged`` is False
                where the samples had not converged. At least one iteration runs.

        Returns:
            :class:`MPCSolution`.
        """
        mode = backward_mode(self.backward if backward is None else backward, BACKWARD_MODES, 'MPC')
        dyn = self.dynamics
        if self._probes is None or self._probes[0] != (id(dyn), id(self.cost)):
            self._probes = (id(dyn), id(self.cost)), (dtype_probe(dyn), dtype_probe(self.cost))
        check_problem(dyn, self.cost, x_init, self.horizon, self._probes[1])
        batch, T, n_u = x_init.shape[0], self.horizon, dyn.n_u
        check_inputs(batch, T, dyn.n_x, n_u, x_init.dtype, target, u_init, u_prev)
        lower, upper = self.bounds(u_lower, u_upper, batch, x_init)
        given = (x_init, target, u_init, u_prev, lower, upper)        # named if not finite
        if u_init is None:
            u_init = x_init.new_zeros(batch, T, n_u)
        if lower is not None:
            u_init = torch.maximum(torch.minimum(u_init, upper), lower)
        if mode == 'unroll':
            sol = self._solve(x_init, target, u_init, u_prev, lower, upper, deadline=deadline)[0]
            self._check_finite(sol, *given)
            return self._with_status(sol, deadline)
        # inference mode: no autograd bookkeeping per operation (16-20 % of a batch-1 solve, which is
        # bound by per-operation overhead); the results are cloned out of it, see normal_tensors
        with torch.inference_mode(), solve_scope():      # the costs' weight-only blocks formed once
            sol, model = self._solve(x_init.detach(), detached(target), u_init.detach(), detached(u_prev),
                                     lower, upper, deadline=deadline)
        sol = normal_tensors(sol)        # the model's (large) matrices stay: the backward reads them
        self._check_finite(sol, *given)
        sol = self._with_status(sol, deadline)
        if mode == 'none' or not torch.is_grad_enabled():
            return sol
        return attach_implicit_gradients(self, sol, x_init, target, u_prev, model, lower, upper)

    def _with_status(self, sol: MPCSolution, deadline: float | None) -> MPCSolution:
        """``sol`` with :attr:`MPCSolution.status` set (see there)."""
        timed_out = deadline is not None and time.perf_counter() >= deadline
        failed = ~sol.converged & (sol.iterations < self.max_iterations) & (not timed_out)
        return sol._replace(status=batch_status(sol.converged, failed, timed_out))

    def bounds(self, lower, upper, batch: int, like: torch.Tensor):
        """The bounds of a solve (``lower``/``upper`` as given to :meth:`forward`, ``None``: the
        module's) as ``(B, T, n_u)`` tensors (or ``None, None``), checked (shape, dtype,
        ``lower <= upper``); the last pair is kept while its sources (numbers and sequences of
        numbers by value, tensors without a graph by identity and version), batch, dtype and
        device stay."""
        lower = self.u_lower if lower is None else lower
        upper = self.u_upper if upper is None else upper
        key = (_bound_key(lower), _bound_key(upper), batch, like.dtype, like.device)
        if self._bound_cache is not None and self._bound_cache[0] == key:   # the tensors are held by
            return self._bound_cache[2]                                    # the cache: ids not reused
        T, n_u = self.horizon, self.dynamics.n_u
        lo = bound_tensor('u_lower', lower, batch, T, n_u, like)
        hi = bound_tensor('u_upper', upper, batch, T, n_u, like)
        if (lo is None) != (hi is None):
            inf = torch.full((batch, T, n_u), float('inf'), dtype=like.dtype, device=like.device)
            lo = -inf if lo is None else lo
            hi = inf if hi is None else hi
        if lo is not None:
            check_bound_order(lo, hi)
        if key[0] is not _UNCACHED and key[1] is not _UNCACHED:
            self._bound_cache = key, (lower, upper), (lo, hi)
        return lo, hi

    def _check_finite(self, sol: MPCSolution, x_init, target, u_init, u_prev, lower, upper) -> None:
        """Raise a ``ValueError`` naming a non-finite input where the solve's costs are not finite."""
        if math.isfinite(float(sol.costs.detach().sum())):
            return
        diagnose_nonfinite({'x_init': x_init, 'target': target, 'u_init': u_init, 'u_prev': u_prev,
                            'u_lower': lower, 'u_upper': upper}, self.cost, self.dynamics)

    def _solve(self, x_init, target, u, u_prev, lower, upper, cost: Cost | None = None,
               condensed: bool | None = None, deadline: float | None = None
               ) -> tuple[MPCSolution, CondensedModel | None]:
        """The solution and, where the condensed subproblem is the same in every iteration (linear
        dynamics, quadratic cost), its dense matrices for the whole batch (else ``None``).

        ``cost``: the cost of these samples (default ``self.cost``); ``condensed``: force the solver;
        no iteration starts after ``deadline`` (``time.perf_counter()``).
        Samples the Riccati solver leaves with a failed certificate (a semi-definite ``Q_uu``) are
        solved again, from its controls, by the condensed solver where its size rule allows.
        """
        cost = self.cost if cost is None else cost
        if condensed is None:
            condensed = self.solver == 'condensed' or (self.solver == 'auto'
                                                       and condensed_is_cheaper(x_init, u))
        sol, model = self._iterate(x_init, target, u, u_prev, lower, upper, cost, condensed,
                                   deadline=deadline)
        if condensed:
            return sol, model
        retry = (~sol.converged & ~(sol.kkt_residual <= self._kkt_tolerance(x_init.dtype))
                 & (sol.iterations < self.max_iterations)).nonzero().squeeze(-1)
        out_of_time = deadline is not None and time.perf_counter() >= deadline
        if (retry.numel() == 0 or out_of_time
                or not condensed_fits(x_init[:retry.numel()], u[:retry.numel()])):
            return sol, model
        inputs = (x_init, target, sol.controls, u_prev, lower, upper)
        sub, _ = self._iterate(*(take_rows(t, retry) for t in inputs), cost.take(retry), True,
                               self.dynamics.take(retry), deadline=deadline)
        fields = {}
        for name in ('states', 'controls', 'costs', 'converged', 'clamped', 'kkt_residual'):
            fields[name] = getattr(sol, name).index_copy(0, retry, getattr(sub, name))
        fields['iterations'] = sol.iterations.index_add(0, retry, sub.iterations)
        fields['gains'] = None               # these samples have none: the backward solves densely
        return sol._replace(**fields), None

    def _cost_tolerance(self, dtype: torch.dtype) -> float:
        """The relative cost tolerance in effect (floored at ``1600 eps``; ``-1``: the test is off)."""
        roundoff = 16.0 * torch.finfo(dtype).eps
        return max(self.cost_tolerance, 100 * roundoff) if self.cost_tolerance > 0 else -1.0

    def _kkt_tolerance(self, dtype: torch.dtype) -> float:
        """``kkt_tolerance`` or its default for ``dtype`` (see the class docstring)."""
        if self.kkt_tolerance is not None:
            return self.kkt_tolerance
        return max(KKT_TOLERANCE, 2.0 * math.sqrt(max(self._cost_tolerance(dtype), 0.0)))

    def _iterate(self, x_init, target, u, u_prev, lower, upper, cost: Cost, condensed: bool,
                 dyn: Dynamics | None = None, deadline: float | None = None
                 ) -> tuple[MPCSolution, CondensedModel | None]:
        """The iterations of :meth:`_solve` with one solver (``dyn``: the model of these samples)."""
        dyn = self.dynamics if dyn is None else dyn
        batch = u.shape[0]
        # affine dynamics, few samples: one triangular solve beats T small steps
        use_solve = condensed and dyn.linear and batch <= _TRIANGULAR_ROLLOUT_BATCH
        # the linear roll-out's matrix M (affine dynamics: the same along any trajectory) is the
        # condensed step's too; the step function only serves the Riccati line search
        roll_out = None if use_solve else dyn.rollout_fn()
        step = None if condensed else dyn.stepper()
        x, minus_A = linear_rollout(dyn, x_init, u) if use_solve else (roll_out(x_init, u), None)
        J = cost.total(x, u, target, u_prev)
        alphas = torch.tensor(self.line_search, dtype=x.dtype, device=x.device)
        active = torch.ones(batch, dtype=torch.bool, device=x.device)
        iterations = torch.zeros(batch, dtype=torch.long, device=x.device)
        reg = torch.full((batch,), self.regularization, dtype=x.dtype, device=x.device)
        use_reg = self.regularization > 0
        roundoff = 16.0 * torch.finfo(x.dtype).eps
        # relative cost changes below ~100 eps are not measurable (0 disables the cost test)
        cost_tolerance = self._cost_tolerance(x.dtype)
        kkt_tolerance = self._kkt_tolerance(x.dtype)
        # linear dynamics and a quadratic cost: the condensed step is the exact box-QP solution, the
        # optimum of the convex problem, so only the full step is tried (a shorter one costs more)
        exact_model = condensed and dyn.linear and cost.quadratic and self.line_search[0] == 1.0
        if exact_model:
            alphas = alphas[:1]
        gains = clamped = rows = model = None   # rows: the samples still iterating (None: all)
        kkt = None          # the certificates (B,), set by the first iteration (Riccati: at the end)
        for _ in range(self.max_iterations):
            xs, us, Js, regs = (x, u, J, reg) if rows is None else (x[rows], u[rows], J[rows], reg[rows])
            x0, tg, up, lo, hi = (take_rows(t, rows) for t in (x_init, target, u_prev, lower, upper))
            sub_cost = cost if rows is None else cost.take(rows)
            sub_dyn = dyn if rows is None or not dyn.batched else dyn.take(rows)
            if sub_dyn is not dyn:                   # per-sample dynamics: these samples' functions
                roll_out = None if roll_out is None else sub_dyn.rollout_fn()
                step = None if step is None else sub_dyn.stepper()
            A, B = sub_dyn.jacobians(xs[:, :-1], us)
            expansion = sub_cost.expand(xs, us, tg, up)
            dlow = dhigh = None
            if lo is not None:
                dlow, dhigh = lo - us, hi - us
            if condensed:
                du, sub_clamped, predicted, sub_model = condensed_step(expansion, A, B, dlow, dhigh,
                                                                        regs if use_reg else None,
                                                                        take_rows(minus_A, rows))
                if exact_model and rows is None:
                    model = sub_model
                    if not use_reg:
                        done = exact_step(sub_model.S, xs, us, Js, du, predicted, lo, hi, roundoff)
                        if done is not None:
                            x_new, u_new, J_new = done
                            kkt = sub_model.residual.to(x.dtype)
                            if bool((kkt <= kkt_tolerance).all()):    # solved: no search, no iteration
                                return MPCSolution(x_new, u_new, J_new, iterations + 1,
                                                   torch.ones_like(active), None, sub_clamped, kkt), model
                elif model is not None:      # some clamped sets change: the kept factor is stale
                    model = model._replace(factor=None)
                G = None
                if dyn.linear:          # trial states x(u + d) = x(u) + S d: no roll-out needed
                    roll, batched = partial(linear_search, sub_model.S), (xs, us, du, lo, hi)
                else:
                    roll, batched = partial(open_loop_search, roll_out), (x0, us, du, lo, hi)
            else:
                stages = stage_matrices(expansion, A, B)
                G, sub_clamped, predicted = riccati(stages, dlow, dhigh, regs if use_reg else None)
                roll = partial(closed_loop_search, step, stages.augmented, dyn.time_varying)
                batched = (xs, us, G, lo, hi)
                del stages
            del expansion, A, B
            x_best, u_best, J_best, full = search_steps(roll, batched, sub_cost, alphas, tg, up, roundoff)
            # accept round-off level increases too, so that steps keep converging to stationarity
            improved = J_best <= Js + roundoff * Js.abs()
            change = (u_best - us).abs().amax((1, 2))
            decrease = Js - J_best
            keep = improved.view(-1, 1, 1)
            u_taken = torch.where(keep, u_best, us)
            sub_kkt = None
            if condensed:      # the full step everywhere: the step's own certificate (no products)
                sub_kkt = sub_model.residual.to(x.dtype) if bool((improved & full).all()) else \
                    model_certificate(sub_model, u_taken - us, u_taken, lo, hi)
            xs, us = torch.where(keep, x_best, xs), u_taken
            done = improved & ((change <= self.tolerance) | (predicted <= cost_tolerance * Js.abs())
                               | (decrease.abs() < cost_tolerance * Js.abs()))
            if exact_model:        # the full step solved the problem if the model predicted its decrease
                done = done | (improved & full & ((decrease - predicted).abs() <= 1e3 * roundoff * Js.abs()))
            Js = torch.where(improved, J_best, Js)
            stalled = ~improved & (change <= self.tolerance)
            failed = ~improved & ~stalled
            if use_reg or bool(failed.any()):
                use_reg = True
                regs = torch.where(failed, (regs * 10.0).clamp_min(1e-6), regs * 0.5)
            still = ~done & ~stalled & (regs < 1e8)
            if rows is None:
                x, u, J, reg, gains, clamped = xs, us, Js, regs, G, sub_clamped
                kkt = kkt if sub_kkt is None else sub_kkt
                iterations = iterations + 1
                active = still
            else:
                x, u, J, reg = (t.index_copy(0, rows, v) for t, v in ((x, xs), (u, us), (J, Js), (reg, regs)))
                if sub_kkt is not None:
                    kkt = sub_kkt if kkt is None else kkt.index_copy(0, rows, sub_kkt)
                clamped = clamped.index_copy(0, rows, sub_clamped)
                gains = None if G is None else gains.index_copy(0, rows, G)
                iterations = iterations.index_add(0, rows, torch.ones_like(rows))
                active = active.index_copy(0, rows, still)
            rows = active.nonzero().squeeze(-1)
            if rows.numel() == 0 or (deadline is not None and time.perf_counter() >= deadline):
                break
            if rows.numel() == batch:
                rows = None
        if kkt is None:                    # exact certificate at the returned controls
            with torch.no_grad():
                kkt = certificate(dyn, cost, x.detach(), u.detach(), detached(target), detached(u_prev),
                                  lower, upper)
        converged = ~active & (reg < 1e8) & (kkt <= kkt_tolerance)
        gains = None if gains is None else gains[..., :dyn.n_x].detach()
        return MPCSolution(x, u, J, iterations, converged, gains, clamped, kkt), model


# largest batch whose affine roll-out is one triangular solve (T=30, n_x=8, 1 thread: 70 vs 200 us
# at batch 1, 100 vs 200 us at 4, 600 vs 220 us at 16)
_TRIANGULAR_ROLLOUT_BATCH = 4
