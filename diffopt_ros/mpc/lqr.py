"""Time-varying LQR with control bounds: homogeneous stage matrices and the box-DDP Riccati pass.

Every quantity is written in homogeneous coordinates with the layout ``[z, 1, u]``: a stage's
quadratic model ``0.5 [z;1;u]^T C [z;1;u]`` holds Hessian and gradient in one matrix, the
dynamics ``[z';1] = F [z;1;u]`` hold Jacobians and drift, and the cost-to-go is
``0.5 [z;1]^T P [z;1]``. One Riccati step is then two matrix products for ``Q = C + F^T P F``, a
policy ``u = G [z;1]`` (``G = [K | k]``) from a box QP on ``Q_uu``, and two more for the new ``P``.

``z`` is the state, or ``(x, u_prev)`` when the cost couples consecutive controls (a control
rate penalty): then ``n_z = n_x + n_u``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .boxqp import clamped_set, kkt_satisfied, masked_hessian, solve_box_qp
from .costs import CostExpansion


class StageMatrices(NamedTuple):
    """Homogeneous LQR data for a horizon of ``T`` steps (``a = n_z + 1``).

    Attributes:
        C: ``(B, T, a + n_u, a + n_u)`` stage Hessian/gradient.
        F: ``(B, T, a, a + n_u)`` stage dynamics.
        P_final: ``(B, a, a)`` terminal cost.
        n_x: state size; ``n_z = a - 1`` is ``n_x`` or ``n_x + n_u`` (augmented).
    """

    C: torch.Tensor
    F: torch.Tensor
    P_final: torch.Tensor
    n_x: int

    @property
    def augmented(self) -> bool:
        return self.F.shape[-2] - 1 != self.n_x


def stage_matrices(expansion: CostExpansion, A: torch.Tensor, B: torch.Tensor,
                   drift: torch.Tensor | None = None) -> StageMatrices:
    """Assemble homogeneous stage matrices.

    Args:
        expansion: cost derivatives along the trajectory (see :class:`CostExpansion`).
        A: ``(B, T, n_x, n_x)`` dynamics Jacobians w.r.t. the state.
        B: ``(B, T, n_x, n_u)`` w.r.t. the control.
        drift: optional ``(B, T, n_x)`` affine term of the (delta) dynamics.

    Returns:
        :class:`StageMatrices`; augmented with the previous control when the expansion has a
        control-rate coupling ``luu_prev``.
    """
    lxx, lx, luu, lu = expansion.lxx, expansion.lx, expansion.luu, expansion.lu
    batch, T, n_x, n_u = B.shape
    n_z = n_x + n_u if expansion.luu_prev is not None else n_x
    a = n_z + 1
    size = a + n_u
    C = lxx.new_zeros(batch, T, size, size)
    C[..., :n_x, :n_x] = lxx[:, :T]
    C[..., :n_x, n_z] = lx[:, :T]
    C[..., n_z, :n_x] = lx[:, :T]
    C[..., a:, a:] = luu
    C[..., a:, n_z] = lu
    C[..., n_z, a:] = lu
    if expansion.lux is not None:
        C[..., a:, :n_x] = expansion.lux
        C[..., :n_x, a:] = expansion.lux.mT
    F = A.new_zeros(batch, T, a, size)
    F[..., :n_x, :n_x] = A
    F[..., :n_x, a:] = B
    F[..., n_z, n_z] = 1.0
    if drift is not None:
        F[..., :n_x, n_z] = drift
    if n_z != n_x:
        C[..., a:, n_x:n_z] = expansion.luu_prev
        C[..., n_x:n_z, a:] = expansion.luu_prev.mT
        F[..., n_x:n_z, a:] = torch.eye(n_u, dtype=A.dtype, device=A.device)
    P = lxx.new_zeros(batch, a, a)
    P[:, :n_x, :n_x] = lxx[:, T]
    P[:, :n_x, n_z] = lx[:, T]
    P[:, n_z, :n_x] = lx[:, T]
    return StageMatrices(C, F, P, n_x)


def _policy_unbounded(Quu: torch.Tensor, Qua: torch.Tensor) -> torch.Tensor:
    if Quu.shape[-1] == 1:
        return -Qua / Quu
    L, _ = torch.linalg.cholesky_ex(Quu)
    return -torch.cholesky_solve(Qua, L)


def _policy_for_set(Quu: torch.Tensor, Qua: torch.Tensor, clamped: torch.Tensor,
                    k_clamped: torch.Tensor) -> torch.Tensor:
    """``G = [K | k]`` with clamped controls fixed at ``k_clamped`` (their rows are ``[0 | k_c]``)."""
    free = ~clamped
    k_c = torch.where(clamped, k_clamped, torch.zeros_like(k_clamped))
    rhs = torch.cat((Qua[..., :-1], (Qua[..., -1] + (Quu @ k_c.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1)), -1)
    rhs = rhs * free.unsqueeze(-1)
    L, _ = torch.linalg.cholesky_ex(masked_hessian(Quu, free))
    G = -torch.cholesky_solve(rhs, L)
    k = G[..., -1] + k_c
    return torch.cat((G[..., :-1], k.unsqueeze(-1)), -1)


def _policy_box(Quu: torch.Tensor, Qua: torch.Tensor, lower: torch.Tensor,
                upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box-constrained policy about ``k = 0`` (feasible nominal): ``G (B, m, a)``, clamped ``(B, m)``."""
    qu = Qua[..., -1]
    if Quu.shape[-1] == 1:
        G = -Qua / Quu
        k = G[..., -1]
        k_box = torch.maximum(torch.minimum(k, upper), lower)
        clamped = k_box != k
        G = torch.cat((G[..., :-1] * (~clamped).unsqueeze(-1), k_box.unsqueeze(-1)), -1)
        return G, clamped
    # First projected-Newton step from k = 0, verified by the KKT conditions; full solve otherwise.
    clamped = clamped_set(torch.zeros_like(qu), qu, lower, upper)
    G = _policy_for_set(Quu, Qua, clamped, torch.where(qu > 0, lower, upper))
    if bool(kkt_satisfied(Quu, qu, G[..., -1], clamped, lower, upper).all()):
        return G, clamped
    k, clamped = solve_box_qp(Quu, qu, lower, upper, G[..., -1])
    return _policy_for_set(Quu, Qua, clamped, k), clamped


