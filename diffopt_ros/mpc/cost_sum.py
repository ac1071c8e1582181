"""The sum of several trajectory costs, e.g. tracking plus obstacles, as one :class:`Cost`."""
from __future__ import annotations

from torch import nn

from .costs import Cost, CostExpansion


def _add(a, b):
    """Sum of two optional expansion blocks (``None`` counts as zero)."""
    if a is None:
        return b
    return a if b is None else a + b


class CostSum(Cost):
    """``J = sum_k J_k``: totals and expansions add (each term's ``exact`` flag is passed on).

    Args:
        costs: the terms (all see the same ``x (B, T+1, n_x)``, ``u (B, T, n_u)``, ``target``
            and ``u_prev``); their parameters stay learnable.
    """

    def __init__(self, *costs: Cost):
        super().__init__()
        if not costs:
            raise ValueError('CostSum: needs at least one cost')
        self.terms = nn.ModuleList(costs)
        self.quadratic = all(c.quadratic for c in costs)

    def total(self, x, u, target=None, u_prev=None):
        J = self.terms[0].total(x, u, target, u_prev)
        for cost in self.terms[1:]:
            J = J + cost.total(x, u, target, u_prev)
        return J

    def expand(self, x, u, target=None, u_prev=None, exact=False):
        out = None
        for cost in self.terms:
            e = cost.expand(x, u, target, u_prev, exact)
            out = e if out is None else CostExpansion(*(_add(a, b) for a, b in zip(out, e)))
        return out
