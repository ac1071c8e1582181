"""The Bayes tree of an incrementally solved graph: cliques, partial re-elimination, solve.

The Gauss-Newton system ``H delta = eta`` of the graph is kept eliminated as a tree of
*cliques* (iSAM2's Bayes tree: Kaess et al., "iSAM2: Incremental smoothing and mapping using
the Bayes tree", IJRR 2012). A clique holds frontal variables ``F`` (eliminated together, in
order) and a separator ``S`` (variables eliminated later that share a factor or fill with
them), the Gaussian conditional ``delta_F = mean - gain delta_S`` and the *update* it passed
on to its parent: the Schur complement of its whole subtree on ``S`` (information ``(|S| dof,
|S| dof)`` and vector), which stands for that subtree when the clique above is re-eliminated.
A clique's parent is the clique of the first-eliminated variable of its separator.

:meth:`BayesTree.update` re-eliminates the cliques of the changed variables and all their
ancestors (the top): their variables are ordered afresh by greedy minimum degree on the graph
of their factors and of the separators of the subtrees below (the orphans, left untouched),
with the variables of the new factors last (so that the next update touches the top again
and a loop closure does not refactor the past); variables whose separator is that of the
next one plus it are merged into one clique (fundamental supernodes). Each clique is then
eliminated in one dense step (its factors and its children's updates scattered into one
``((|F| + |S|) dof)^2`` matrix, a Cholesky factorization of the frontal block, the Schur
complement), so the per-variable Python work is only the symbolic ordering.
:meth:`BayesTree.solve` back-substitutes from the new top down and continues into a subtree
only while its solution changes by more than the wildfire threshold (iSAM2's partial
back-substitution). Float64 numpy on the CPU.
"""
from __future__ import annotations

import heapq
from itertools import chain

import numpy as np
from scipy.linalg import lapack

from diffopt_ros.nlls.factor_store import FactorStore


class Clique:
    """Frontal variables ``frontals (F,)`` (in elimination order), ``separator (S,)``, the
    conditional ``gain (F dof, S dof)``, ``mean (F dof,)``, the update on the separator
    (``information (S dof, S dof)``, ``vector (S dof,)``; None at a root) and, at a root, the
    upper Cholesky factor of its frontal information ``cholesky (F dof, F dof)``."""

    __slots__ = ('frontals', 'separator', 'parent', 'children', 'gain', 'mean', 'information',
                 'vector', 'cholesky')

    def __init__(self, frontals: list[int]):
        self.frontals = frontals
        self.separator = np.zeros(0, dtype=np.int64)
        self.parent: Clique | None = None
        self.children: list[Clique] = []
        self.gain = self.mean = self.information = self.vector = self.cholesky = None


