"""The objective: a set of vectorized factors over variables, its error and its linearization.

The tangent space of all variables is stacked into one vector of size ``n`` (variables in the
order they first appear in the factors, elements in index order, tangent coordinates last).
Each factor's edges map to global tangent indices ``(E, D)`` (D = sum of its slots' dofs), so
the Jacobian, gradient and Gauss-Newton blocks of all edges of a factor are computed with a
few batched tensor operations and scattered with one ``index_add_``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from diffopt_ros.nlls.factors import Factor
from diffopt_ros.nlls.variables import Variable


@dataclass
class Linearization:
    """Whitened, robust-reweighted linearization at one point, for all ``B`` problems.

    Attributes:
        error: ``(B,)`` objective value ``sum rho(||r||^2_Sigma)``.
        gradient: ``(B, n)`` ``J^T W r`` (the gradient of the error in the tangent space).
        blocks: per factor, Gauss-Newton blocks ``J^T W J`` ``(B, E, D, D)``.
    """

    error: torch.Tensor
    gradient: torch.Tensor
    blocks: list[torch.Tensor]


class Objective:
    """Sum of factors. Args: factors (any order; their variables are collected automatically)."""

    def __init__(self, factors: Sequence[Factor]):
        if not factors:
            raise ValueError('an objective needs at least one factor')
        self.factors = list(factors)
        self.variables: list[Variable] = []
        for f in self.factors:
            for v in f.variables:
                if not any(v is u for u in self.variables):
                    self.variables.append(v)
        self.offsets = []
        n = 0
        for v in self.variables:
            self.offsets.append(n)
            n += v.num * v.dof
        self.dim = n
        ref = self.variables[0].value
        self.dtype, self.device = ref.dtype, ref.device
        self.dof_index = [self._dof_index(f) for f in self.factors]
        # per factor and slot: (variable position, element indices on the objective's device)
        self._slots = [[(self._var_pos(var), idx.to(self.device)) for var, idx in zip(f.variables, f.indices)]
                       for f in self.factors]
        # block structure: one block per element, numbered variable by variable
        self.block_base, nb = [], 0
        for v in self.variables:
            self.block_base.append(nb)
            nb += v.num
        self.num_blocks = nb
        self.block_dof = torch.cat([torch.full((v.num,), v.dof, dtype=torch.long) for v in self.variables])
        self.block_start = torch.cumsum(self.block_dof, 0) - self.block_dof
        self.block_index = [torch.stack([self.block_base[self._var_pos(var)] + idx.cpu() for var, idx
                                         in zip(f.variables, f.indices)], 1) for f in self.factors]

    def _var_pos(self, var: Variable) -> int:
        return next(k for k, u in enumerate(self.variables) if u is var)

    def _dof_index(self, f: Factor) -> torch.Tensor:
        cols = []
        for var, idx in zip(f.variables, f.indices):
            base = self.offsets[self._var_pos(var)] + idx.to(self.device) * var.dof
            cols.append(base[:, None] + torch.arange(var.dof, device=self.device))
        return torch.cat(cols, 1)  # (E, D)

    @property
    def batch_size(self) -> int:
        """Largest batch size of variables and factor data."""
        sizes = [v.value.shape[0] for v in self.variables] + [f.batch_size() for f in self.factors]
        return max(sizes)

    def initial_values(self) -> list[torch.Tensor]:
        """Variable values expanded to the batch size: ``(B, N, *shape)`` each."""
        B = self.batch_size
        return [v.value.expand(B, *v.value.shape[1:]) for v in self.variables]

    def retract(self, values: Sequence[torch.Tensor], delta: torch.Tensor) -> list[torch.Tensor]:
        """``x exp(delta)`` for every element; ``delta (B, n)``."""
        out = []
        B = delta.shape[0]
        for v, x, off in zip(self.variables, values, self.offsets):
            d = delta[:, off:off + v.num * v.dof].reshape(B, v.num, v.dof)
            out.append(v.group.retract(x, d))
        return out

    def _slot_values(self, k: int, values: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [values[pos][:, idx] for pos, idx in self._slots[k]]

    def _whiten(self, f: Factor, sqrt_info, r, Js):
        if sqrt_info is not None:
            r = (sqrt_info @ r.unsqueeze(-1)).squeeze(-1)
            Js = [sqrt_info @ J for J in Js]
        return r, Js

    def sqrt_informations(self) -> list[torch.Tensor | None]:
        """Per factor, ``S`` with ``S^T S = Lambda`` (computed once per solve)."""
        return [f.sqrt_information() for f in self.factors]

    def error(self, values: Sequence[torch.Tensor], sqrt_infos=None) -> torch.Tensor:
        """Objective value ``(B,)``: ``sum rho(||r||^2_Sigma)`` (``0.5 sum ||r||^2_Sigma`` if not robust)."""
        sqrt_infos = self.sqrt_informations() if sqrt_infos is None else sqrt_infos
        total = 0
        for k, (f, S) in enumerate(zip(self.factors, sqrt_infos)):
            r, _ = f.residual_and_jacobians(self._slot_values(k, values), jacobians=False)
            r, _ = self._whiten(f, S, r, [])
            s = (r * r).sum(-1)
            total = total + (0.5 * s if f.loss is None else f.loss.rho(s)).sum(-1)
        return total

    def linearize(self, values: Sequence[torch.Tensor], sqrt_infos=None,
                  blocks: bool = True) -> Linearization:
        """Error, gradient and (optionally) Gauss-Newton blocks at ``values``."""
        sqrt_infos = self.sqrt_informations() if sqrt_infos is None else sqrt_infos
        B = values[0].shape[0]
        error = 0
        grad = torch.zeros(B, self.dim, dtype=values[0].dtype, device=values[0].device)
        out_blocks = []
        for k, (f, S, cols) in enumerate(zip(self.factors, sqrt_infos, self.dof_index)):
            r, Js = f.residual_and_jacobians(self._slot_values(k, values), jacobians=True)
            J = torch.cat(Js, -1) if len(Js) > 1 else Js[0]  # (B, E, m, D)
            r, (J,) = self._whiten(f, S, r, [J])  # one product for all slots
            J = J.expand(B, *J.shape[1:])
            r = r.expand(B, *r.shape[1:])
            s = (r * r).sum(-1)
            if f.loss is None:
                error = error + 0.5 * s.sum(-1)
                Jw = J
            else:
                error = error + f.loss.rho(s).sum(-1)
                Jw = J * f.loss.weight(s)[..., None, None]
            g = (Jw.mT @ r.unsqueeze(-1)).squeeze(-1)  # (B, E, D)
            grad = grad.index_add(1, cols.reshape(-1), g.reshape(B, -1))
            if blocks:
                out_blocks.append(Jw.mT @ J)
        return Linearization(error, grad, out_blocks)

    def tensors(self) -> list[torch.Tensor]:
        """Differentiable data of all factors that require grad (measurements, weights, scales)."""
        out = []
        for f in self.factors:
            out.extend(t for t in f.tensors() if isinstance(t, torch.Tensor) and t.requires_grad)
        return out

    def hessian_entries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Global (row, col) of every entry of every factor's ``(E, D, D)`` block, flattened."""
        rows, cols = [], []
        for idx in self.dof_index:
            E, D = idx.shape
            rows.append(idx[:, :, None].expand(E, D, D).reshape(-1))
            cols.append(idx[:, None, :].expand(E, D, D).reshape(-1))
        return torch.cat(rows), torch.cat(cols)
