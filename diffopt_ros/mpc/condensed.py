"""Condensed Gauss-Newton step: the iLQR subproblem as one dense box QP in the controls.

The linearised dynamics ``dx_{t+1} = A_t dx_t + B_t du_t`` (``dx_0 = 0``) give the state changes
as ``dX = S dU`` with the block lower-triangular sensitivity ``S`` (one triangular solve), so the
quadratic model of the cost becomes ``0.5 dU^T H dU + g^T dU`` over ``T n_u`` variables with box
bounds. This is the same subproblem the box-DDP Riccati pass solves, exactly, but in a handful of
large batched operations instead of ``T`` sequential small ones: at batch 1 the Riccati pass is
bound by per-operation overhead, while ``(T n_u)^3`` dense work is cheap for the horizons of a
control loop. For large batches the Riccati pass (:mod:`.lqr`) is the better trade.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch

from .boxqp import active_set, proximal_box_qp, solve_box_qp, solve_on_set
from .costs import CostExpansion
from .dynamics import Dynamics
from .kkt import quadratic_model_residual

# largest batch whose box-QP factors are kept for the backward (LTI T=30, batch 16: the copies of
# the factors in the active-set iterations cost more than the backward's re-factorisation)
_KEEP_FACTOR_BATCH = 4
# scaled KKT residual (float64) above which a box-QP solution is re-solved as semi-definite
_QP_TOLERANCE = 1e-10


def _block_diagonal(blocks: torch.Tensor, offset: int, size: tuple[int, int]) -> torch.Tensor:
    """Dense ``(B, T r, T c)`` with ``blocks (B, T - offset, r, c)`` on block diagonal ``-offset``."""
    batch, n_blocks, r, c = blocks.shape
    T = n_blocks + offset
    out = blocks.new_zeros(batch, T, r, T, c)
    torch.diagonal(out, -offset, 1, 3).copy_(blocks.permute(0, 2, 3, 1))   # out[:, t + offset, :, t]
    return out.view(batch, size[0], size[1])


def _add_block_diagonal(out: torch.Tensor, blocks: torch.Tensor, offset: int) -> None:
    """Add ``blocks (B, T - |offset|, r, c)`` to block diagonal ``-offset`` of ``out (B, T r, T c)``
    (contiguous) in place (``out[:, t + offset, :, t]`` in ``(B, T, r, T, c)`` blocks)."""
    batch, n_blocks, r, c = blocks.shape
    T = n_blocks + abs(offset)
    torch.diagonal(out.view(batch, T, r, T, c), -offset, 1, 3).add_(blocks.permute(0, 2, 3, 1))


def linear_rollout(dynamics: Dynamics, x_init: torch.Tensor,
                   u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Roll-out of affine dynamics (``Dynamics.linear``) as one block-bidiagonal triangular solve,
    ``x_{t+1} - A x_t = f(0, u_t)`` (``f(x_0, u_0)`` at ``t = 0``), instead of ``T`` sequential steps.

    ``x_init (B, n_x)``, ``u (B, T, n_u)`` -> states ``(B, T+1, n_x)`` and the float64 matrix of the
    solve ``(B, T n_x, T n_x)`` (identity blocks, ``-A`` below; ``None`` for ``T = 1``): for affine
    dynamics it does not depend on the trajectory, so :func:`condensed_step` takes it as it is.
    """
    batch, T, _ = u.shape
    n = x_init.shape[-1]
    x_start = torch.cat((x_init.unsqueeze(1), x_init.new_zeros(batch, T - 1, n)), 1)
    rest = dynamics(x_start, u)                                    # (B, T, n_x)
    minus_A = None
    if T > 1:
        if dynamics.time_varying:               # Jacobians of whole horizons only
            A = dynamics.jacobians(x_start, u)[0][:, 1:]
        else:
            A, _ = dynamics.jacobians(x_start[:, 1:], u[:, 1:])
        minus_A = _block_diagonal(-A.double(), 1, (T * n, T * n))
        rest = torch.linalg.solve_triangular(minus_A, rest.double().reshape(batch, -1, 1), upper=False,
                                             unitriangular=True).view(batch, T, n).to(x_init.dtype)
    return torch.cat((x_init.unsqueeze(1), rest), 1), minus_A


def _gradient(S: torch.Tensor, expansion: CostExpansion) -> torch.Tensor:
    """``g = S^T lx_{1..T} + lu`` ``(B, T n_u)`` for ``S (B, T n_x, T n_u)``."""
    batch, N = S.shape[:2]
    return torch.baddbmm(expansion.lu.reshape(batch, -1, 1), S.mT,
                         expansion.lx[:, 1:].reshape(batch, N, 1)).squeeze(-1)


