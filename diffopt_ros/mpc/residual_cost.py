"""Any ``nn.Module`` residual as a trajectory cost ``0.5 |r|^2`` (Gauss-Newton expansion)."""
from __future__ import annotations

import torch
from torch import nn

from .costs import Cost, CostExpansion


class ResidualCost(Cost):
    """Any ``nn.Module`` residual as a cost: ``J = 0.5 sum_{t<T} |r(x_t, u_t)|^2 + 0.5 |r_T(x_T)|^2``.

    The solver uses the Gauss-Newton expansion (``J^T J``, ``J^T r``; Jacobians by ``vmap(jacrev)``);
    ``exact=True`` (the implicit backward) adds the residual curvature ``sum_i r_i d2 r_i``.

    Args:
        residual: ``(x (..., n_x), u (..., n_u), target (..., n_x) or None) -> (..., n_r)``.
        terminal: ``(x (..., n_x), target (..., n_x) or None) -> (..., n_f)``, or ``None``.
    """

    def __init__(self, residual: nn.Module, terminal: nn.Module | None = None):
        super().__init__()
        self.residual, self.terminal = residual, terminal

    @staticmethod
    def _targets(x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor | None:
        """The target per time step ``(B, T+1, n_x)`` (a goal is repeated), or ``None``."""
        if target is None:
            return None
        return target.unsqueeze(-2).expand_as(x) if target.ndim < x.ndim else target

    def total(self, x, u, target=None, u_prev=None):
        ref = self._targets(x, target)
        r = self.residual(x[:, :-1], u, None if ref is None else ref[:, :-1])
        J = 0.5 * r.square().sum((-1, -2))
        if self.terminal is not None:
            J = J + 0.5 * self.terminal(x[:, -1], None if ref is None else ref[:, -1]).square().sum(-1)
        return J

    def _expand_one(self, fn, args: list[torch.Tensor], target: torch.Tensor | None, exact: bool):
        """Per-sample Gauss-Newton blocks of ``0.5 |fn(*args, target)|^2`` over flattened rows."""
        n_args = len(args)

        def res(*a):
            return fn(*a[:n_args], a[n_args] if target is not None else None)

        inputs = [*args] + ([target] if target is not None else [])
        r = res(*inputs)
        jac = torch.func.vmap(torch.func.jacrev(res, argnums=tuple(range(n_args))))(*inputs)
        grads = [(j.mT @ r.unsqueeze(-1)).squeeze(-1) for j in jac]
        hess = [[ji.mT @ jk for jk in jac] for ji in jac]
        if exact:
            def weighted(*a):
                return (res(*a[:-1]) * a[-1]).sum()
            curv = torch.func.vmap(torch.func.hessian(weighted, argnums=tuple(range(n_args))))(*inputs, r)
            hess = [[hess[i][k] + curv[i][k] for k in range(n_args)] for i in range(n_args)]
        return grads, hess

    def expand(self, x, u, target=None, u_prev=None, exact=False):
        batch, T, n_x, n_u = x.shape[0], u.shape[1], x.shape[-1], u.shape[-1]
        ref = self._targets(x, target)
        ref_run = None if ref is None else ref[:, :-1].reshape(-1, n_x)
        (gx, gu), ((hxx, hxu), (hux, huu)) = self._expand_one(
            self.residual, [x[:, :-1].reshape(-1, n_x), u.reshape(-1, n_u)], ref_run, exact)
        lxx = hxx.view(batch, T, n_x, n_x)
        lx = gx.view(batch, T, n_x)
        if self.terminal is not None:
            (gT,), ((hT,),) = self._expand_one(self.terminal, [x[:, -1]], None if ref is None else ref[:, -1],
                                               exact)
        else:
            gT, hT = x.new_zeros(batch, n_x), x.new_zeros(batch, n_x, n_x)
        return CostExpansion(torch.cat((lxx, hT.unsqueeze(1)), 1), torch.cat((lx, gT.unsqueeze(1)), 1),
                             huu.view(batch, T, n_u, n_u), gu.view(batch, T, n_u),
                             hux.view(batch, T, n_u, n_x))
