"""Implicit gradients of the MPC solution from its KKT conditions.

At a solution ``(x*, u*)`` with costate ``lam`` (``lam_T = dJ/dx_T``,
``lam_t = dJ/dx_t + A_t^T lam_{t+1}``) the stationarity ``g(tau; theta) = grad_tau L = 0`` of the
Lagrangian ``L = J + sum_t lam_{t+1}^T (f(x_t, u_t) - x_{t+1}) + lam_0^T (x_init - x_0)`` and the
constraints ``c = (x_init - x_0, f(x_t, u_t) - x_{t+1}) = 0`` hold; controls on a bound (the
active set) are fixed. Differentiating gives ``d tau = -K^{-1} d(g, c)`` with the KKT matrix
``K = [[H, J_c^T], [J_c, 0]]``, ``H`` the exact Hessian of ``L`` (cost Hessian plus
``lam_{t+1} . d2f``). ``K^{-1}`` applied to an incoming gradient is one equality-constrained LQR
solve: a Riccati pass with the clamped set held fixed, a linear roll-out and a costate recursion
(or, where the forward ran the condensed solver, one dense solve in the controls).

The parameters enter through ``(g, c)`` computed with ``create_graph=True`` (for linear dynamics
and a quadratic cost ``g`` is built from the cost expansion's gradient and the Jacobians, without
a double backward), so autograd carries the gradient to ``x_init``, ``target``, ``u_prev``,
every cost parameter and every dynamics ``nn.Parameter`` without model-specific code. The Riccati
pass is refactorised with the exact Hessian (for linear dynamics it equals the forward's last
factorisation); iLQR's Gauss-Newton factorisation would give the mpc.pytorch approximation, not
the derivative of the solution.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING

import torch

from .condensed import CondensedModel, condensed_adjoint, condensed_costates
from .costs import CostExpansion
from .kkt import costates
from .lqr import riccati, stage_matrices
from .solution import MPCSolution
from .tensors import normal_tensors

if TYPE_CHECKING:
    from .ilqr import MPC


def _costates(A: torch.Tensor, lx: torch.Tensor, model: CondensedModel | None = None) -> torch.Tensor:
    """``lam (B, T+1, n_x)`` from ``A (B, T, n_x, n_x)`` and ``lx (B, T+1, n_x)`` (backwards; one
    dense solve with the forward's matrices when ``model`` is given)."""
    if model is not None:
        return condensed_costates(model, A, lx)
    return costates(A, lx)


class _KKTSolve(torch.autograd.Function):
    """Identity-shaped zero output whose backward applies ``-K^{-1}`` (see the module docstring)."""

    @staticmethod
    def forward(ctx, problem: dict, gx: torch.Tensor, gu: torch.Tensor, residual: torch.Tensor):
        ctx.problem, ctx.steps = problem, residual.shape[1]     # residual: the first steps only
        return torch.zeros_like(gx), torch.zeros_like(gu)

    @staticmethod
    def backward(ctx, grad_x: torch.Tensor, grad_u: torch.Tensor):
        # create_graph: a graph through the solve, whose saved tensors must be ordinary ones
        graph = torch.is_grad_enabled()
        problem = dict(ctx.problem, model=normal_tensors(ctx.problem['model'])) if graph else ctx.problem
        with contextlib.nullcontext() if graph else torch.inference_mode():
            dx, du, dlam = solve_adjoint(problem, grad_x, grad_u)
            grads = (-dx, -du, -dlam[:, :ctx.steps])
        return None, *normal_tensors(grads)


def solve_adjoint(problem: dict, grad_x: torch.Tensor,
                  grad_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Solve ``K [w_tau; w_lam] = [g; 0]`` as an LQR with the active set held fixed.

    Args:
        problem: solution data stored by :func:`attach_implicit_gradients`.
        grad_x: ``(B, T+1, n_x)`` incoming gradient on the states.
        grad_u: ``(B, T, n_u)`` incoming gradient on the controls.

    Returns:
        ``w_x (B, T+1, n_x)``, ``w_u (B, T, n_u)`` and the multipliers ``w_lam (B, T+1, n_x)``.
    """
    mpc: MPC = problem['mpc']
    x, u, lam, A, B = problem['x'], problem['u'], problem['lam'], problem['A'], problem['B']
    batch, T, n_u = u.shape
    n_x = x.shape[-1]
    model: CondensedModel | None = problem['model']
    if model is not None:                                     # the forward's dense matrices are exact
        w_x, w_u, residual = condensed_adjoint(CostExpansion(None, -grad_x, None, -grad_u), A, B,
                                               problem['clamped'], model)
        return w_x, w_u, _costates(A, residual, model)
    exp = mpc.cost.expand(x, u, problem['target'], problem['u_prev'], exact=True)
    if mpc.dynamics.linear:                                   # no curvature: the cost Hessian is exact
        hessian = exp._replace(lx=-grad_x, lu=-grad_u)
    else:
        hess = mpc.dynamics.weighted_hessian(x[:, :-1].reshape(-1, n_x), u.reshape(-1, n_u),
                                             lam[:, 1:].reshape(-1, n_x)).view(batch, T, n_x + n_u, n_x + n_u)
        lxx = exp.lxx + torch.cat((hess[..., :n_x, :n_x], torch.zeros_like(exp.lxx[:, :1])), 1)
        lux = hess[..., n_x:, :n_x] + (0.0 if exp.lux is None else exp.lux)
        hessian = CostExpansion(lxx, -grad_x, exp.luu + hess[..., n_x:, n_x:], -grad_u, lux, exp.luu_prev)
    if problem['condensed']:
        w_x, w_u, residual = condensed_adjoint(hessian, A, B, problem['clamped'])
        return w_x, w_u, _costates(A, residual)
    stages = stage_matrices(hessian, A, B)
    G, _, _ = riccati(stages, None, None, clamped=problem['clamped'])
    # linear roll-out of dz_{t+1} = F_t [dz_t; 1; du_t] with du_t = G_t [dz_t; 1]
    P_final = stages.terminal()
    a = P_final.shape[-1]
    zeta = x.new_zeros(batch, a)
    zeta[:, -1] = 1.0
    Gs = G.unbind(1)
    xis, residuals = [], []
    for _, C, F in stages.chunks():
        for Ct, Ft in zip(C.unbind(1), F.unbind(1)):
            du = (Gs[len(xis)] @ zeta.unsqueeze(-1)).squeeze(-1)
            xi = torch.cat((zeta, du), -1)
            xis.append(xi)
            residuals.append((Ct @ xi.unsqueeze(-1)).squeeze(-1)[:, :n_x])
            zeta = (Ft @ xi.unsqueeze(-1)).squeeze(-1)
        del C, F, Ct, Ft                        # before the next block is assembled
    residuals.append((P_final @ zeta.unsqueeze(-1)).squeeze(-1)[:, :n_x])
    xi = torch.stack(xis, 1)
    w_x = torch.cat((xi[..., :n_x], zeta[:, None, :n_x]), 1)
    w_u = xi[..., a:]
    w_lam = _costates(A, torch.stack(residuals, 1))
    return w_x, w_u, w_lam


def _bound_offset(u: torch.Tensor, clamped: torch.Tensor, lower, upper) -> torch.Tensor | None:
    """Zero ``(B, T, n_u)`` whose graph moves each clamped control with the bound it sits on
    (``bound - bound.detach()``), or ``None`` where no bound carries a graph."""
    offset = None
    for bound, side in ((lower, torch.le), (upper, torch.ge)):
        if bound is not None and bound.requires_grad:
            held = clamped & side(u, bound)
            term = torch.where(held, bound - bound.detach(), 0.0)
            offset = term if offset is None else offset + term
    return offset


def attach_implicit_gradients(mpc: MPC, sol: MPCSolution, x_init: torch.Tensor, target,
                              u_prev, model: CondensedModel | None = None, lower: torch.Tensor | None = None,
                              upper: torch.Tensor | None = None) -> MPCSolution:
    """Return ``sol`` with states/controls that carry implicit gradients (values unchanged).

    Args:
        mpc: the solver (its dynamics and cost define the problem).
        sol: the converged (no-grad) solution.
        x_init: ``(B, n_x)`` initial states as given by the caller (may require grad).
        target: the cost target as given (may require grad).
        u_prev: the previous control as given (may require grad).
        model: the forward's dense subproblem where it is exact at the solution (linear dynamics,
            quadratic cost), reused by the backward instead of being formed again.
        lower: ``(B, T, n_u)`` control lower bounds as given (may require grad), or ``None``.
        upper: ``(B, T, n_u)`` upper bounds, or ``None``.

    A control held at a bound (``sol.clamped``) is that bound: it moves with it one to one, and the
    rest of the solution follows through the KKT conditions of the free controls, in which the
    clamped controls enter as parameters (their terms in the stationarity and the dynamics).
    """
    inputs = [x_init, target, u_prev, lower, upper, *mpc.parameters(), *mpc.dynamics.graph_tensors()]
    if not any(t is not None and t.requires_grad for t in inputs):
        return sol
    if not bool(sol.converged.all()):
        warnings.warn(f'MPC: {int((~sol.converged).sum())} of {sol.converged.numel()} samples did not '
                      'converge; their implicit gradients are those of the last iterate '
                      '(see MPCSolution.converged)', RuntimeWarning, stacklevel=3)
    dyn, cost = mpc.dynamics, mpc.cost
    x_star, u_star = sol.states.detach(), sol.controls.detach()
    target_d = None if target is None else target.detach()
    u_prev_d = None if u_prev is None else u_prev.detach()
    linear_quadratic = dyn.linear and cost.quadratic
    offset = _bound_offset(u_star, sol.clamped, lower, upper)
    # the controls as functions of the bounds: the clamped ones' value, the bound's graph
    u_param = u_star if offset is None else u_star + offset
    with torch.set_grad_enabled(linear_quadratic):    # the stationarity below uses these graphs
        A_g, B_g = dyn.jacobians(x_star[:, :-1], u_param)
        exp = cost.expand(x_star, u_param, target, u_prev)
    A, B = A_g.detach(), B_g.detach()
    with torch.inference_mode():
        lam = _costates(A, exp.lx.detach(), model)
    lam = normal_tensors(lam)
    with torch.enable_grad():
        # only the graphs of g and c from (x_init, target, u_prev, parameters) matter, not their values
        if linear_quadratic:
            # g = (lx + A^T lam_{t+1}, lu + B^T lam_{t+1}): the exact expansion's gradient and the
            # Jacobians carry the parameters, no double backward through the cost and dynamics;
            # terms without a graph (fixed dynamics) are left out
            gx, gu, f = exp.lx, exp.lu, None
            if any(p.requires_grad for p in (*dyn.parameters(), *dyn.graph_tensors())) or offset is not None:
                f = dyn(x_star[:, :-1], u_param)
                lam_next = lam[:, 1:].unsqueeze(-1)
                gx = gx + torch.cat(((A_g.mT @ lam_next).squeeze(-1), torch.zeros_like(gx[:, :1])), 1)
                gu = gu + (B_g.mT @ lam_next).squeeze(-1)
        else:
            xs, us = x_star.clone().requires_grad_(), u_star.clone().requires_grad_()
            u_eval = us if offset is None else us + offset
            f = dyn(xs[:, :-1], u_eval)
            lagrangian = cost.total(xs, u_eval, target, u_prev).sum() + (lam[:, 1:] * f).sum()
            gx, gu = torch.autograd.grad(lagrangian, (xs, us), create_graph=True)
        # the constraints (x_init - x_0, f(x_t, u_t) - x_{t+1}) by their graphs: x_init and f
        residual = x_init.unsqueeze(1) if f is None else torch.cat((x_init.unsqueeze(1), f), 1)
        problem = dict(mpc=mpc, x=x_star, u=u_star, lam=lam, A=A, B=B, target=target_d,
                       u_prev=u_prev_d, clamped=sol.clamped, condensed=sol.gains is None, model=model)
        dx, du = _KKTSolve.apply(problem, gx, gu, residual)
    states, controls = x_star + dx, u_param + du
    costs = cost.total(states, controls, target, u_prev)
    return sol._replace(states=states, controls=controls, costs=costs)