def condensed_hessian(expansion: CostExpansion, A: torch.Tensor, B: torch.Tensor,
                      minus_A: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Hessian ``H (B, T n_u, T n_u)`` and gradient ``g (B, T n_u)`` of the cost w.r.t. ``dU``, the
    sensitivity ``S (B, T n_x, T n_u)`` (``dX_{1..T} = S dU``) and ``M`` (see :class:`CondensedModel`).

    Args:
        expansion: cost derivatives along the nominal trajectory.
        A: ``(B, T, n_x, n_x)`` state Jacobians.
        B: ``(B, T, n_x, n_u)`` control Jacobians.
        minus_A: ``M`` where already formed from ``A`` (:func:`linear_rollout`), else ``None``.
    """
    batch, T, n, m = B.shape
    N, M = T * n, T * m
    Bbar = _block_diagonal(B, 0, (N, M))
    if T > 1:
        if minus_A is None:
            minus_A = _block_diagonal(-A[:, 1:], 1, (N, N))
        S = torch.linalg.solve_triangular(minus_A, Bbar, upper=False, unitriangular=True)
    else:
        S, minus_A = Bbar, None
    S_blocks = S.view(batch, T, n, M)
    H = S.mT @ (expansion.lxx[:, 1:] @ S_blocks).view(batch, N, M)       # new tensor: added to in place
    _add_block_diagonal(H, expansion.luu, 0)
    g = _gradient(S, expansion)
    if expansion.lux is not None and T > 1:
        cross = expansion.lux[:, 1:] @ S_blocks[:, :-1]                      # (B, T-1, m, M): rows 1..T-1
        H.view(batch, T, m, M)[:, 1:] += cross
        H.view(batch, M, T, m)[:, :, 1:] += cross.permute(0, 3, 1, 2)        # its transpose
    if expansion.luu_prev is not None and T > 1:
        _add_block_diagonal(H, expansion.luu_prev[:, 1:], 1)
        _add_block_diagonal(H, expansion.luu_prev[:, 1:].mT, -1)
    return H, g, S, minus_A


class CondensedModel(NamedTuple):
    """The dense subproblem's matrices (float64), kept for the implicit backward when they do not
    change along the solve (linear dynamics and a quadratic cost).

    Attributes:
        H: ``(B, T n_u, T n_u)`` Hessian in the controls, without regularization.
        S: ``(B, T n_x, T n_u)`` sensitivity ``dX_{1..T} = S dU``.
        M: ``(B, T n_x, T n_x)`` unit lower block-bidiagonal ``M dX_{1..T} = blkdiag(B_t) dU``
            (identity blocks, ``-A_t`` below), or ``None`` for ``T = 1``.
        expansion: the cost expansion the Hessian was formed from (its Hessian blocks are used).
        factor: ``(B, T n_u, T n_u)`` Cholesky factor of ``H`` on the free set of the step's clamped
            set (:func:`~diffopt_ros.mpc.boxqp.masked_cholesky`), or ``None`` where not known.
        g: ``(B, T n_u)`` gradient of the cost w.r.t. the controls at the nominal trajectory.
        residual: ``(B,)`` the KKT certificate of the step in this model
            (:func:`~diffopt_ros.mpc.kkt.quadratic_model_residual` with ``H``, not regularised).
    """

    H: torch.Tensor
    S: torch.Tensor
    M: torch.Tensor | None
    expansion: CostExpansion
    factor: torch.Tensor | None = None
    g: torch.Tensor | None = None
    residual: torch.Tensor | None = None


def _float64(expansion: CostExpansion, A: torch.Tensor,
             B: torch.Tensor) -> tuple[CostExpansion, torch.Tensor, torch.Tensor]:
    return CostExpansion(*(None if t is None else t.double() for t in expansion)), A.double(), B.double()


def condensed_step(expansion: CostExpansion, A: torch.Tensor, B: torch.Tensor,
                   lower: torch.Tensor | None, upper: torch.Tensor | None,
                   regularization: torch.Tensor | None = None, minus_A: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, CondensedModel]:
    """The Gauss-Newton control step ``dU (B, T, n_u)``, its clamped set ``(B, T, n_u)`` bool, the
    decrease of the quadratic model ``(B,)`` and the dense model (:class:`CondensedModel`).

    Args:
        expansion: cost derivatives along the nominal trajectory.
        A: ``(B, T, n_x, n_x)`` state Jacobians.
        B: ``(B, T, n_x, n_u)`` control Jacobians.
        lower: ``(B, T, n_u)`` lower bound on the change (``u_lower - u_nominal``) or ``None``.
        upper: ``(B, T, n_u)`` upper bound on the change or ``None``.
        regularization: optional ``(B,)`` term added to the Hessian diagonal.
        minus_A: ``(B, T n_x, T n_x)`` float64 ``M`` of :class:`CondensedModel` where already
            formed from ``A`` (:func:`linear_rollout`), else ``None``.

    The dense subproblem is formed and solved in float64 (results in the input dtype): its
    Hessian ``S^T Q S`` squares the conditioning of the horizon's dynamics, and in float32 the
    step of an ill-conditioned problem is off by more than the solver's tolerance.
    """
    batch, T, _, m = B.shape
    dtype = B.dtype
    expansion, A, B = _float64(expansion, A, B)
    H, g, S, minus_A = condensed_hessian(expansion, A, B, minus_A)
    H_model = H
    if regularization is not None:
        H = H + regularization.double().view(-1, 1, 1) * torch.eye(T * m, dtype=H.dtype, device=H.device)
    if lower is None:
        L, _ = torch.linalg.cholesky_ex(H)
        dU = -torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1)
        clamped = torch.zeros_like(dU, dtype=torch.bool)
    else:
        # the step from 0 (inside the box): solve_box_qp's active set, keeping the last factor for
        # the backward where that is cheaper than re-factorising (copying factors costs at large B)
        lo, hi = lower.double().reshape(batch, -1), upper.double().reshape(batch, -1)
        X, clamped, rows, L = active_set(H, g.unsqueeze(-1), lo, hi, (lo >= 0) & (g > 0), (hi <= 0) & (g < 0),
                                         min(T * m, 10) + 1,
                                         keep_factor=regularization is None and batch <= _KEEP_FACTOR_BATCH)
        dU = X.squeeze(-1)
        if rows is not None:            # an unsettled set: projected Newton, factor not kept
            k_rows, clamped_rows = solve_box_qp(H[rows], g[rows], lo[rows], hi[rows], dU[rows])
            dU, clamped, L = dU.index_copy(0, rows, k_rows), clamped.index_copy(0, rows, clamped_rows), None
    # verify: a semi-definite H (a zero control weight, duplicated inputs) has singular free blocks,
    # whose Cholesky solves are not minimisers; those rows are solved again by proximal point steps
    lo_v, hi_v = (None, None) if lower is None else (lo, hi)
    # a certificate, not part of the (unrolled) solution
    with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():
        residual = quadratic_model_residual(H_model, g, dU, dU, lo_v, hi_v)
    if not float(residual.max()) <= _QP_TOLERANCE:           # (nan propagates: also re-solved)
        rows = (~(residual <= _QP_TOLERANCE)).nonzero().squeeze(-1)
        k_rows, clamped_rows = proximal_box_qp(H[rows], g[rows], None if lower is None else lo[rows],
                                               None if lower is None else hi[rows])
        dU, clamped, L = dU.index_copy(0, rows, k_rows), clamped.index_copy(0, rows, clamped_rows), None
        bounds = [None if t is None else t[rows] for t in (lo_v, hi_v)]
        with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():
            residual = residual.index_copy(0, rows, quadratic_model_residual(H_model[rows], g[rows], k_rows,
                                                                             k_rows, *bounds))
    model = CondensedModel(H_model, S, minus_A, expansion, L if regularization is None else None, g, residual)
    decrease = -(torch.baddbmm(g.unsqueeze(-1), H, dU.unsqueeze(-1), alpha=0.5).squeeze(-1) * dU).sum(-1)
    return dU.to(dtype).view(batch, T, m), clamped.view(batch, T, m), decrease.to(dtype), model


def condensed_adjoint(hessian: CostExpansion, A: torch.Tensor, B: torch.Tensor, clamped: torch.Tensor,
                      model: CondensedModel | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The equality-constrained LQ solve of the implicit backward as one dense solve (small batches).

    Minimises the quadratic model ``hessian`` (its gradients are the incoming gradients) over
    ``dx_{t+1} = A_t dx_t + B_t du_t``, ``dx_0 = 0``, with the ``clamped (B, T, n_u)`` controls held
    at zero change; float64 inside, as :func:`condensed_step`. With ``model`` (the forward's dense
    matrices, valid when they equal those of ``hessian``, ``A`` and ``B``) only the gradient is formed.

    Returns:
        ``w_x (B, T+1, n_x)``, ``w_u (B, T, n_u)`` and the state rows of the model's gradient along
        the solution ``(B, T+1, n_x)`` (the right-hand side of the costate recursion).
    """
    dtype = B.dtype
    batch, T, n, m = B.shape
    if model is None:
        hessian, A, B = _float64(hessian, A, B)
        H, g, S, _ = condensed_hessian(hessian, A, B)
    else:
        H, S = model.H, model.S
        hessian = model.expansion._replace(lx=hessian.lx.double(), lu=hessian.lu.double())
        g = _gradient(S, hessian)
    flat = clamped.reshape(batch, T * m)
    factor = None if model is None else model.factor
    w_u = solve_on_set(H, g.unsqueeze(-1), flat, torch.zeros_like(g), factor).squeeze(-1)
    w_x = torch.cat((w_u.new_zeros(batch, 1, n), (S @ w_u.unsqueeze(-1)).view(batch, T, n)), 1)
    w_u = w_u.view(batch, T, m)
    residual = (hessian.lxx @ w_x.unsqueeze(-1)).squeeze(-1) + hessian.lx
    if hessian.lux is not None:
        residual = residual + torch.cat(((w_u.unsqueeze(-2) @ hessian.lux).squeeze(-2),
                                         w_u.new_zeros(batch, 1, n)), 1)
    return w_x.to(dtype), w_u.to(dtype), residual.to(dtype)


def condensed_costates(model: CondensedModel, A: torch.Tensor, lx: torch.Tensor) -> torch.Tensor:
    """Costates ``lam_T = lx_T``, ``lam_t = lx_t + A_t^T lam_{t+1}`` ``(B, T+1, n_x)`` by one
    triangular solve with the forward's ``M`` (``M^T lam_{1..T} = lx_{1..T}``) instead of ``T`` steps.

    Args:
        model: the forward's dense matrices.
        A: ``(B, T, n_x, n_x)`` state Jacobians (``A_0`` for ``lam_0``).
        lx: ``(B, T+1, n_x)`` right-hand side.
    """
    batch, T1, n = lx.shape
    rest = lx[:, 1:].double().reshape(batch, -1, 1)
    if model.M is not None:
        rest = torch.linalg.solve_triangular(model.M.mT, rest, upper=True, unitriangular=True)
    rest = rest.view(batch, T1 - 1, n).to(lx.dtype)
    first = torch.baddbmm(lx[:, :1], rest[:, :1], A[:, 0])             # lam_0^T = lx_0^T + lam_1^T A_0
    return torch.cat((first, rest), 1)


def model_certificate(model: CondensedModel, d: torch.Tensor, u: torch.Tensor, lower, upper) -> torch.Tensor:
    """:func:`~.kkt.quadratic_model_residual` of a condensed model at the control change
    ``d (B, T, n_u)`` to ``u (B, T, n_u)`` (bounds ``(B, T, n_u)`` or ``None``), ``(B,)`` in ``u``'s dtype."""
    batch = u.shape[0]
    flat = [None if t is None else t.detach().reshape(batch, -1).double() for t in (d, u, lower, upper)]
    return quadratic_model_residual(model.H.detach(), model.g.detach(), *flat).to(u.dtype)


def condensed_fits(x: torch.Tensor, u: torch.Tensor) -> bool:
    """Whether the condensed solver's dense matrices stay small (the size part of
    :func:`condensed_is_cheaper`)."""
    batch, T, n_u = u.shape
    return T * n_u <= 200 and batch * (T * x.shape[-1]) ** 2 * (T * n_u) <= 3e8


def condensed_is_cheaper(x: torch.Tensor, u: torch.Tensor) -> bool:
    """Rule for ``solver='auto'``: the dense work of the condensed step (the ``(T n_x)^2 T n_u``
    triangular solve per sample) is small enough that saving ``T`` sequential Riccati steps wins.
    ``x (B, ..., n_x)`` (states or initial states), ``u (B, T, n_u)``."""
    batch, T, n_u = u.shape
    n_x = x.shape[-1]
    small = batch <= 2 or (n_u > 1 and batch <= 16)   # m > 1: Riccati's per-step box QPs cost most
    return small and T * n_u <= 200 and batch * (T * n_x) ** 2 * (T * n_u) <= 3e8
