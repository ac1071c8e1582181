"""Time-varying LQR with control bounds: homogeneous stage matrices and the box-DDP Riccati pass.

Every quantity is written in homogeneous coordinates with the layout ``[z, 1, u]``: a stage's
quadratic model ``0.5 [z;1;u]^T C [z;1;u]`` holds Hessian and gradient in one matrix, the
dynamics ``[z';1] = F [z;1;u]`` hold Jacobians and drift, and the cost-to-go is
``0.5 [z;1]^T P [z;1]``. One Riccati step is then two matrix products for ``Q = C + F^T P F``, a
policy ``u = G [z;1]`` (``G = [K | k]``) from a box QP on ``Q_uu``, and two more for the new
``P = V^T Q V`` with ``V = [I; G]``.

``z`` is the state, or ``(x, u_prev)`` when the cost couples consecutive controls (a control
rate penalty): then ``n_z = n_x + n_u``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .boxqp import active_set, solve_box_qp, solve_on_set
from .costs import CostExpansion

_CHUNK_ELEMENTS = 2 ** 19          # stage matrices are assembled this many elements at a time


class StageMatrices(NamedTuple):
    """Homogeneous LQR data for a horizon of ``T`` steps (``a = n_z + 1``, ``s = a + n_u``).

    The dense stage matrices ``C (B, n, s, s)`` (Hessian/gradient) and ``F (B, n, a, s)``
    (dynamics) are assembled for ``n`` consecutive steps at a time (:meth:`chunks`), so that a
    large batch never holds them for the whole horizon.

    Attributes:
        expansion: cost derivatives (see :class:`CostExpansion`); augmented with the previous
            control when it has a control-rate coupling ``luu_prev``.
        A: ``(B, T, n_x, n_x)`` dynamics Jacobians w.r.t. the state.
        B: ``(B, T, n_x, n_u)`` w.r.t. the control.
        drift: ``(B, T, n_x)`` affine term of the (delta) dynamics, or ``None``.
    """

    expansion: CostExpansion
    A: torch.Tensor
    B: torch.Tensor
    drift: torch.Tensor | None

    @property
    def augmented(self) -> bool:
        return self.expansion.luu_prev is not None

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(n_x, n_u, n_z)``."""
        n_x, n_u = self.B.shape[-2:]
        return n_x, n_u, n_x + n_u if self.augmented else n_x

    def terminal(self) -> torch.Tensor:
        """``(B, a, a)`` terminal cost-to-go."""
        n_x, _, n_z = self.sizes
        lxx, lx = self.expansion.lxx[:, -1], self.expansion.lx[:, -1]
        P = lxx.new_zeros(lxx.shape[0], n_z + 1, n_z + 1)
        P[:, :n_x, :n_x] = lxx
        P[:, :n_x, n_z] = lx
        P[:, n_z, :n_x] = lx
        return P

    def chunks(self, reverse: bool = False):
        """Yield ``(t0, C, F)`` for consecutive blocks of steps ``t0 .. t0 + n - 1`` (backwards
        from the last block when ``reverse``)."""
        batch, T, n_x, n_u = self.B.shape
        size = self.sizes[2] + 1 + n_u
        n = max(1, min(T, _CHUNK_ELEMENTS // (batch * size * (2 * size - n_u))))
        starts = range(0, T, n)
        for t0 in (reversed(starts) if reverse else starts):
            yield (t0, *self._assemble(t0, min(T, t0 + n)))

    def _assemble(self, t0: int, t1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``C (B, t1 - t0, s, s)`` and ``F (B, t1 - t0, a, s)`` of steps ``t0 .. t1 - 1``."""
        e = self.expansion
        n_x, n_u, n_z = self.sizes
        A, B = self.A[:, t0:t1], self.B[:, t0:t1]
        lx, lu = e.lx[:, t0:t1], e.lu[:, t0:t1]
        batch, n = A.shape[:2]
        a = n_z + 1
        size = a + n_u
        C = lx.new_zeros(batch, n, size, size)
        C[..., :n_x, :n_x] = e.lxx[:, t0:t1]
        C[..., :n_x, n_z] = lx
        C[..., n_z, :n_x] = lx
        C[..., a:, a:] = e.luu[:, t0:t1]
        C[..., a:, n_z] = lu
        C[..., n_z, a:] = lu
        if e.lux is not None:
            C[..., a:, :n_x] = e.lux[:, t0:t1]
            C[..., :n_x, a:] = e.lux[:, t0:t1].mT
        F = A.new_zeros(batch, n, a, size)
        F[..., :n_x, :n_x] = A
        F[..., :n_x, a:] = B
        F[..., n_z, n_z] = 1.0
        if self.drift is not None:
            F[..., :n_x, n_z] = self.drift[:, t0:t1]
        if self.augmented:
            C[..., a:, n_x:n_z] = e.luu_prev[:, t0:t1]
            C[..., n_x:n_z, a:] = e.luu_prev[:, t0:t1].mT
            F[..., n_x:n_z, a:] = torch.eye(n_u, dtype=A.dtype, device=A.device)
        return C, F


def stage_matrices(expansion: CostExpansion, A: torch.Tensor, B: torch.Tensor,
                   drift: torch.Tensor | None = None) -> StageMatrices:
    """Homogeneous stage matrices (assembled on demand, see :class:`StageMatrices`).

    Args:
        expansion: cost derivatives along the trajectory (see :class:`CostExpansion`).
        A: ``(B, T, n_x, n_x)`` dynamics Jacobians w.r.t. the state.
        B: ``(B, T, n_x, n_u)`` w.r.t. the control.
        drift: optional ``(B, T, n_x)`` affine term of the (delta) dynamics.
    """
    return StageMatrices(expansion, A, B, drift)


def _policy_unbounded(Quu: torch.Tensor, Qua: torch.Tensor) -> torch.Tensor:
    if Quu.shape[-1] == 1:
        return -Qua / Quu
    L, _ = torch.linalg.cholesky_ex(Quu)
    return -torch.cholesky_solve(Qua, L)


def _policy_box(Quu: torch.Tensor, Qua: torch.Tensor, lower: torch.Tensor,
                upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box-constrained policy about ``k = 0`` (feasible nominal): ``G (B, m, a)``, clamped ``(B, m)``.

    The feedforward QP ``min 0.5 k^T Q_uu k + q_u^T k`` over ``lower <= k <= upper`` by active-set
    iterations (:func:`~.boxqp.active_set`) that carry the feedback columns along, starting from
    the nominal controls that sit on a bound with an outward gradient; projected Newton for a set
    that did not settle.
    """
    qu = Qua[..., -1]
    if Quu.shape[-1] == 1:
        G = -Qua / Quu
        k = G[..., -1]
        k_box = torch.maximum(torch.minimum(k, upper), lower)
        clamped = k_box != k
        G = torch.cat((G[..., :-1] * (~clamped).unsqueeze(-1), k_box.unsqueeze(-1)), -1)
        return G, clamped
    G, clamped, rows, _ = active_set(Quu, Qua, lower, upper, (lower >= 0) & (qu > 0), (upper <= 0) & (qu < 0),
                                     Quu.shape[-1] + 1)
    if rows is not None:
        H, R = Quu[rows], Qua[rows]
        k, sub_clamped = solve_box_qp(H, R[..., -1], lower[rows], upper[rows], G[rows, :, -1])
        G = G.index_copy(0, rows, solve_on_set(H, R, sub_clamped, k))
        clamped = clamped.index_copy(0, rows, sub_clamped)
    return G, clamped


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
    P = stages.terminal()
    batch, T, _, n_u = stages.B.shape
    a = P.shape[-1]
    lows = highs = fixed = None
    if lower is not None:
        lows, highs = lower.unbind(1), upper.unbind(1)
    if clamped is not None:
        fixed = clamped.unbind(1)
    reg = None
    if regularization is not None:
        reg = regularization.view(-1, 1, 1) * torch.eye(n_u, dtype=P.dtype, device=P.device)
    gains = P.new_empty(batch, T, n_u, a)
    sets = torch.zeros(batch, T, n_u, dtype=torch.bool, device=P.device)
    eye = torch.eye(a, dtype=P.dtype, device=P.device).expand(batch, a, a)
    for t0, C, F in stages.chunks(reverse=True):
        Cs, Fs = C.unbind(1), F.unbind(1)
        for t in range(t0 + len(Cs) - 1, t0 - 1, -1):
            Ft = Fs[t - t0]
            Q = torch.baddbmm(Cs[t - t0], Ft.mT @ P, Ft)
            Qua, Quu = Q[:, a:, :a], Q[:, a:, a:]
            Quu_reg = Quu if reg is None else Quu + reg
            if fixed is not None:
                G = solve_on_set(Quu_reg, Qua, fixed[t], torch.zeros_like(Qua[..., -1]))
            elif lows is None:
                G = _policy_unbounded(Quu_reg, Qua)
            else:
                G, sets[:, t] = _policy_box(Quu_reg, Qua, lows[t], highs[t])
            V = torch.cat((eye, G), 1)                             # P = [I; G]^T Q [I; G]
            P = V.mT @ (Q @ V)
            gains[:, t] = G
        del C, F, Cs, Fs, Ft                    # before the next block is assembled
    if fixed is not None:
        sets = clamped
    return gains, sets, -0.5 * P[:, -1, -1]
