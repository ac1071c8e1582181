"""Gauss-Newton and Levenberg-Marquardt on an :class:`Objective`, with selectable backward mode.

Backward modes (how gradients of the solution reach measurements, weights, loss scales and
initial values):

* ``'unroll'``: every iteration is recorded by autograd (accepted and rejected steps alike,
  damping held constant). Exact gradient of the returned point; memory grows with iterations.
* ``'truncated'`` (``backward_steps=k``, default 3): the solve runs without graph, then ``k``
  more LM iterations are recorded from the solution (differentiating ``H`` too). Approximates
  ``unroll``/``implicit`` (closer with larger k); the initial values get no gradient.
* ``'implicit'`` (default): implicit function theorem at the solution. The solve runs without
  graph; then ``backward_steps`` (default 3) Newton refinements ``x <- x exp(-H*^-1 g(x, theta))``
  are recorded, each a solve with the SAME factorization ``H*`` of the undamped Gauss-Newton
  matrix of the solver's last linearization (at the optimum, or one converged step before it).
  One step gives the classical Gauss-Newton implicit gradient; each further step adds the
  second-order residual terms (a fixed-point iteration converging to the exact gradient: in
  the tests 1 step is within 2 % of finite differences, 3 steps within 2e-5, 10 within 1e-7).
  Initial values get zero gradient (they do not change the optimum).
* ``'dlm'``: direct loss minimization (Theseus): the backward pass takes one Gauss-Newton step
  of the objective perturbed by ``epsilon`` times the loss gradient and returns
  ``(d_theta f(x_eps) - d_theta f(x*)) / epsilon``. A biased first-order estimate (its
  direction agrees with the exact gradient for small epsilon); needs no second derivatives.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from diffopt_ros.modes import Backward, backward_mode
from diffopt_ros.nlls.linear import make_linear_solver
from diffopt_ros.nlls.objective import Objective
from diffopt_ros.status import Status, batch_status

#: The backward modes the optimizer implements (:class:`~diffopt_ros.modes.Backward`).
BACKWARD_MODES = (Backward.IMPLICIT, Backward.UNROLL, Backward.TRUNCATED, Backward.DLM)


@dataclass
class SolveResult:
    """Outcome of :meth:`Optimizer.solve`, per batch element.

    Attributes:
        values: per variable (objective order), the solution ``(B, N, *shape)``.
        error: ``(B,)`` final error ``sum rho(||r||^2_Sigma)``; ``initial_error`` likewise.
        iterations: ``(B,)`` int64, iterations run: tries, each a factorization and a trial
            step, accepted or not; ``converged``: ``(B,)`` bool.
        status: per batch element, a :class:`~diffopt_ros.status.Status`: ``'converged'``,
            ``'max_iterations'``, ``'time_limit'`` (``max_time``) or ``'failed'`` (no decrease
            possible: damping exhausted / factorization failed).
        seconds: wall time of the forward solve.
        names: variable names, for ``result['poses']``.
        hessian: the last Gauss-Newton matrix ``J^T W J`` (undamped, in the linear solver's
            format), at the solution or one converged step before it: factorize it for
            marginal covariances without linearizing again.
        steps: ``(B,)`` int64, the accepted steps among the iterations: the linearizations after
            the first, what GTSAM counts as its Levenberg-Marquardt iterations.
    """

    values: list[torch.Tensor]
    error: torch.Tensor
    initial_error: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    status: list[Status]
    seconds: float
    names: list[str] = field(default_factory=list)
    hessian: torch.Tensor | None = None
    steps: torch.Tensor | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[self.names.index(name)]


def _select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``where(mask[b], a, b)`` broadcasting a ``(B,)`` mask over trailing dims."""
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


