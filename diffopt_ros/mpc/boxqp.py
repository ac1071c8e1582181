"""Batched box-constrained quadratic programs (the per-step problem of box-DDP).

``min_k 0.5 k^T H k + g^T k  s.t.  lower <= k <= upper`` for a batch of small dense problems,
solved by projected Newton (Bertsekas 1982; Tassa et al., ICRA 2014) with a parallel projected
line search. For a positive definite ``H`` the result is exact: on return the free entries
satisfy ``H_ff k_f = -(g_f + H_fc k_c)`` and the clamped ones sit on a bound with the gradient
pointing outwards.
"""
from __future__ import annotations

import torch

_STEPS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 1e-3)
_ARMIJO = 1e-4


def masked_hessian(H: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """``H`` restricted to the free set, identity on clamped rows/columns: ``(B, m, m)``."""
    both = free.unsqueeze(-1) & free.unsqueeze(-2)
    eye = torch.eye(H.shape[-1], dtype=torch.bool, device=H.device)
    return torch.where(both, H, (eye & ~free.unsqueeze(-1)).to(H.dtype))


def clamped_set(k: torch.Tensor, grad: torch.Tensor, lower: torch.Tensor,
                upper: torch.Tensor) -> torch.Tensor:
    """Entries on a bound whose gradient points out of the box: ``(B, m)`` bool."""
    return ((k <= lower) & (grad > 0)) | ((k >= upper) & (grad < 0))


def _objective(H: torch.Tensor, g: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``0.5 k^T H k + g^T k`` for ``k (B, S, m)`` -> ``(B, S)``."""
    Hk = k @ H.mT
    return ((0.5 * Hk + g.unsqueeze(-2)) * k).sum(-1)


def solve_on_set(H: torch.Tensor, g: torch.Tensor, clamped: torch.Tensor,
                 k_bound: torch.Tensor) -> torch.Tensor:
    """Minimiser with the ``clamped (B, m)`` entries fixed at ``k_bound (B, m)``: ``(B, m)``.

    Free entries solve ``H_ff k_f = -(g_f + H_fc k_c)``; differentiable in ``H``, ``g``, ``k_bound``.
    """
    k_c = torch.where(clamped, k_bound, torch.zeros_like(k_bound))
    rhs = ((H @ k_c.unsqueeze(-1)).squeeze(-1) + g) * ~clamped
    L, _ = torch.linalg.cholesky_ex(masked_hessian(H, ~clamped))
    return k_c - torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1)


def kkt_satisfied(H: torch.Tensor, g: torch.Tensor, k: torch.Tensor, clamped: torch.Tensor,
                  lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Whether ``k`` (solved on the set ``clamped``, so clamped entries sit exactly on a bound) is the
    box-QP minimiser, per problem ``(B,)``: free entries inside the box, clamped ones with an outward
    gradient, both up to round-off.
    """
    scale = 1.0 + g.abs().amax(-1, keepdim=True) + k.abs().amax(-1, keepdim=True)
    slack = (1e3 * torch.finfo(k.dtype).eps) * scale
    grad = torch.baddbmm(g.unsqueeze(-1), H, k.unsqueeze(-1)).squeeze(-1)
    dual_ok = torch.where(k <= lower, grad >= -slack, grad <= slack)
    primal_ok = (k >= lower - slack) & (k <= upper + slack)
    return torch.where(clamped, dual_ok, primal_ok).all(-1)


def solve_box_qp(H: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                 k0: torch.Tensor, max_iterations: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected Newton on a batch of box QPs.

    Each iteration fixes the entries on a bound with an outward gradient, takes the Newton point
    of the rest, returns if that point satisfies the KKT conditions, and otherwise moves towards
    it with a projected Armijo search over several step sizes at once.

    Args:
        H: ``(B, m, m)`` positive definite.
        g: ``(B, m)``.
        lower: ``(B, m)`` lower bounds (``-inf`` allowed).
        upper: ``(B, m)`` upper bounds (``inf`` allowed), ``lower <= upper``.
        k0: ``(B, m)`` start (projected onto the box).
        max_iterations: cap on Newton steps.

    Returns:
        ``k (B, m)`` the minimiser and ``clamped (B, m)`` bool, its clamped set.
    """
    k = torch.maximum(torch.minimum(k0, upper), lower)
    steps = torch.tensor(_STEPS, dtype=H.dtype, device=H.device).view(1, -1, 1)
    rows = torch.arange(k.shape[0], device=k.device)
    for _ in range(max_iterations):
        grad = (H @ k.unsqueeze(-1)).squeeze(-1) + g
        clamped = clamped_set(k, grad, lower, upper)
        newton = solve_on_set(H, g, clamped, k)
        if bool(kkt_satisfied(H, g, newton, clamped, lower, upper).all()):
            return newton, clamped
        direction = newton - k
        trial = k.unsqueeze(1) + steps * direction.unsqueeze(1)
        trial = torch.maximum(torch.minimum(trial, upper.unsqueeze(1)), lower.unsqueeze(1))
        decrease = _objective(H, g, trial) - _objective(H, g, k.unsqueeze(1))
        armijo = decrease <= _ARMIJO * ((trial - k.unsqueeze(1)) * grad.unsqueeze(1)).sum(-1)
        first = torch.where(armijo.any(-1), armijo.to(torch.int8).argmax(-1), steps.shape[1] - 1)
        k = trial[rows, first]
    grad = (H @ k.unsqueeze(-1)).squeeze(-1) + g
    clamped = clamped_set(k, grad, lower, upper)
    return solve_on_set(H, g, clamped, k), clamped
