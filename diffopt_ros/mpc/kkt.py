"""First-order optimality (KKT) certificates of box-constrained control problems.

For ``min_u J(u)`` subject to ``lower <= u <= upper`` a point is a KKT point when the reduced
gradient ``grad = dJ/du`` (the dynamics eliminated: ``lu_t + B_t^T lam_{t+1}``) vanishes on the
free entries (stationarity) and points out of the box on the entries held at a bound
(complementarity with non-negative multipliers). The certificate is the natural (projected
gradient) residual of the gradient scaled by ``1 +`` the largest magnitude of its terms,

    r = max_i | u_i - clip(u_i - grad_i / (1 + s), lower_i, upper_i) |,

which is ``|grad_i| / (1 + s)`` on a free entry away from its bounds, ``0`` on an entry held at a
bound by an outward gradient, the (smaller) distance to the bound where an inward gradient would
move a control beyond it, and the violation itself for a control outside the box. It vanishes
exactly at a KKT point; round-off leaves a few ``eps`` (the terms of the gradient cancel to
their magnitude ``s`` times ``eps``). For a convex problem (positive semi-definite Hessian) a KKT
point is a global minimiser, so a small certificate proves the solution optimal.
"""
from __future__ import annotations

import torch


def box_kkt_residual(grad: torch.Tensor, u: torch.Tensor, lower: torch.Tensor | None,
                     upper: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    """Scaled stationarity + complementarity residual per problem ``(B,)`` (module docstring).

    Args:
        grad: ``(B, N)`` gradient of the objective w.r.t. the controls at ``u``.
        u: ``(B, N)`` controls.
        lower: ``(B, N)`` lower bounds or ``None`` (unbounded).
        upper: ``(B, N)`` upper bounds or ``None``.
        scale: ``(B,)`` magnitude of the gradient's terms.

    Returns:
        ``(B,)`` residual; ``nan`` where ``grad``, ``u`` or ``scale`` is not finite (``nan`` never
        passes a ``<=`` test).
    """
    denominator = (1.0 + scale).unsqueeze(-1)
    if lower is None:
        return torch.linalg.vector_norm(grad / denominator, float('inf'), -1)
    projected = torch.clamp(torch.addcdiv(u, grad, denominator, value=-1.0), lower, upper)
    return torch.linalg.vector_norm(u - projected, float('inf'), -1)


def quadratic_model_residual(H: torch.Tensor, g: torch.Tensor, d: torch.Tensor, u: torch.Tensor,
                             lower: torch.Tensor | None, upper: torch.Tensor | None) -> torch.Tensor:
    """:func:`box_kkt_residual` of the quadratic model ``0.5 d^T H d + g^T d`` at the change ``d``.

    Args:
        H: ``(B, N, N)`` Hessian in the controls.
        g: ``(B, N)`` gradient at the nominal controls.
        d: ``(B, N)`` change from the nominal controls.
        u: ``(B, N)`` the controls after the change (tested against the bounds).
        lower: ``(B, N)`` or ``None``.
        upper: ``(B, N)`` or ``None``.

    The model's gradient at ``d`` is ``g + H d``: exact for linear dynamics and a quadratic cost,
    a first-order estimate of the true gradient otherwise.
    """
    grad = torch.baddbmm(g.unsqueeze(-1), H, d.unsqueeze(-1)).squeeze(-1)
    inf = float('inf')           # the terms g and H d: |H d| <= |g| + |g + H d|, the same magnitude
    scale = torch.maximum(torch.linalg.vector_norm(g, inf, -1), torch.linalg.vector_norm(grad, inf, -1))
    return box_kkt_residual(grad, u, lower, upper, scale)


def costates(A: torch.Tensor, lx: torch.Tensor) -> torch.Tensor:
    """Costates ``lam_T = lx_T``, ``lam_t = lx_t + A_t^T lam_{t+1}`` ``(B, T+1, n_x)`` from
    ``A (B, T, n_x, n_x)`` and ``lx (B, T+1, n_x)`` (a backward recursion)."""
    lam = [lx[:, -1].unsqueeze(-1)]
    ATs, lxs = A.mT.unbind(1), lx.unsqueeze(-1).unbind(1)
    for t in range(A.shape[1] - 1, -1, -1):
        lam.append(torch.baddbmm(lxs[t], ATs[t], lam[-1]))
    return torch.stack(lam[::-1], 1).squeeze(-1)


def certificate(dynamics, cost, x: torch.Tensor, u: torch.Tensor, target, u_prev,
                lower: torch.Tensor | None, upper: torch.Tensor | None) -> torch.Tensor:
    """The exact certificate (:func:`box_kkt_residual`) of a trajectory, ``(B,)``.

    The reduced gradient ``dJ/du_t = lu_t + B_t^T lam_{t+1}`` from the cost expansion and the
    dynamics' Jacobians at ``x (B, T+1, n_x)``, ``u (B, T, n_u)`` (one linearisation and a costate
    recursion); bounds ``(B, T, n_u)`` or ``None``.
    """
    A, B = dynamics.jacobians(x[:, :-1], u)
    e = cost.expand(x, u, target, u_prev)
    lam = costates(A, e.lx)
    Bl = (B.mT @ lam[:, 1:].unsqueeze(-1)).squeeze(-1)
    batch = u.shape[0]
    scale = torch.maximum(e.lu.abs().flatten(1).amax(-1), Bl.abs().flatten(1).amax(-1))
    flat = [None if t is None else t.reshape(batch, -1) for t in (e.lu + Bl, u, lower, upper)]
    return box_kkt_residual(*flat, scale)