class Optimizer:
    """Levenberg-Marquardt (``method='lm'``) or Gauss-Newton (``'gn'``) for an objective.

    Args:
        objective: the problem.
        method: ``'lm'`` or ``'gn'``.
        linear_solver: ``'auto'`` (see :func:`~diffopt_ros.nlls.linear.make_linear_solver`),
            ``'dense'`` or ``'sparse'``. The sparse structure is analysed once here and re-used by every
            solve of this optimizer.
        max_iterations: cap on the iterations (tries, accepted or not) per solve; None: only
            ``max_steps`` caps the solve.
        max_steps: cap on the accepted steps per solve (GTSAM's iterations: each linearization
            tries dampings until one decreases the error; the damping's range bounds the tries
            per step), or None.
        rel_tol, abs_tol: convergence when an accepted step decreases the error by less than
            ``rel_tol * error`` or ``abs_tol`` (GTSAM's defaults).
        step_tol: convergence when the largest step component is below it.
        damping: ``'diagonal'`` (Marquardt: ``lambda * diag(H)``, clamped to ``[1e-6, 1e32]``)
            or ``'identity'`` (``lambda * I``).
        lambda_init, lambda_max: initial damping and the damping at which LM gives up.
        lambda_factor: None for Nielsen's adaptive update of the damping from the gain ratio,
            or a fixed factor to divide it by after a good step and multiply after a bad one
            (GTSAM's default, 10).
        max_time: seconds per solve (checked between iterations), or None.
        backward, backward_steps, dlm_epsilon: default backward mode, a
            :class:`~diffopt_ros.modes.Backward` or its string (see module docstring).
        dense_max: the ``'auto'`` threshold (None: by device, see ``make_linear_solver``).
        sparse_backend: ``'auto'``, ``'cholmod'``, ``'supernodal'``, ``'qdldl'``, ``'cholespy'`` or
            ``'superlu'``.
    """

    def __init__(self, objective: Objective, method: str = 'lm', linear_solver: str = 'auto',
                 max_iterations: int | None = 100, rel_tol: float = 1e-5, abs_tol: float = 1e-5,
                 step_tol: float = 1e-10, damping: str = 'identity', lambda_init: float = 1e-5,
                 lambda_max: float = 1e12, lambda_factor: float | None = None, max_time: float | None = None,
                 backward: str = 'implicit', backward_steps: int = 3, dlm_epsilon: float = 1e-3,
                 dense_max: int | None = None, sparse_backend: str = 'auto', max_steps: int | None = None):
        if method not in ('lm', 'gn'):
            raise ValueError(f"method {method!r}: choose 'lm' or 'gn'")
        if damping not in ('diagonal', 'identity'):
            raise ValueError(f"damping {damping!r}: choose 'diagonal' or 'identity'")
        self.objective = objective
        self.method = method
        self.linear = make_linear_solver(objective, linear_solver, dense_max, sparse_backend)
        if max_iterations is None and max_steps is None:
            raise ValueError('max_iterations and max_steps are both None: the solve needs a cap')
        self.max_iterations = None if max_iterations is None else int(max_iterations)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.rel_tol, self.abs_tol, self.step_tol = rel_tol, abs_tol, step_tol
        self.damping = damping
        self.lambda_init, self.lambda_max, self.lambda_factor = lambda_init, lambda_max, lambda_factor
        self.max_time = max_time
        self.backward = backward_mode(backward, BACKWARD_MODES, 'Optimizer')
        self.backward_steps, self.dlm_epsilon = int(backward_steps), dlm_epsilon

    # ------------------------------------------------------------------ forward iterations
    def _damped(self, H: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(H + lam D, D)`` with D the damping diagonal ``(B, n)``."""
        if self.damping == 'diagonal':
            D = self.linear.diagonal(H).clamp(1e-6, 1e32)
        else:
            D = torch.ones(H.shape[0], self.objective.dim, dtype=H.dtype, device=H.device)
        return self.linear.add_diagonal(H, lam[:, None] * D), D

    def _iterate(self, values, sqrt_infos, max_iterations, callback, stop_converged=True, max_steps=None):
        """Run GN/LM iterations, at most ``max_iterations`` (None: no cap) and, per problem,
        ``max_steps`` accepted ones (None: no cap); returns ``(values, info dict)``."""
        obj, lin_solver = self.objective, self.linear
        t0 = time.perf_counter()
        lin = obj.linearize(values, sqrt_infos)
        H = lin_solver.assemble(lin.blocks)
        err = lin.error
        B = err.shape[0]
        dev = err.device
        init_err = err.detach().clone()
        lam = torch.full((B,), self.lambda_init if self.method == 'lm' else 0.0, dtype=err.dtype, device=dev)
        nu = torch.full_like(lam, 2.0)
        active = torch.ones(B, dtype=torch.bool, device=dev)
        converged = torch.zeros_like(active)
        failed = torch.zeros_like(active)
        iterations = torch.zeros(B, dtype=torch.long, device=dev)
        steps = torch.zeros_like(iterations)
        timed_out = False
        for it in itertools.count() if max_iterations is None else range(max_iterations):
            if stop_converged and not bool(active.any()):
                break
            if self.max_time is not None and time.perf_counter() - t0 > self.max_time:
                timed_out = True
                break
            Hd, D = self._damped(H, lam)
            factor = lin_solver.factorize(Hd)
            ok = factor[1]
            delta = lin_solver.solve(Hd, factor, -lin.gradient)
            moving = (ok & active) if stop_converged else ok
            delta = torch.where(moving[:, None], delta, torch.zeros_like(delta))
            new_values = obj.retract(values, delta)
            new_err = obj.error(new_values, sqrt_infos)
            with torch.no_grad():
                damp = (lam[:, None] * D * delta * delta).sum(-1)
                predicted = 0.5 * (damp - (lin.gradient * delta).sum(-1))
                actual = err - new_err
                finite = torch.isfinite(new_err)
                # a change below the rounding noise of the error sum cannot be judged: accept it
                # (a converging Newton step), so that solutions are accurate to the last digits
                noise = max(1e-12, 64 * torch.finfo(err.dtype).eps) * err.abs()
                accept = ok & active & finite & (actual >= -noise) & (predicted >= 0)
                if not stop_converged:
                    accept = ok & finite
                # gain ratio of the step; 1 (a perfect model) when the change is below the noise
                gain = torch.where(predicted <= noise, torch.ones_like(actual),
                                   actual / predicted.clamp_min(1e-300)).clamp(0, 1)
                small_step = delta.abs().amax(-1) < self.step_tol
                change = actual.abs()
                conv = accept & ((change < self.abs_tol) | (change < self.rel_tol * err) | small_step)
                conv = conv | (active & ok & small_step)
                iterations += active.long()
                if self.lambda_factor is None:  # Nielsen's damping update
                    shrink = torch.clamp(1 - (2 * gain - 1) ** 3, min=1.0 / 3)
                    nu_next = torch.where(accept, torch.full_like(nu, 2.0), nu * 2)
                else:  # GTSAM's default: divide / multiply by a fixed factor
                    shrink = torch.full_like(lam, 1.0 / self.lambda_factor)
                    nu = nu_next = torch.full_like(nu, self.lambda_factor)
                lam = torch.where(accept, (lam * shrink).clamp_min(1e-12 if self.method == 'lm' else 0.0),
                                  lam * nu if self.method == 'lm' else lam)
                nu = nu_next
                give_up = active & ~accept & ((lam > self.lambda_max) | (self.method == 'gn'))
                failed |= give_up
                converged |= conv & active
                steps += (accept & active).long()
                active = active & ~conv & ~give_up
                if max_steps is not None:
                    active &= steps < max_steps
            values = [_select(accept, n, v) for n, v in zip(new_values, values)]
            err = torch.where(accept, new_err, err)
            if callback is not None:
                callback(it, err.detach(), lam, accept)
            del factor  # no longer needed here: the next factorization may re-use its workspace
            if bool(accept.any()) and (bool(active.any()) or not stop_converged):
                lin = obj.linearize(values, sqrt_infos)
                H = lin_solver.assemble(lin.blocks)
        status = batch_status(converged, failed, timed_out)
        info = dict(error=err, initial_error=init_err, iterations=iterations, converged=converged,
                    status=status, seconds=time.perf_counter() - t0, hessian=H, steps=steps)
        return values, info

    # ------------------------------------------------------------------ public API
    def solve(self, values: Sequence[torch.Tensor] | None = None, backward: str | None = None,
              backward_steps: int | None = None, callback: Callable | None = None) -> SolveResult:
        """Minimize the objective from ``values`` (default: the variables' values).

        Args:
            values: starting point per variable, ``(B, N, *shape)`` or ``(N, *shape)``
                (warm start); differentiable under ``unroll``.
            backward: backward mode, overriding the optimizer's default.
            backward_steps: k for ``truncated``, refinement steps for ``implicit``.
            callback: ``callback(iteration, error (B,), damping (B,), accepted (B,))`` after
                every iteration (e.g. progress printing).
        """
        mode = backward_mode(self.backward if backward is None else backward, BACKWARD_MODES,
                             'Optimizer.solve')
        steps = self.backward_steps if backward_steps is None else int(backward_steps)
        obj = self.objective
        B = obj.batch_size
        if values is None:
            values = obj.initial_values()
        else:
            values = [v if v.dim() == len(var.group.shape) + 2 else v.unsqueeze(0)
                      for v, var in zip(values, obj.variables)]
            values = [v.expand(B, *v.shape[1:]) for v in values]
        sqrt_infos = obj.sqrt_informations()
        grad_on = torch.is_grad_enabled()
        record = grad_on and mode == 'unroll'
        with torch.set_grad_enabled(record):
            loop_values = values if record else [v.detach() for v in values]
            loop_sqrt = sqrt_infos if record else [None if s is None else s.detach() for s in sqrt_infos]
            solution, info = self._iterate(loop_values, loop_sqrt, self.max_iterations, callback,
                                           max_steps=self.max_steps)
        if grad_on and mode != 'unroll' and (obj.tensors() or mode == 'truncated'):
            if mode == 'truncated':
                solution = [v.detach() for v in solution]
                solution, _ = self._iterate(solution, sqrt_infos, steps, None, stop_converged=False)
            elif mode == 'implicit':
                solution = self._implicit(solution, sqrt_infos, steps, info['hessian'])
            else:
                solution = self._dlm(solution, sqrt_infos, info['hessian'])
        return SolveResult(solution, info['error'], info['initial_error'], info['iterations'],
                           info['converged'], info['status'], info['seconds'],
                           [v.name for v in obj.variables], info['hessian'], info['steps'])

    def _factor_at(self, values, sqrt_infos, H=None):
        """Factorization of the Gauss-Newton matrix ``H`` (computed at ``values`` when not given;
        the solver passes its last one, at the solution or one converged step before it), with
        tiny damping if the matrix is singular (e.g. a gauge freedom)."""
        with torch.no_grad():
            if H is None:
                detached = [None if s is None else s.detach() for s in sqrt_infos]
                lin = self.objective.linearize(values, detached)
                H = self.linear.assemble(lin.blocks)
            H = H.detach()
            factor = self.linear.factorize(H)
            if not bool(factor[1].all()):
                H, _ = self._damped(H, torch.full((H.shape[0],), 1e-9, dtype=H.dtype, device=H.device))
                factor = self.linear.factorize(H)
        return H, factor

    def _implicit(self, solution, sqrt_infos, steps, H=None):
        _, factor = self._factor_at(solution, sqrt_infos, H)
        x = [v.detach() for v in solution]
        for _ in range(max(1, steps)):
            g = self.objective.linearize(x, sqrt_infos, blocks=False).gradient
            x = self.objective.retract(x, self.linear.solve_detached(factor, -g))
        return x

    def _dlm(self, solution, sqrt_infos, H=None):
        _, factor = self._factor_at(solution, sqrt_infos, H)
        thetas = self.objective.tensors()
        bridge = _DLMBridge(self, [v.detach() for v in solution], sqrt_infos, factor, thetas)
        return list(_DLM.apply(bridge, *thetas))

    def marginal_covariance(self, values: Sequence[torch.Tensor], variable, index: int) -> torch.Tensor:
        """Covariance ``(B, d, d)`` of element ``index`` of ``variable`` at ``values``: the block
        of ``H^-1`` (Laplace approximation), in the element's right (body-frame) tangent space."""
        obj = self.objective
        k = next(i for i, v in enumerate(obj.variables) if v is variable)
        values = [v.detach() for v in values]
        _, factor = self._factor_at(values, obj.sqrt_informations())
        B, d = values[0].shape[0], variable.dof
        start = obj.offsets[k] + index * d
        rhs = torch.zeros(B, obj.dim, d, dtype=obj.dtype, device=values[0].device)
        rhs[:, start:start + d] = torch.eye(d, dtype=obj.dtype, device=rhs.device)
        with torch.no_grad():
            X = self.linear.solve_columns(factor, rhs)
        return X[:, start:start + d]


class _DLMBridge:
    """What the DLM backward needs: the optimizer, the solution, its factorization, the data."""

    def __init__(self, optimizer, solution, sqrt_infos, factor, thetas):
        self.optimizer, self.solution, self.sqrt_infos = optimizer, solution, sqrt_infos
        self.factor, self.thetas = factor, thetas


class _DLM(torch.autograd.Function):
    """Identity on the solution; backward = direct loss minimization estimate for the data."""

    @staticmethod
    def forward(ctx, bridge, *thetas):
        ctx.bridge = bridge
        return tuple(v.clone() for v in bridge.solution)

    @staticmethod
    def backward(ctx, *grads):
        br = ctx.bridge
        opt = br.optimizer
        obj = opt.objective
        with torch.enable_grad():
            x = br.solution
            zero = torch.zeros(x[0].shape[0], obj.dim, dtype=x[0].dtype, device=x[0].device,
                               requires_grad=True)
            moved = obj.retract(x, zero)
            pairs = [(m, g) for m, g in zip(moved, grads) if g is not None]
            (g_tan,) = torch.autograd.grad([m for m, _ in pairs], [zero], [g for _, g in pairs])
            scale = g_tan.abs().amax(-1, keepdim=True).clamp_min(1e-300)
            eps = opt.dlm_epsilon / scale  # per batch element, a step of about dlm_epsilon
            step = opt.linear.solve_detached(br.factor, -eps * g_tan).detach()
            x_eps = obj.retract(x, step)
            diff = ((obj.error(x_eps, br.sqrt_infos) - obj.error(x, br.sqrt_infos)) / eps.squeeze(-1)).sum()
            out = torch.autograd.grad(diff, br.thetas, allow_unused=True)
        return (None, *out)
