"""Batched box-constrained quadratic programs (the per-step problem of box-DDP).

``min_k 0.5 k^T H k + g^T k  s.t.  lower <= k <= upper`` for a batch of small dense problems.
The solver is a primal-dual active-set method (Hintermueller, Ito & Kunisch, SIAM J. Optim.
2002): solve on a guessed set of clamped entries, clamp the free entries that left the box,
release the clamped ones whose gradient turned inwards, repeat until the set repeats. It usually
settles in one to three solves; after the first solve only the problems whose set changed are
carried on, so a batch pays for its few hard problems only. The rare problem whose set has not
settled after ``min(m, 10) + 1`` solves (the iteration can cycle) is finished by projected Newton
(Bertsekas 1982; Tassa et al., ICRA 2014), which always converges. For a positive definite ``H``
the result is exact: the free entries satisfy ``H_ff k_f = -(g_f + H_fc k_c)`` and the clamped
ones sit on a bound with the gradient pointing outwards.
"""
from __future__ import annotations

import torch

_STEPS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 1e-3)
_ARMIJO = 1e-4


def masked_hessian(H: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """``H (B, m, m)`` restricted to the ``free (B, m)`` set, identity on clamped rows/columns."""
    f = free.to(H.dtype)
    masked = H * (f.unsqueeze(-1) * f.unsqueeze(-2))
    masked.diagonal(0, -2, -1).add_(1.0 - f)                     # a new tensor: in place
    return masked


def clamped_set(k: torch.Tensor, grad: torch.Tensor, lower: torch.Tensor,
                upper: torch.Tensor) -> torch.Tensor:
    """Entries on a bound whose gradient points out of the box: ``(B, m)`` bool."""
    return ((k <= lower) & (grad > 0)) | ((k >= upper) & (grad < 0))


def _objective(H: torch.Tensor, g: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``0.5 k^T H k + g^T k`` for ``k (B, S, m)`` -> ``(B, S)``."""
    Hk = k @ H.mT
    return ((0.5 * Hk + g.unsqueeze(-2)) * k).sum(-1)


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


def masked_cholesky(H: torch.Tensor, clamped: torch.Tensor) -> torch.Tensor:
    """Cholesky factor ``(B, m, m)`` of ``H (B, m, m)`` restricted to the entries not ``clamped (B, m)``
    (:func:`masked_hessian`), as :func:`solve_on_set` uses it."""
    return torch.linalg.cholesky_ex(masked_hessian(H, ~clamped))[0]


def solve_on_set(H: torch.Tensor, R: torch.Tensor, clamped: torch.Tensor,
                 k_bound: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor:
    """Minimiser with the ``clamped (B, m)`` entries fixed at ``k_bound (B, m)``.

    ``R (B, m, c)``: the last column is the gradient ``g``, the others are further right-hand
    sides solved on the same set (a policy ``[K | k]`` in box-DDP). Returns ``X (B, m, c)``: free
    rows ``X_f = -H_ff^{-1} (R_f + H_fc [0 | k_c])``, clamped rows ``[0 | k_c]``. Differentiable
    in ``H``, ``R`` and ``k_bound``. ``factor``: :func:`masked_cholesky` of ``(H, clamped)`` where
    already computed (not formed again).
    """
    k_c = torch.where(clamped, k_bound, 0.0).unsqueeze(-1)
    L = masked_cholesky(H, clamped) if factor is None else factor
    g = R[..., -1:] + H @ k_c
    free = (~clamped).unsqueeze(-1)
    if R.shape[-1] == 1:                                        # the gradient only
        return k_c - torch.cholesky_solve(g * free, L)
    X = torch.cholesky_solve(torch.cat((R[..., :-1], g), -1) * free, L)
    return torch.cat((-X[..., :-1], k_c - X[..., -1:]), -1)


def active_set(H: torch.Tensor, R: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
               on_lower: torch.Tensor, on_upper: torch.Tensor, max_solves: int, keep_factor: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Primal-dual active-set iterations (see the module docstring).

    Args:
        H: ``(B, m, m)`` positive definite.
        R: ``(B, m, c)`` right-hand sides, the last column the gradient ``g`` (see
            :func:`solve_on_set`).
        lower: ``(B, m)`` lower bounds (``-inf`` allowed).
        upper: ``(B, m)`` upper bounds (``inf`` allowed), ``lower <= upper``.
        on_lower: ``(B, m)`` bool, first guess of the entries clamped at ``lower``.
        on_upper: ``(B, m)`` bool, first guess of the entries clamped at ``upper``.
        max_solves: cap on the solves (at least one).
        keep_factor: also return the factor of each problem's last solve.

    Returns:
        ``X (B, m, c)``, the clamped set ``(B, m)`` bool, the indices of the problems whose set
        has not settled within ``max_solves`` (``None`` when all have; their rows hold the last
        iterate) and, with ``keep_factor``, :func:`masked_cholesky` of ``H`` on the returned set
        ``(B, m, m)`` (else ``None``).
    """
    eps = 1e3 * torch.finfo(H.dtype).eps
    X = clamped = rows = L = sub_L = None
    scale = 1.0 + R[..., -1].abs().amax(-1, keepdim=True)     # of the gradient, for the tolerance
    Hs, Rs, lo, hi, scales = H, R, lower, upper, scale
    for _ in range(max_solves):
        sub_clamped = on_lower | on_upper
        if keep_factor:
            sub_L = masked_cholesky(Hs, sub_clamped)
        sub_X = solve_on_set(Hs, Rs, sub_clamped, torch.where(on_lower, lo, hi), sub_L)
        if rows is None:
            X, clamped, L = sub_X, sub_clamped, sub_L
        else:
            X, clamped = X.index_copy(0, rows, sub_X), clamped.index_copy(0, rows, sub_clamped)
            L = None if L is None else L.index_copy(0, rows, sub_L)
        k = sub_X[..., -1]
        grad = torch.baddbmm(Rs[..., -1:], Hs, sub_X[..., -1:]).squeeze(-1)
        tol = eps * (scales + k.abs().amax(-1, keepdim=True))
        new_lower = torch.where(sub_clamped, on_lower & (grad >= -tol), k < lo - tol)
        new_upper = torch.where(sub_clamped, on_upper & (grad <= tol), k > hi + tol)
        moved = ((new_lower != on_lower) | (new_upper != on_upper)).any(-1).nonzero().squeeze(-1)
        if moved.numel() == 0:
            return X, clamped, None, L
        if moved.numel() < Hs.shape[0]:          # carry on with these only (else with all, no copies)
            rows = moved if rows is None else rows[moved]
            Hs, Rs, lo, hi, scales = H[rows], R[rows], lower[rows], upper[rows], scale[rows]
            new_lower, new_upper = new_lower[moved], new_upper[moved]
        on_lower, on_upper = new_lower, new_upper
    return X, clamped, torch.arange(H.shape[0], device=H.device) if rows is None else rows, L


def _projected_newton(H: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                      k0: torch.Tensor, max_iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected Newton with a parallel projected Armijo search over several step sizes at once;
    shapes as :func:`solve_box_qp`. Each iteration fixes the entries on a bound with an outward
    gradient, takes the Newton point of the rest and returns if it satisfies the KKT conditions."""
    k = torch.maximum(torch.minimum(k0, upper), lower)
    steps = torch.tensor(_STEPS, dtype=H.dtype, device=H.device).view(1, -1, 1)
    rows = torch.arange(k.shape[0], device=k.device)
    for _ in range(max_iterations):
        grad = (H @ k.unsqueeze(-1)).squeeze(-1) + g
        clamped = clamped_set(k, grad, lower, upper)
        newton = solve_on_set(H, g.unsqueeze(-1), clamped, k).squeeze(-1)
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
    return solve_on_set(H, g.unsqueeze(-1), clamped, k).squeeze(-1), clamped


def solve_box_qp(H: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                 k0: torch.Tensor, max_iterations: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched box QPs: active-set solves, projected Newton for the problems left over.

    Args:
        H: ``(B, m, m)`` positive definite.
        g: ``(B, m)``.
        lower: ``(B, m)`` lower bounds (``-inf`` allowed).
        upper: ``(B, m)`` upper bounds (``inf`` allowed), ``lower <= upper``.
        k0: ``(B, m)`` start (projected onto the box): its entries on a bound with an outward
            gradient are the first guess of the clamped set.
        max_iterations: cap on the projected-Newton steps of a problem the active-set iterations
            did not settle.

    Returns:
        ``k (B, m)`` the minimiser and ``clamped (B, m)`` bool, its clamped set.
    """
    k0 = torch.maximum(torch.minimum(k0, upper), lower)
    grad = torch.baddbmm(g.unsqueeze(-1), H, k0.unsqueeze(-1)).squeeze(-1)
    X, clamped, rows, _ = active_set(H, g.unsqueeze(-1), lower, upper, (k0 <= lower) & (grad > 0),
                                     (k0 >= upper) & (grad < 0), min(H.shape[-1], 10) + 1)
    k = X.squeeze(-1)
    if rows is not None:
        k_rows, clamped_rows = _projected_newton(H[rows], g[rows], lower[rows], upper[rows], k[rows],
                                                 max_iterations)
        k, clamped = k.index_copy(0, rows, k_rows), clamped.index_copy(0, rows, clamped_rows)
    return k, clamped


def proximal_box_qp(H: torch.Tensor, g: torch.Tensor, lower: torch.Tensor | None, upper: torch.Tensor | None,
                    tolerance: float = 1e-10, max_iterations: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Box QPs with a positive **semi**-definite ``H`` by proximal point iterations.

    ``k_{j+1} = argmin 0.5 k^T H k + g^T k + 0.5 rho |k - k_j|^2`` over the box, each a positive
    definite box QP (:func:`solve_box_qp`, warm-started at ``k_j``), with ``rho = 1e-6`` of the
    largest diagonal entry of ``H``. The iterates converge to a minimiser of the convex QP (Rockafellar
    1976): in directions of curvature ``lambda`` the error shrinks by ``rho / (lambda + rho)`` a step,
    flat directions move to the box along ``-g``. Stops when every problem's scaled KKT residual
    (:func:`~diffopt_ros.mpc.kkt.quadratic_model_residual`) is ``<= tolerance``, or after
    ``max_iterations`` (the caller's certificate then reports the residual left: an unbounded problem,
    ``g`` outside the range of ``H`` without bounds, never passes).

    Args:
        H: ``(B, m, m)`` symmetric positive semi-definite.
        g: ``(B, m)``.
        lower: ``(B, m)`` (``-inf`` allowed) or ``None`` (unbounded).
        upper: ``(B, m)`` or ``None``.
        tolerance: scaled KKT residual to reach.
        max_iterations: cap on the proximal steps.

    Returns:
        ``k (B, m)`` and its clamped set ``(B, m)`` bool (entries on a bound with an outward gradient).
    """
    from .kkt import quadratic_model_residual

    batch, m = g.shape
    if lower is None:
        lower = torch.full_like(g, float('-inf'))
        upper = torch.full_like(g, float('inf'))
    diag = H.diagonal(0, -2, -1)
    rho = 1e-6 * diag.abs().amax(-1) + 1e3 * torch.finfo(H.dtype).eps * (1.0 + g.abs().amax(-1))
    H_prox = H + rho.view(-1, 1, 1) * torch.eye(m, dtype=H.dtype, device=H.device)
    k = torch.zeros_like(g).clamp(lower, upper)
    clamped = torch.zeros_like(g, dtype=torch.bool)
    for _ in range(max_iterations):
        k, clamped = solve_box_qp(H_prox, g - rho.unsqueeze(-1) * k, lower, upper, k)
        if bool((quadratic_model_residual(H, g, k, k, lower, upper) <= tolerance).all()):
            break
    return k, clamped
