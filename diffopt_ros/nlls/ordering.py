"""Fill-reducing elimination order for the re-eliminated top of a Bayes tree.

The graph: the top's variables, an edge per factor between two of them, and a clique on the
separator of each orphan (a subtree below the top, which eliminated first fills its
separator). :func:`elimination_order` is greedy minimum degree with the variables of
``constrained`` eliminated after all others, in that order (iSAM2 places the variables of
new factors last, as CCOLAMD's constraint groups do); it returns each variable's separator
(its neighbours when eliminated) with the order.

SuperLU's multiple minimum degree (``scipy.sparse.linalg.splu``, ``MMD_AT_PLUS_A``) on the
unconstrained part is not used for large tops: on the first 5,000 poses of w10000 it ordered
tops of 80 or more variables no faster than this, and its trees re-eliminated 39 % more
variables in later updates.
"""
from __future__ import annotations

import heapq

import numpy as np

from diffopt_ros.nlls.steps import Steps, drain

# stepped graph building and heap skipping (elimination_steps), in units of about 10 µs: a
# batch of edges added, or of outdated heap entries popped
_EDGES_PER_STEP, _EDGE_STEP_UNITS = 1024, 32
_STALE_PER_STEP, _STALE_STEP_UNITS = 64, 2


def elimination_order(variables: list[int], edges, separators: list[tuple[int, ...]],
                      constrained: list[int]) -> tuple[list[int], dict[int, set[int]]]:
    """Order ``variables`` (ids) on the graph of ``edges`` (pairs of ids: an ``(E, 2)`` array or
    a list) and cliques on ``separators`` (tuples of ids), the variables of ``constrained``
    last; returns the order and each variable's separator (a set of ids)."""
    return drain(elimination_steps(variables, edges, separators, constrained))


def elimination_steps(variables: list[int], edges, separators: list[tuple[int, ...]],
                      constrained: list[int], stepped: bool = False) -> Steps:
    """:func:`elimination_order` as steps (:mod:`~diffopt_ros.nlls.steps`), if ``stepped`` one
    per variable eliminated (else one in all): a variable with ``k`` neighbours is ``1 + k^2 /
    256`` units (joining its neighbours takes ``k^2`` set operations)."""
    late = set(constrained)
    adjacent: dict[int, set[int]] = {v: set() for v in variables}
    for i, (a, b) in enumerate(edges.tolist() if isinstance(edges, np.ndarray) else edges):
        adjacent[a].add(b)
        adjacent[b].add(a)
        if stepped and i % _EDGES_PER_STEP == _EDGES_PER_STEP - 1:
            yield _EDGE_STEP_UNITS
    for separator in separators:
        for a in separator:
            adjacent[a].update(separator)
        if stepped:
            yield 1 + len(separator) ** 2 // 256
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

    stale = 0
    while heap:
        degree, v = heapq.heappop(heap)
        if v in adjacent and degree == len(adjacent[v]):
            eliminate(v)
            if stepped:
                yield 1 + degree * degree // 256
        elif stepped:         # an outdated entry (a degree that grew since): popped, skipped
            stale += 1
            if stale % _STALE_PER_STEP == 0:
                yield _STALE_STEP_UNITS
    for v in constrained:
        degree = len(adjacent[v])
        eliminate(v)
        if stepped:
            yield 1 + degree * degree // 256
    return order, neighbours_of