class BayesTree:
    """The cliques of variables ``0..N-1`` with ``dof`` each; variables not eliminated yet
    belong to no clique."""

    def __init__(self, dof: int):
        self.dof = dof
        self.clique_of: list[Clique | None] = []
        self._slot = np.full(1, -1, dtype=np.int64)      # scratch: variable -> local index

    def add_variable(self) -> None:
        self.clique_of.append(None)
        if len(self._slot) <= len(self.clique_of):
            self._slot = np.full(2 * len(self._slot) + 1, -1, dtype=np.int64)

    # ------------------------------------------------------------------ re-elimination
    def update(self, changed: set[int], last: list[int], factors: FactorStore) -> list[Clique]:
        """Re-eliminate the cliques of ``changed`` and their ancestors, with the variables of
        ``last`` eliminated after all others (in that order); returns the new cliques, parents
        before children."""
        top: set[Clique] = set()
        variables = []
        for v in changed:
            clique = self.clique_of[v]
            if clique is None:
                variables.append(v)
            while clique is not None and clique not in top:
                top.add(clique)
                clique = clique.parent
        variables += [v for clique in top for v in clique.frontals]
        orphans = [child for clique in top for child in clique.children if child not in top]
        order, separators = self._order(variables, orphans, last, factors)
        rank = {v: k for k, v in enumerate(order)}
        cliques = self._cliques(order, separators, orphans, rank)
        self._factorize(cliques, order, factors)
        return cliques

    def _order(self, variables: list[int], orphans: list[Clique], last: list[int],
               factors: FactorStore) -> tuple[list[int], dict[int, set[int]]]:
        """Greedy minimum-degree elimination order of ``variables`` on the graph of their
        factors and the orphans' separators, the variables of ``last`` after all others;
        returns it and each variable's separator (its neighbours when eliminated)."""
        slot = self._slot
        slot[variables] = 0
        ids = np.fromiter(chain.from_iterable(factors.of_variable[v] for v in variables), dtype=np.int64)
        keys = factors.keys[np.unique(ids)]
        keys = keys[keys[:, 1] >= 0]
        keys = keys[(slot[keys[:, 0]] == 0) & (slot[keys[:, 1]] == 0)].tolist()
        slot[variables] = -1
        adjacent: dict[int, set[int]] = {v: set() for v in variables}
        for a, b in keys:
            adjacent[a].add(b)
            adjacent[b].add(a)
        for orphan in orphans:
            separator = orphan.separator.tolist()
            for a in separator:
                adjacent[a].update(separator)
        for v in variables:
            adjacent[v].discard(v)
        constrained = list(reversed(dict.fromkeys(v for v in reversed(last) if v in adjacent)))
        late = set(constrained)
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

    def _cliques(self, order: list[int], separators: dict[int, set[int]], orphans: list[Clique],
                 rank: dict[int, int]) -> list[Clique]:
        """Group ``order`` into cliques (a variable joins its parent's clique when its
        separator is the parent's plus the parent, and the parent is the clique's first
        frontal so far) and hang the orphans below them; parents before children."""
        cliques, clique_of = [], self.clique_of
        for v in reversed(order):
            separator = sorted(separators[v], key=rank.__getitem__)
            clique = None
            if separator:
                parent = separator[0]
                clique = clique_of[parent]
                if clique.frontals[-1] != parent or len(separator) != len(separators[parent]) + 1:
                    clique = None
            if clique is None:
                clique = Clique([])
                clique.separator = np.array(separator, dtype=np.int64)
                if separator:
                    clique.parent = clique_of[separator[0]]
                    clique.parent.children.append(clique)
                cliques.append(clique)
            clique.frontals.append(v)      # reversed: the last-eliminated first
            clique_of[v] = clique
        for clique in cliques:
            clique.frontals.reverse()
        for orphan in orphans:
            separator = orphan.separator
            first = min(separator.tolist(), key=rank.__getitem__)
            orphan.parent = clique_of[first]
            orphan.parent.children.append(orphan)
        return cliques

    def _factorize(self, cliques: list[Clique], order: list[int], factors: FactorStore) -> None:
        """Eliminate ``cliques`` children first: each assembles the factors whose
        first-eliminated variable is one of its frontals and its children's updates."""
        d, slot = self.dof, self._slot
        slot[order] = np.arange(len(order))
        ids = np.unique(np.fromiter(chain.from_iterable(factors.of_variable[v] for v in order),
                                    dtype=np.int64))
        keys = factors.keys[ids]
        rank = np.where(keys >= 0, slot[keys], len(order))
        inside = (rank[:, 0] >= 0) & ((keys[:, 1] < 0) | (rank[:, 1] >= 0))
        ids, keys, rank = ids[inside], keys[inside], rank[inside]
        first = keys[np.arange(len(keys)), np.argmin(rank, axis=1)]
        number = {id(clique): k for k, clique in enumerate(cliques)}
        owner = np.array([number[id(self.clique_of[v])] for v in order], dtype=np.int64)[slot[first]]
        slot[order] = -1
        sorting = np.argsort(owner, kind='stable')
        bounds = np.searchsorted(owner[sorting], np.arange(len(cliques) + 1))
        span = np.arange(d)
        for k in range(len(cliques) - 1, -1, -1):
            clique = cliques[k]
            own = ids[sorting[bounds[k]:bounds[k + 1]]]
            local = np.concatenate((clique.frontals, clique.separator))
            size = len(local)
            slot[local] = np.arange(size)
            slot[-1] = size                                  # a prior's missing key: a dummy slot
            width = (size + 1) * d
            rows = (slot[factors.keys[own]][:, :, None] * d + span).reshape(len(own), 2 * d)
            entries = [(rows[:, :, None] * width + rows[:, None, :]).ravel()]
            weights = [factors.hessian[own].ravel()]
            vectors, vector_weights = [rows.ravel()], [factors.eta[own].ravel()]
            for child in clique.children:
                index = (slot[child.separator][:, None] * d + span).ravel()
                entries.append((index[:, None] * width + index).ravel())
                weights.append(child.information.ravel())
                vectors.append(index)
                vector_weights.append(child.vector)
            slot[local] = -1
            slot[-1] = -1
            n = size * d
            M = np.bincount(np.concatenate(entries), np.concatenate(weights),
                            minlength=width * width).reshape(width, width)[:n, :n]
            e = np.bincount(np.concatenate(vectors), np.concatenate(vector_weights), minlength=width)[:n]
            _eliminate_clique(clique, M, e, len(clique.frontals) * d)

    # ------------------------------------------------------------------ solution
    def solve(self, cliques: list[Clique], delta: np.ndarray, threshold: float) -> int:
        """Back-substitute ``cliques`` (parents first) into ``delta (N, dof)``, then the
        subtrees below while their solution changes by more than ``threshold`` (0: all);
        returns the number of variables solved."""
        solved = 0
        for clique in cliques:
            delta[clique.frontals] = _conditional_mean(clique, delta)
            solved += len(clique.frontals)
        fresh = {id(clique) for clique in cliques}
        stack = [child for clique in cliques for child in clique.children if id(child) not in fresh]
        while stack:
            clique = stack.pop()
            new = _conditional_mean(clique, delta)
            solved += len(clique.frontals)
            change = float(np.abs(new - delta[clique.frontals]).max())
            delta[clique.frontals] = new
            if change > threshold or threshold == 0:
                stack.extend(clique.children)
        return solved

    def marginal_covariance(self, key: int) -> np.ndarray:
        """``(dof, dof)`` marginal covariance of a frontal variable of a root clique."""
        clique = self.clique_of[key] if key < len(self.clique_of) else None
        if clique is None or clique.parent is not None:
            raise ValueError(f'incremental smoother: variable {key} is not in a root clique of the '
                             'Bayes tree (only the newest variables\' marginals are kept)')
        d = self.dof
        k = clique.frontals.index(key)
        unit = np.zeros((len(clique.frontals) * d, d))
        unit[k * d:(k + 1) * d] = np.eye(d)
        solution, _ = lapack.dpotrs(clique.cholesky, unit)
        block = solution[k * d:(k + 1) * d]
        return 0.5 * (block + block.T)


