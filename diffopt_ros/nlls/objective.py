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

# factors with residuals of up to this many entries are linearized with the edges last; wider ones
# (6 for SE(3)) with batched matrix products, faster there (bench/linearize_layout.py: w10000's
# SE(2) edges 21 against 37 ms per linearization; sphere2500's SE(3) edges 10.3 against 9.0 ms)
EDGES_LAST_MAX_DIM = 3


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
        # per factor, whether its linearization runs with the edges last (see linearize), and
        # the global tangent index of each entry of its gradient terms in that layout
        self.edges_last = [f.dim <= EDGES_LAST_MAX_DIM for f in self.factors]
        self._gradient_index = [(idx.T if last else idx).reshape(-1)
                                for idx, last in zip(self.dof_index, self.edges_last)]
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

    def sqrt_informations(self) -> list[torch.Tensor | None]:
        """Per factor, ``S`` with ``S^T S = Lambda`` (computed once per solve), in the factor's
        layout (:attr:`edges_last`): ``(..., E, m, m)``, or ``(..., m, m, E)`` (a copy), or None."""
        out = []
        for f, last in zip(self.factors, self.edges_last):
            S = f.sqrt_information()
            if S is not None and last:
                S = _edges_last(S).contiguous() if S.dim() > 2 else S[..., None]
            out.append(S)
        return out

    def _whitened_residuals(self, k: int, values: Sequence[torch.Tensor], S, jacobians: bool):
        """Factor ``k``'s whitened residuals and stacked Jacobian ``(B, m, E)``, ``(B, m, D, E)``
        (edges last) or ``(B, E, m)``, ``(B, E, m, D)`` (edges first); the Jacobian is None
        without ``jacobians``."""
        r, Js = self.factors[k].residual_and_jacobians(self._slot_values(k, values), jacobians=jacobians)
        last = self.edges_last[k]
        J = None
        if jacobians:  # the slots side by side
            if last:  # one copy into the layout
                views = [_edges_last(Jk) for Jk in Js]
                J = (torch.cat(views, 2) if len(views) > 1 else views[0]).contiguous()
            else:
                J = torch.cat(Js, -1) if len(Js) > 1 else Js[0]
        if last:
            r = r.mT
        if S is None:
            return r, J
        if last:
            return (_left_multiply(S, r.unsqueeze(2)).squeeze(2),
                    None if J is None else _left_multiply(S, J))
        return (S @ r.unsqueeze(-1)).squeeze(-1), None if J is None else S @ J  # one product for all slots

    def error(self, values: Sequence[torch.Tensor], sqrt_infos=None) -> torch.Tensor:
        """Objective value ``(B,)``: ``sum rho(||r||^2_Sigma)`` (``0.5 sum ||r||^2_Sigma`` if not robust)."""
        sqrt_infos = self.sqrt_informations() if sqrt_infos is None else sqrt_infos
        total = 0
        for k, (f, S) in enumerate(zip(self.factors, sqrt_infos)):
            r, _ = self._whitened_residuals(k, values, S, jacobians=False)
            s = (r * r).sum(-2 if self.edges_last[k] else -1)
            total = total + (0.5 * s if f.loss is None else f.loss.rho(s)).sum(-1)
        return total

    def linearize(self, values: Sequence[torch.Tensor], sqrt_infos=None,
                  blocks: bool = True) -> Linearization:
        """Error, gradient and (optionally) Gauss-Newton blocks at ``values``.

        Factors with residuals of up to ``EDGES_LAST_MAX_DIM`` entries are whitened and reduced
        to ``J^T W r`` and ``J^T W J`` with the edges last (``(B, m, D, E)``): a few element-wise
        products over all edges at once, where torch's batched products of tiny matrices cost
        about 100 ns per matrix on the CPU. Their blocks are ``(B, E, D, D)`` views of
        ``(B, D, D, E)`` tensors, the order of :meth:`hessian_entries`.
        """
        sqrt_infos = self.sqrt_informations() if sqrt_infos is None else sqrt_infos
        B = values[0].shape[0]
        error = 0
        grad = torch.zeros(B, self.dim, dtype=values[0].dtype, device=values[0].device)
        out_blocks = []
        for k, (f, S) in enumerate(zip(self.factors, sqrt_infos)):
            r, J = self._whitened_residuals(k, values, S, jacobians=True)
            r, J = r.expand(B, *r.shape[1:]), J.expand(B, *J.shape[1:])
            last = self.edges_last[k]
            s = (r * r).sum(1 if last else -1)  # (B, E)
            error = error + (0.5 * s if f.loss is None else f.loss.rho(s)).sum(-1)
            w = None if f.loss is None else f.loss.weight(s)
            if last:
                Jw = J if w is None else J * w[:, None, None, :]
                g = _gram(Jw, r.unsqueeze(2))[:, :, 0]  # (B, D, E)
                H = _gram(Jw, J).permute(0, 3, 1, 2) if blocks else None
            else:
                Jw = J if w is None else J * w[..., None, None]
                g = (Jw.mT @ r.unsqueeze(-1)).squeeze(-1)  # (B, E, D)
                H = Jw.mT @ J if blocks else None
            grad = grad.index_add(1, self._gradient_index[k], g.reshape(B, -1))
            if blocks:
                out_blocks.append(H)
        return Linearization(error, grad, out_blocks)

    def tensors(self) -> list[torch.Tensor]:
        """Differentiable data of all factors that require grad (measurements, weights, scales)."""
        out = []
        for f in self.factors:
            out.extend(t for t in f.tensors() if isinstance(t, torch.Tensor) and t.requires_grad)
        return out

    def hessian_entries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Global (row, col) of every entry of every factor's Gauss-Newton block, flattened in the
        order of :func:`block_values`: ``(D, D, E)`` per factor with the edges last, else
        ``(E, D, D)``."""
        rows, cols = [], []
        for idx, last in zip(self.dof_index, self.edges_last):
            E, D = idx.shape
            r, c = idx[:, :, None].expand(E, D, D), idx[:, None, :].expand(E, D, D)
            if last:
                r, c = r.permute(1, 2, 0), c.permute(1, 2, 0)
            rows.append(r.reshape(-1))
            cols.append(c.reshape(-1))
        return torch.cat(rows), torch.cat(cols)


def block_values(blocks: list[torch.Tensor], edges_last: list[bool]) -> torch.Tensor:
    """The values ``(B, total)`` of per-factor Gauss-Newton blocks ``(B, E, D, D)``, in the
    order of :meth:`Objective.hessian_entries` (``edges_last``: :attr:`Objective.edges_last`):
    no copy but the concatenation for blocks of the layout that ``linearize`` makes."""
    B = blocks[0].shape[0]
    return torch.cat([(b.permute(0, 2, 3, 1) if last else b).reshape(B, -1)
                      for b, last in zip(blocks, edges_last)], 1)


def _edges_last(t: torch.Tensor) -> torch.Tensor:
    """``(B, E, m, d)`` -> ``(B, m, d, E)`` (a view)."""
    return t.permute(*range(t.dim() - 3), -2, -1, -3)


def _left_multiply(S: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``S X`` per edge, edges last: ``S (..., m, m, E or 1)``, ``X (B, m, d, E)`` -> ``(B, m, d, E)``."""
    return _sum_of_products([(S[..., :, k, None, :], X[:, None, k]) for k in range(S.shape[-2])])


def _gram(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``A^T X`` per edge, edges last: ``A (B, m, a, E)``, ``X (B, m, d, E)`` -> ``(B, a, d, E)``."""
    return _sum_of_products([(A[:, k, :, None], X[:, k, None]) for k in range(A.shape[1])])


def _sum_of_products(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``sum a * b`` over broadcasting pairs, accumulated in place into zeros of the broadcast
    shape (differentiable): four times faster on the CPU than starting from ``a * b`` of two
    inputs broadcast along different dimensions, whose loop order torch picks badly. (Not
    ``torch.broadcast_shapes``: its first call imports sympy, 0.4 s.)"""
    a, b = pairs[0]
    shapes = [t.shape for pair in pairs for t in pair]
    rank = max(len(s) for s in shapes)
    shape = [next((d for d in sizes if d != 1), 1)
             for sizes in zip(*((1,) * (rank - len(s)) + tuple(s) for s in shapes))]
    out = torch.zeros(shape, dtype=torch.result_type(a, b), device=a.device)
    for a, b in pairs:
        out.addcmul_(a, b)
    return out