def riccati(stages: StageMatrices, lower: torch.Tensor | None, upper: torch.Tensor | None,
            regularization: torch.Tensor | None = None,
            clamped: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward pass of box-DDP.

    Args:
        stages: homogeneous stage matrices (see :func:`stage_matrices`).
        lower: ``(B, T, n_u)`` lower bound on the control *change* (``u_lower - u_nominal``),
            ``None`` for an unconstrained pass.
        upper: ``(B, T, n_u)`` upper bound on the change, ``None`` with ``lower``.
        regularization: optional ``(B,)`` Levenberg-Marquardt term added to ``Q_uu``.
        clamped: optional fixed clamped set ``(B, T, n_u)`` (bool): the policy keeps those
            controls at zero change and solves for the rest (used by the implicit backward).

    Returns:
        ``G (B, T, n_u, n_z + 1)`` the affine policies ``du_t = G_t [dz_t; 1]`` and the clamped
        set ``(B, T, n_u)`` bool and the decrease of the quadratic model ``(B,)`` (the cost change
        the full step would give if the model were exact).
    """
    C_all, F_all, P = stages.C, stages.F, stages.P_final
    batch, T, a = F_all.shape[0], F_all.shape[1], F_all.shape[2]
    n_u = C_all.shape[-1] - a
    Cs, Fs = C_all.unbind(1), F_all.unbind(1)
    lows = highs = fixed = None
    if lower is not None:
        lows, highs = lower.unbind(1), upper.unbind(1)
    if clamped is not None:
        fixed = clamped.unbind(1)
    reg = None
    if regularization is not None:
        reg = regularization.view(-1, 1, 1) * torch.eye(n_u, dtype=P.dtype, device=P.device)
    gains: list[torch.Tensor] = [P] * T
    sets: list[torch.Tensor] = [P] * T
    no_clamp = torch.zeros(batch, n_u, dtype=torch.bool, device=P.device)
    for t in range(T - 1, -1, -1):
        Ft = Fs[t]
        Q = torch.baddbmm(Cs[t], Ft.mT @ P, Ft)
        Qaa, Qua, Quu = Q[:, :a, :a], Q[:, a:, :a], Q[:, a:, a:]
        Quu_reg = Quu if reg is None else Quu + reg
        if fixed is not None:
            G = _policy_for_set(Quu_reg, Qua, fixed[t], torch.zeros_like(Qua[..., -1]))
            c = fixed[t]
        elif lows is None:
            G, c = _policy_unbounded(Quu_reg, Qua), no_clamp
        else:
            G, c = _policy_box(Quu_reg, Qua, lows[t], highs[t])
        W = torch.baddbmm(Qua, Quu, G)
        P = torch.baddbmm(torch.baddbmm(Qaa, Qua.mT, G), G.mT, W)
        gains[t], sets[t] = G, c
    return torch.stack(gains, 1), torch.stack(sets, 1), -0.5 * P[:, -1, -1]