def _eliminate_clique(clique: Clique, M: np.ndarray, e: np.ndarray, frontal: int) -> None:
    """Eliminate the first ``frontal`` rows of ``M (n, n)``, ``e (n,)``: the conditional of the
    frontals on the separator and the update on the separator. A singular frontal block (a
    gauge freedom) gets a relative damping of 1e-9 of its trace."""
    own = M[:frontal, :frontal]
    cholesky, info = lapack.dpotrf(own, lower=0, clean=1)
    if info != 0:
        damping = 1e-9 * max(float(np.trace(own)) / len(own), 1.0)
        cholesky, info = lapack.dpotrf(own + damping * np.eye(len(own)), lower=0, clean=1)
        if info != 0:
            raise np.linalg.LinAlgError(f'incremental smoother: the information of variables '
                                        f'{clique.frontals} is not positive definite')
    cross = M[:frontal, frontal:]
    solution, _ = lapack.dpotrs(cholesky, np.concatenate((cross, e[:frontal, None]), axis=1))
    clique.gain, clique.mean = solution[:, :-1], solution[:, -1]
    if len(clique.separator):
        clique.information = M[frontal:, frontal:] - cross.T @ clique.gain
        clique.vector = e[frontal:] - cross.T @ clique.mean
        clique.cholesky = None
    else:
        clique.information = clique.vector = None
        clique.cholesky = cholesky


def _conditional_mean(clique: Clique, delta: np.ndarray) -> np.ndarray:
    """``(F, dof)``: ``mean - gain delta_S``."""
    mean = clique.mean
    if len(clique.separator):
        mean = mean - clique.gain @ delta[clique.separator].ravel()
    return mean.reshape(len(clique.frontals), -1)
