"""Fill-reducing elimination orders for the re-eliminated top of a Bayes tree.

The graph: the top's variables, an edge per factor between two of them, and a clique on the
separator of each orphan (a subtree below the top, which eliminated first fills its
separator). The variables of ``constrained`` are eliminated after all others, in that order
(iSAM2 places the variables of new factors last, as CCOLAMD's constraint groups do).

:func:`elimination_order` runs greedy minimum degree in Python on small tops, where it costs
less than a call into SuperLU, and SuperLU's multiple minimum degree (``scipy.sparse.linalg.
splu``, ``MMD_AT_PLUS_A``) on larger ones, where the Python fill updates grow with the square
of the separators; both return each variable's separator (its neighbours when eliminated).
"""
from __future__ import annotations

import heapq

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

# tops with at least this many unconstrained variables are ordered by SuperLU
SPARSE_ORDERING_SIZE = 80


def elimination_order(variables: list[int], edges: np.ndarray, separators: list[np.ndarray],
                      constrained: list[int]) -> tuple[list[int], dict[int, set[int]]]:
    """Order ``variables`` (ids) on the graph of ``edges (E, 2)`` (ids) and cliques on
    ``separators``, the variables of ``constrained`` last; returns the order and each
    variable's separator (a set of ids)."""
    late = set(constrained)
    if len(variables) - len(late) < SPARSE_ORDERING_SIZE:
        return _minimum_degree(variables, edges, separators, constrained, late)
    free = np.array([v for v in variables if v not in late], dtype=np.int64)
    order = _superlu_order(free, edges, separators) + constrained
    return order, _symbolic(order, edges, separators)


def _minimum_degree(variables, edges, separators, constrained, late):
    adjacent: dict[int, set[int]] = {v: set() for v in variables}
    for a, b in edges.tolist():
        adjacent[a].add(b)
        adjacent[b].add(a)
    for separator in separators:
        separator = separator.tolist()
        for a in separator:
            adjacent[a].update(separator)
    for v in variables:
        adjacent[v].discard(v)
    heap = [(len(adjacent[v]), v) for v in variables if v not in late]
    heapq.heapify(heap)
    order, neighbours_of = [], {}

    def eliminate(v):
        order.append(v)
        neighbours = neighbours_of[v] = adjacent.pop(v)
        for a in neighbours:     # eliminating v joins its neighbours into a clique
            adjacent_a = adjacent[a]
            adjacent_a.update(neighbours)
            adjacent_a.discard(a)
            adjacent_a.discard(v)
            if a not in late:
                heapq.heappush(heap, (len(adjacent_a), a))

    while heap:
        degree, v = heapq.heappop(heap)
        if v in adjacent and degree == len(adjacent[v]):
            eliminate(v)
    for v in constrained:
        eliminate(v)
    return order, neighbours_of


def _superlu_order(free: np.ndarray, edges: np.ndarray, separators: list[np.ndarray]) -> list[int]:
    """SuperLU's minimum degree order of the variables ``free`` (sorted ids) on the graph
    restricted to them (a diagonally dominant matrix of that pattern is factorized without
    pivoting; only its column order is used)."""
    n = len(free)
    rows, cols = [edges[:, 0]], [edges[:, 1]]
    for separator in separators:
        rows.append(np.repeat(separator, len(separator)))
        cols.append(np.tile(separator, len(separator)))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    i, j = np.searchsorted(free, rows), np.searchsorted(free, cols)
    inside = (i < n) & (j < n)
    inside[inside] &= (free[i[inside]] == rows[inside]) & (free[j[inside]] == cols[inside])
    i, j = i[inside], j[inside]
    pattern = scipy.sparse.coo_matrix((np.ones(2 * len(i)), (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsc()
    pattern.data[:] = 1.0
    matrix = (pattern + scipy.sparse.identity(n, format='csc') * (n + 1)).tocsc()
    lu = scipy.sparse.linalg.splu(matrix, permc_spec='MMD_AT_PLUS_A', diag_pivot_thresh=0.0,
                                  options=dict(SymmetricMode=True))
    return free[np.argsort(lu.perm_c)].tolist()


def _symbolic(order: list[int], edges: np.ndarray, separators: list[np.ndarray]) -> dict[int, set[int]]:
    """Each variable's separator under ``order``: its later neighbours and its children's
    separators (an orphan is a child of the first-eliminated variable of its separator)."""
    rank = {v: k for k, v in enumerate(order)}
    later: dict[int, list[int]] = {v: [] for v in order}
    for a, b in edges.tolist():
        if rank[a] < rank[b]:
            later[a].append(b)
        else:
            later[b].append(a)
    pending: dict[int, set[int]] = {v: set() for v in order}
    for separator in separators:
        separator = separator.tolist()
        pending[min(separator, key=rank.__getitem__)].update(separator)
    result = {}
    for v in order:
        separator = pending.pop(v)
        separator.discard(v)
        separator.update(later[v])
        result[v] = separator
        if separator:
            pending[min(separator, key=rank.__getitem__)].update(separator)
    return result
