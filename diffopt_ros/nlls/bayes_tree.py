"""The Bayes tree of an incrementally solved graph: cliques, partial re-elimination, solve.

The Gauss-Newton system ``H delta = eta`` of the graph is kept eliminated as a tree of
*cliques* (iSAM2's Bayes tree: Kaess et al., "iSAM2: Incremental smoothing and mapping using
the Bayes tree", IJRR 2012). A clique holds frontal variables ``F`` (eliminated together, in
order) and a separator ``S`` (variables eliminated later that share a factor or fill with
them), the Gaussian conditional ``delta_F = mean - gain delta_S`` and the *update* it passed
on to its parent: the Schur complement of its whole subtree on ``S`` (information ``(|S| dof,
|S| dof)`` and vector), which stands for that subtree when the clique above is re-eliminated.
A clique's parent is the clique of the first-eliminated variable of its separator.

:meth:`BayesTree.update` re-eliminates the cliques of the variables of new factors and all
their ancestors (the top): their variables are ordered afresh by greedy minimum degree on the
graph of their factors and of the separators of the subtrees below (the orphans, left
untouched), with the variables of the new factors last (so that the next update touches the top
again and a loop closure does not refactor the past). Cliques below the top whose factors were
only relinearized keep their variables and separators (no factor was added there, so the
structure holds) and are factorized again in place, children first, before the top (up to
cliques left for a later update, when a wave of relinearization is split:
:meth:`BayesTree.first_below`); a chain
of them merges into fewer cliques as it goes (:meth:`BayesTree._merge_chains`). A variable
joins the clique of the next one when its separator is that one plus its separator
(fundamental supernodes), or nearly so: up to one structural zero in ``_RELAX_SHARE`` rows,
up to ``_RELAX_FRONTALS`` frontals, and whatever its zeros while the clique holds at most
``_RELAX_SMALL`` frontals (relaxed supernodes, :func:`_joins`). Each clique is
then eliminated in one dense step (its factors and its children's updates scattered into one
``((|F| + |S|) dof)^2`` matrix, a Cholesky factorization of the frontal block, the Schur
complement), so the per-variable Python work is only the symbolic ordering; a top of at most
``SMALL_TOP`` variables (an online update: the new pose and the root clique) is assembled
clique by clique with a few slices per factor and child instead, which
costs fewer numpy calls than the vectorized scatter.
:meth:`BayesTree.solve` back-substitutes from the new top down and continues into a subtree
only while its solution changes by more than the wildfire threshold (iSAM2's partial
back-substitution). :meth:`BayesTree.hang` eliminates a new variable whose factors all join
it to one other as a leaf below that one's clique, re-eliminating nothing (its update is zero:
see there); the marginals of such leaves follow from their parents' (:class:`Marginal`).
Float64 numpy on the CPU.
"""
from __future__ import annotations

from itertools import chain

import numpy as np
from scipy.linalg import lapack

from diffopt_ros.nlls.factor_store import FactorStore
from diffopt_ros.nlls.ordering import elimination_steps
from diffopt_ros.nlls.steps import Steps, drain

SMALL_TOP = 12     # tops of at most this many variables are assembled clique by clique
# leaves hung (hang) between updates that re-eliminate a top: a new pose hangs below the last,
# so an exploration without loop closures grows a chain of leaves, newest deepest, which the
# next update touching the newest re-eliminates whole (its ancestors). Bounding it bounds that
# update (bench/slam_explore.py, 4,000 poses: a link to the pose two before the newest 70-72 ms
# unbounded, 1.0-1.1 ms with 64; iSAM2 1.3 ms); every leaf is re-eliminated once either way, in
# one update per MAX_LEAVES new poses (1.4 ms at 64)
MAX_LEAVES = 64
# units of work (see eliminate_all) of factorizing one clique of s variables, f of them frontal:
# FACTOR_COST + s^2 / 64 + f s^2 / 1024, in the units of ordering one variable (~10 µs): a small
# clique's assembly and dense step took about 4 times as long as ordering one variable in a full
# elimination of the worst-case soak's graph; adding a child's update grows with s^2, the dense
# elimination with f s^2 (cliques of about 90 variables near the root took 5-9 ms each)
FACTOR_COST = 4
# a child's update of at least _RUN_ROWS rows is added with slices when its rows fall in few
# enough runs: one slice add of a few rows costs about as much as scattering _RUN_COST entries
# (measured on updates of 85 variables: 1 run 2.6x faster than the scatter, 4 runs 1.5x, 7 none)
_RUN_ROWS, _RUN_COST = 48, 1000
# block entries assembled at once (about 32 MiB) when many cliques are factorized in one go (a
# whole tree, or a long chain refactorized in place): the scatter's array is not allocated whole
_ASSEMBLY_ENTRIES = 1 << 22
# relaxed supernodes (_joins): a variable or clique joins its parent's clique when at most one in
# _RELAX_SHARE rows of its columns is a structural zero, up to _RELAX_FRONTALS frontals
_RELAX_SHARE, _RELAX_FRONTALS = 8, 16
# ... and whatever its zeros while the clique holds at most _RELAX_SMALL frontals (as CHOLMOD's
# relaxed amalgamation merges supernodes of a few columns): most cliques of a pose graph are a
# pose or two on a separator of two to four, and each costs a few numpy calls to factorize and
# to back-substitute whatever its size (w10000 stream with relinearize_max 500: 34 % fewer
# cliques solved, 28 % fewer factorized, total time -12-15 %; bench/RESULTS.md). Not in the
# top of a small update (SMALL_TOP): a larger root clique puts its variables into the next
# update's top again
_RELAX_SMALL = 4
_NO_VARIABLES = np.zeros(0, dtype=np.int64)     # the separator of a root (shared: read-only)
_NO_VARIABLES.flags.writeable = False


class Clique:
    """Frontal variables ``frontals (F,)`` (in elimination order), the separator
    ``separator_ids (S,)`` (a tuple, what the small-top path reads; ``separator``: the same as
    an int64 array, for the array code), the conditional ``gain (F dof, S dof)``, ``mean (F
    dof,)``, the update on the separator ``update (S dof, S dof + 1)`` (information and
    vector; None at a root) and, at a root,
    the upper Cholesky factor of its frontal information ``cholesky (F dof, F dof)``."""

    __slots__ = ('frontals', 'dofs', 'separator', 'separator_ids', 'separator_dofs', 'parent',
                 'children', 'into', 'gain', 'mean', 'update', 'cholesky')

    def __init__(self, frontals: list[int]):
        self.frontals = frontals
        self.dofs = None                 # rows of the frontals in delta (F dof; see _rows)
        self.separator_dofs = None       # rows of the separator (S dof)
        self.separator = _NO_VARIABLES
        self.separator_ids: tuple[int, ...] = ()
        self.parent: Clique | None = None
        self.children: list[Clique] = []
        self.into = None                 # rows of its separator in its parent's block (S dof)
        self.gain = self.mean = self.update = self.cholesky = None


class BayesTree:
    """The cliques of variables ``0..N-1`` with ``dof`` each; variables not eliminated yet
    belong to no clique."""

    def __init__(self, dof: int):
        self.dof = dof
        self.clique_of: list[Clique | None] = []
        self._slot = np.full(1, -1, dtype=np.int64)      # scratch: variable -> local index
        self._moved = bytearray()                         # scratch: solution changed (wildfire)
        self._scatter: dict[tuple, np.ndarray] = {}       # clique layout -> assembly targets
        # the leaves hung (hang) since the last update re-eliminated or refactorized cliques,
        # with the marginals of their variables (those of earlier ones no longer hold)
        self._leaves: dict[Clique, Marginal] = {}
        self._zero_update = np.zeros((dof, dof + 1))      # a leaf's update (read only)
        self._zero_update.flags.writeable = False
        self.size = 0    # sum over cliques of (frontals + separator)^2: the dense memory and work

    def __del__(self):
        """Unlink the cliques (parents and children point at each other): a dropped tree is
        then freed by reference counting, not left to a full garbage collection."""
        _unlink(clique for clique in self.clique_of if clique is not None)

    def add_variable(self) -> None:
        self.clique_of.append(None)
        if len(self._slot) <= len(self.clique_of):
            self._slot = np.full(2 * len(self._slot) + 1, -1, dtype=np.int64)

    # ------------------------------------------------------------------ re-elimination
    def update(self, changed: set[int], last: list[int], factors: FactorStore,
               relinearized: set[int] = frozenset(), waiting=frozenset()) -> list[Clique]:
        """Re-eliminate the cliques of ``changed`` (variables of new factors, and new
        variables) and their ancestors, with the variables of ``last`` eliminated after all
        others (in that order); the cliques of ``relinearized`` (variables whose factors were
        only relinearized: the graph's structure there is unchanged) and their ancestors below
        that top, up to (without) those in ``waiting`` (:meth:`first_below`), keep their
        variables and separators and are factorized again in place
        (no reordering; a clique may merge into its parent, :meth:`_merge_chains`). The
        replaced cliques are unlinked from each other (no reference cycle is left to the
        garbage collector). Returns the new and refactorized cliques,
        parents before children."""
        top: dict[Clique, None] = {}      # a dict: insertion order, so runs repeat exactly
        variables = []
        if self._leaves:
            self._leaves = {}
        for v in changed:
            clique = self.clique_of[v]
            if clique is None:
                variables.append(v)
            while clique is not None and clique not in top:
                top[clique] = None
                clique = clique.parent
        variables += [v for clique in top for v in clique.frontals]
        kept = self._merge_chains(self._below(top, relinearized, waiting))
        if kept:
            above = variables      # eliminated after the kept cliques: the top's variables, ...
            if waiting:      # ... and those of waiting cliques: all are in the kept separators
                frontal = {v for clique in kept for v in clique.frontals}
                above = list(set().union(*(clique.separator_ids for clique in kept)) - frontal)
            self._factorize(kept, factors, above=above)
        if not variables:
            return kept
        orphans = [child for clique in top for child in clique.children if child not in top]
        order, separators = self._order(variables, orphans, last, factors)
        cliques = self._cliques(order, separators, orphans)
        self.size -= sum(_size(clique) for clique in top)
        _unlink(top)      # replaced: unlinked, so reference counting frees them now
        if len(variables) <= SMALL_TOP:
            self._factorize_small(cliques, factors)
        else:
            self._factorize(cliques, factors)
        return cliques + kept

    def _below(self, top: dict[Clique, None], variables: set[int], waiting=frozenset()) -> list[Clique]:
        """The cliques of ``variables`` and their ancestors that are not in ``top``, up to
        (without) those in ``waiting``, parents before children."""
        kept: dict[Clique, None] = {}
        for v in variables:
            clique = self.clique_of[v]
            while clique is not None and clique not in top and clique not in kept and clique not in waiting:
                kept[clique] = None
                clique = clique.parent
        ordered = [clique for clique in kept if clique.parent not in kept]
        for clique in ordered:      # grows while read: each clique's children in the set follow
            ordered += [child for child in clique.children if child in kept]
        return ordered

    def _merge_chains(self, kept: list[Clique]) -> list[Clique]:
        """Merge each clique of ``kept`` (parents first) into its parent when that is kept too
        and :func:`_joins` allows it; returns the cliques left, parents first. Each update
        leaves the thin cliques of its top behind as orphans, and on a graph with wide
        separators (the worst-case soak's laps) they pile up into chains of one variable and
        a separator of dozens, each holding an update as large as its separator: a
        relinearized pose deep in the tree refactorized hundreds of them. Factorized again
        anyway, a chain becomes a few cliques, and stays so."""
        members, left = set(kept), []
        for clique in kept:
            parent = clique.parent
            if parent not in members or not _joins(len(clique.separator_ids), parent, len(clique.frontals),
                                                   _RELAX_SMALL):
                left.append(clique)
                continue
            self.size -= _size(clique) + _size(parent)
            parent.frontals = clique.frontals + parent.frontals
            parent.dofs = _rows(parent.frontals, self.dof)
            parent.children.remove(clique)
            parent.children += clique.children
            for child in parent.children:      # the parent's rows moved: placed again
                child.into = None
            for child in clique.children:
                child.parent = parent
            for v in clique.frontals:
                self.clique_of[v] = parent
            self.size += _size(parent)
            members.discard(clique)
            clique.parent, clique.children = None, []
        return left

    def first_below(self, variables, most: int) -> tuple[list[int], list[int], set[Clique]]:
        """Split ``variables`` into a first part and the rest: whole cliques, in an order where
        every clique comes after its descendants, up to ``most`` variables (or one clique's
        when it holds more); variables not eliminated yet join the first part (their update
        eliminates them anyway). Returns the first part, the rest, and the cliques that wait
        for the rest: the rest's cliques and their ancestors, none of which holds a variable
        of the first part. Refactorizing the first part's cliques and their ancestors up to
        (without) the waiting ones leaves each of those to be refactorized once, with the
        rest."""
        clique_of = self.clique_of
        own: dict[Clique, list[int]] = {}
        below: dict[Clique, list[Clique]] = {}
        seen, roots, first = set(), [], []
        for v in variables:
            clique = clique_of[v]
            if clique is None:      # not eliminated: its update eliminates it anyway
                first.append(v)
                continue
            if clique in own:
                own[clique].append(v)
                continue
            own[clique] = [v]
            while clique not in seen:
                seen.add(clique)
                parent = clique.parent
                if parent is None:
                    roots.append(clique)
                    break
                below.setdefault(parent, []).append(clique)
                clique = parent
        visit, stack = [], roots
        while stack:           # parents before children; reversed: descendants first
            clique = stack.pop()
            visit.append(clique)
            stack.extend(below.get(clique, ()))
        rest, later = [], []
        for clique in reversed(visit):
            ids = own.get(clique)
            if ids is None:
                continue
            if rest or (first and len(first) + len(ids) > most):
                rest.append(clique)
                later += ids
            else:
                first += ids
        waiting: set[Clique] = set()
        for clique in rest:
            while clique is not None and clique not in waiting:
                waiting.add(clique)
                clique = clique.parent
        return first, later, waiting

    def hangs_below(self, on: int) -> bool:
        """Whether :meth:`hang` may hang a leaf below variable ``on``: its marginal is at hand
        (``on`` in a root clique, or in a leaf hung since the last :meth:`update`), and fewer
        than ``MAX_LEAVES`` leaves were hung since then."""
        clique = self.clique_of[on]
        return (clique is not None and (clique.parent is None or clique in self._leaves)
                and len(self._leaves) < MAX_LEAVES)

    def is_tip(self, key: int) -> bool:
        """Whether variable ``key`` is a leaf hung since the last :meth:`update` with no leaf
        hung below it (:meth:`rehang` may factorize it again)."""
        clique = self.clique_of[key]
        return clique in self._leaves and not clique.children

    def hang(self, key: int, on: int, ids: list[int], factors: FactorStore) -> Clique:
        """Eliminate the new variable ``key``, all of whose factors ``ids`` (linearized) join it
        to the eliminated variable ``on`` (:meth:`hangs_below`), on its own: a leaf clique
        below ``on``'s clique (separator ``(on,)``). A cost of the relative pose ``x_on^-1
        x_key`` alone (between factors, Huber or not) is constant in ``x_on`` once ``x_key`` is
        minimized out, and so is its Gauss-Newton model (the Jacobians are ``A [-Ad(rel^-1),
        I]`` with one ``Ad``): the leaf's update on ``on`` is zero up to rounding, and no
        clique above it changes (iSAM2 would re-eliminate the top with it). Returns the leaf."""
        d, parent = self.dof, self.clique_of[on]
        leaf = Clique([key])
        leaf.separator_ids, leaf.separator = (on,), np.array((on,), dtype=np.int64)
        leaf.dofs, leaf.separator_dofs = _rows((key,), d), _rows((on,), d)
        leaf.parent = parent
        parent.children.append(leaf)
        self.clique_of[key] = leaf
        self.size += 4
        self._factorize_leaf(leaf, ids, factors)
        return leaf

    def rehang(self, key: int, factors: FactorStore) -> Clique:
        """Factorize the leaf of ``key`` (:meth:`is_tip`; its factors relinearized) again:
        still a cost of the relative pose to its separator alone. Returns the leaf."""
        leaf, pairs = self.clique_of[key], factors.pairs
        on = leaf.separator_ids[0]
        # its factors but those of a leaf hung below it in the same update (its own are to on)
        self._factorize_leaf(leaf, [f for f in factors.of_variable[key] if on in pairs[f]], factors)
        return leaf

    def _factorize_leaf(self, leaf: Clique, ids: list[int], factors: FactorStore) -> None:
        """Eliminate ``leaf`` (one frontal, separator ``(on,)``) from its factors ``ids`` and
        note it with its frontal's marginal (from that of ``on``)."""
        d, pairs = self.dof, factors.pairs
        key, on = leaf.frontals[0], leaf.separator_ids[0]
        first = [pairs[f][0] == key for f in ids]       # key is the factor's first variable
        cholesky, info = None, 1
        if all(first) or not any(first):     # one orientation: the sum of their systems
            system = factors.system
            system = system[ids[0]] if len(ids) == 1 else (
                system[ids[0]] + system[ids[1]] if len(ids) == 2 else system[ids].sum(axis=0))
            # key's rows [M e] (key's block, on's, the vector) solved by key's block
            rows, other = (slice(0, d), slice(d, 2 * d)) if first[0] else (slice(d, 2 * d), slice(0, d))
            cholesky, solution, info = lapack.dposv(system[rows, rows], system[rows])
        if info == 0:
            leaf.gain, leaf.mean = solution[:, other], solution[:, 2 * d]
            leaf.update = self._zero_update      # its update on ``on``: zero (see hang)
        else:         # both orientations, or a singular block (damped in _eliminate_clique)
            layout = (2, tuple((0, 1) if pairs[f][0] == key else (1, 0) for f in ids), ())
            cholesky = _eliminate_clique(leaf, self._assemble(layout, factors.system[ids].ravel()), d)
        parent = leaf.parent
        above = self._leaves.get(parent)
        if above is None:        # a root's
            above = Marginal(parent.cholesky, parent.frontals.index(on), d)
        self._leaves[leaf] = Marginal(cholesky, 0, d, leaf.gain, above)

    def eliminate_all(self, factors: FactorStore, last: list[int], chunk: int = 0) -> Steps:
        """Steps (:mod:`~diffopt_ros.nlls.steps`) that eliminate every variable of this tree,
        none of which is eliminated yet, ordered afresh with the variables of ``last`` after
        all others; each step orders or groups one variable, or factorizes cliques worth at
        least ``chunk`` units of work (about 10 µs each; see
        :func:`~diffopt_ros.nlls.ordering.elimination_steps`, :meth:`_cliques_steps` and
        ``FACTOR_COST``), and yields its units (``chunk`` 0: one step in all).
        Returns the cliques, parents first."""
        if any(clique is not None for clique in self.clique_of):
            raise ValueError('BayesTree.eliminate_all: the tree has eliminated variables already')
        variables = list(range(len(self.clique_of)))
        order, separators = yield from self._order_steps(variables, [], last, factors, chunk > 0)
        cliques = yield from self._cliques_steps(order, separators, [], chunk > 0)
        yield from self._factorize_steps(cliques, factors, (), chunk)
        return cliques

    def _order(self, variables: list[int], orphans: list[Clique], last: list[int],
               factors: FactorStore) -> tuple[list[int], dict[int, set[int]]]:
        """Elimination order of ``variables`` (:func:`~diffopt_ros.nlls.ordering.elimination_order`
        on the graph of their factors and the orphans' separators), the variables of ``last``
        after all others; returns it and each variable's separator."""
        return drain(self._order_steps(variables, orphans, last, factors))

    def _order_steps(self, variables: list[int], orphans: list[Clique], last: list[int],
                     factors: FactorStore, stepped: bool = False) -> Steps:
        """:meth:`_order` as steps (:func:`~diffopt_ros.nlls.ordering.elimination_steps`)."""
        inside = set(variables)
        if len(variables) <= SMALL_TOP:
            pairs = factors.pairs
            edges = [pairs[f] for f in {f for v in variables for f in factors.of_variable[v]}
                     if pairs[f][0] in inside and pairs[f][1] in inside]
        else:
            slot = self._slot
            slot[variables] = 0
            ids = np.fromiter(chain.from_iterable(factors.of_variable[v] for v in variables), dtype=np.int64)
            keys = factors.keys[np.unique(ids)]
            keys = keys[keys[:, 1] >= 0]
            edges = keys[(slot[keys[:, 0]] == 0) & (slot[keys[:, 1]] == 0)].tolist()
            slot[variables] = -1
        constrained = list(reversed(dict.fromkeys(v for v in reversed(last) if v in inside)))
        return (yield from elimination_steps(variables, edges, [orphan.separator_ids for orphan in orphans],
                                             constrained, stepped))

    def _cliques(self, order: list[int], separators: dict[int, set[int]],
                 orphans: list[Clique]) -> list[Clique]:
        """Group ``order`` into cliques (a variable joins its parent's clique when its
        separator is the parent's plus the parent, and the parent is the clique's first
        frontal so far) and hang the orphans below them; parents before children."""
        return drain(self._cliques_steps(order, separators, orphans))

    def _cliques_steps(self, order: list[int], separators: dict[int, set[int]],
                       orphans: list[Clique], stepped: bool = False) -> Steps:
        """:meth:`_cliques` as steps, if ``stepped`` one per variable in each of two passes:
        ``1 + s / 64`` units for a separator of ``s`` variables (sorting and searching it)."""
        rank = {v: k for k, v in enumerate(order)}.__getitem__
        cliques, clique_of = [], self.clique_of
        small = _RELAX_SMALL if len(order) > SMALL_TOP else 0
        for v in reversed(order):
            separator = separators[v]
            clique = None
            if separator:
                parent = min(separator, key=rank)
                clique = clique_of[parent]
                if clique.frontals[-1] != parent or not _joins(len(separator), clique, 1, small):
                    clique = None
            if clique is None:
                clique = Clique([])
                clique.separator_ids = tuple(sorted(separator, key=rank))
                if separator:
                    clique.parent = clique_of[parent]
                    clique.parent.children.append(clique)
                cliques.append(clique)
            clique.frontals.append(v)      # reversed: the last-eliminated first
            clique_of[v] = clique
            if stepped:
                yield 1 + len(separator) // 64
        for clique in cliques:
            clique.frontals.reverse()
            clique.dofs = _rows(clique.frontals, self.dof)
            if clique.separator_ids:
                clique.separator = np.array(clique.separator_ids, dtype=np.int64)
            clique.separator_dofs = _rows(clique.separator_ids, self.dof)
            self.size += _size(clique)
            if stepped:
                yield len(clique.frontals) + len(clique.separator_ids) // 64
        for orphan in orphans:
            orphan.parent = clique_of[min(orphan.separator_ids, key=rank)]
            orphan.into = None
            orphan.parent.children.append(orphan)
        return cliques

    def _factorize(self, cliques: list[Clique], factors: FactorStore, above: list[int] = ()) -> None:
        """Eliminate ``cliques``, children first. Each clique's frontal matrix is assembled from
        the factors whose first-eliminated variable is one of its frontals (one scatter for all
        cliques) and the updates of its children, orphans and new ones (one indexed add per
        child, just before the clique is eliminated). ``above``: variables eliminated after
        all of ``cliques`` (outside them); a factor between one of them and a frontal of
        ``cliques`` belongs to the frontal's clique."""
        drain(self._factorize_steps(cliques, factors, above))

    def _factorize_steps(self, cliques: list[Clique], factors: FactorStore, above: list[int] = (),
                         chunk: int = 0) -> Steps:
        """:meth:`_factorize` as steps of at least ``chunk`` units (``FACTOR_COST + s^2 / 64 +
        f s^2 / 1024`` per clique of ``s`` variables, ``f`` frontal; each step scatters the
        factors of its cliques, then eliminates them; the first three steps prepare the
        scatter of all factors)."""
        d, N = self.dof, len(self.clique_of) + 1
        local = [clique.frontals + list(clique.separator_ids) for clique in cliques]
        size = np.array([len(variables) for variables in local])
        # clique k's block: rows and columns of its variables (n = size * dof), the vector
        # column n, then a dummy slot for a prior's missing key
        width = size * d + 1 + d
        offset = np.concatenate(([0], np.cumsum(width * width)))
        members = np.fromiter(chain.from_iterable(local), dtype=np.int64, count=int(size.sum()))
        owner = np.repeat(np.arange(len(cliques)), size)
        code = owner * N + members
        sorting = np.argsort(code, kind='stable')  # codes unique, sorted by clique: runs
        code = code[sorting]
        position = (np.arange(len(members)) - np.repeat(np.cumsum(size) - size, size))[sorting]
        if chunk:      # preparing the scatter of a whole tree of 5,000 poses took about 20 ms
            yield 1 + len(members) // 64

        def slots(k: np.ndarray, v: np.ndarray) -> np.ndarray:
            """Local index of variables ``v`` in cliques ``k``."""
            return position[np.searchsorted(code, k * N + v)]

        span = np.arange(d)
        # factors: the clique of their first-eliminated key
        frontal = [v for clique in cliques for v in clique.frontals]
        in_top = self._slot
        in_top[frontal] = np.repeat(np.arange(len(cliques)), [len(c.frontals) for c in cliques])
        ids = np.unique(np.fromiter(chain.from_iterable(factors.of_variable[v] for v in frontal),
                                    dtype=np.int64))
        keys = factors.keys[ids]
        above = np.asarray(above, dtype=np.int64)
        in_top[above] = -2
        home = np.where(keys >= 0, in_top[keys], -1)
        in_top[frontal] = -1
        in_top[above] = -1
        mine, later = home >= 0, (home == -2) | (keys < 0)
        inside = (mine[:, 0] & (mine[:, 1] | later[:, 1])) | (mine[:, 1] & later[:, 0])
        ids, keys, home = ids[inside], keys[inside], home[inside]
        if chunk:
            yield 1 + len(ids) // 24
        k = home.max(axis=1)
        where = slots(k[:, None], keys)
        where[keys < 0] = size[k][:, None].repeat(2, axis=1)[keys < 0]
        rows = (where[:, :, None] * d + span + (keys < 0)[:, :, None]).reshape(len(ids), 2 * d)
        base = offset[k][:, None] + rows * width[k][:, None]                # (E, 2 dof)
        entries = base[:, :, None] + rows[:, None, :], base + size[k][:, None] * d
        # ranges of cliques from the last back, each assembled and eliminated at once: about
        # _ASSEMBLY_ENTRIES block entries each (up to one clique's more) and, stepped, one step
        # of at least chunk units each
        ends = {len(cliques), 0}
        if offset[-1] > _ASSEMBLY_ENTRIES:
            ends.update(_cuts(width * width, _ASSEMBLY_ENTRIES))
        if chunk:
            frontals = np.array([len(clique.frontals) for clique in cliques])
            cost = FACTOR_COST + size * size // 64 + frontals * size * size // 1024
            ends.update(_cuts(cost, chunk))
            yield 1 + len(ids) // 24
        ends = sorted(ends, reverse=True)
        if len(ends) > 2:       # the factors in order of their cliques, scattered per range
            by = np.argsort(k, kind='stable')
            sorted_k = k[by]
        layout = local, size, width, offset
        for end, start in zip(ends, ends[1:]):
            at = by[slice(*np.searchsorted(sorted_k, (start, end)))] if len(ends) > 2 else slice(None)
            targets = np.concatenate([entries[0][at].ravel(), entries[1][at].ravel()]) - offset[start]
            values = np.concatenate([factors.hessian[ids[at]].ravel(), factors.eta[ids[at]].ravel()])
            assembled = np.bincount(targets, values, minlength=offset[end] - offset[start])
            assembled = assembled.astype(np.float64, copy=False)     # no factors: int zeros
            self._eliminate_range(cliques, layout, assembled, start, end)
            if chunk:
                yield int(cost[start:end].sum())

    def _eliminate_range(self, cliques: list[Clique], layout: tuple, assembled: np.ndarray, start: int,
                         end: int) -> None:
        """Eliminate ``cliques[start:end]``, children first, their blocks assembled in
        ``assembled`` at ``layout`` (:meth:`_factorize_steps`'s local variables, sizes, block
        widths and offsets of every clique; ``assembled`` starts at clique ``start``'s block)."""
        local, size, width, offset = layout
        d, span, slot = self.dof, np.arange(self.dof), self._slot
        for k in range(end - 1, start - 1, -1):
            clique = cliques[k]
            n, w = size[k] * d, width[k]
            block = assembled[offset[k] - offset[start]:offset[k + 1] - offset[start]]
            placed = False
            for child in clique.children:    # orphans and new children, eliminated before it
                if child.into is None:
                    if not placed:
                        slot[local[k]] = np.arange(size[k])
                        placed = True
                    child.into = (slot[child.separator][:, None] * d + span).ravel()
                _extend_add(block, w, n, child.into, child.update)
            if placed:
                slot[local[k]] = -1
            _eliminate_clique(clique, block.reshape(w, w)[:n, :n + 1], len(clique.frontals) * d)

    def _factorize_small(self, cliques: list[Clique], factors: FactorStore) -> None:
        """:meth:`_factorize` for a top of at most ``SMALL_TOP`` variables, clique by clique:
        a clique's ``[M e]`` is one ``np.bincount`` of its factors' systems and its children's
        updates, whose flat targets depend only on the clique's layout (its size, the local
        slots of each factor's keys and of each child's separator) and are cached by it: the
        typical online update repeats a few layouts."""
        home = {}
        for k, clique in enumerate(cliques):
            for v in clique.frontals:
                home[v] = k
        pairs, mine = factors.pairs, [[] for _ in cliques]     # per clique: its factors
        for f in {f for v in home for f in factors.of_variable[v]}:
            a, b = pairs[f]
            ka, kb = home.get(a), (home.get(b) if b >= 0 else -1)
            if ka is not None and kb is not None:
                mine[ka if ka > kb else kb].append(f)
        systems = factors.system[[f for fs in mine for f in fs]]
        end = len(systems)
        for k in range(len(cliques) - 1, -1, -1):     # children first
            clique, fs = cliques[k], mine[k]
            local = clique.frontals + list(clique.separator_ids)
            at = {v: i for i, v in enumerate(local)}
            layout = (len(local),
                      tuple((at[a], at.get(b, -1)) for a, b in map(pairs.__getitem__, fs)),
                      tuple(tuple(map(at.__getitem__, child.separator_ids))
                            for child in clique.children))
            start, end = end - len(fs), end - len(fs)
            parts = [systems[start:start + len(fs)].ravel()]
            parts += [child.update.ravel() for child in clique.children]
            A = self._assemble(layout, np.concatenate(parts))
            _eliminate_clique(clique, A, len(clique.frontals) * self.dof)

    def _assemble(self, layout: tuple, values: np.ndarray) -> np.ndarray:
        """A clique's ``[M e] (n, n + 1)`` from the entries ``values`` of its factors' systems
        and its children's updates, in the order of ``layout`` (:meth:`_scatter_targets`)."""
        targets = self._scatter.get(layout)
        if targets is None:
            targets = self._scatter_targets(layout)
        n = layout[0] * self.dof
        return np.bincount(targets, values, n * (n + 1) + 1)[:-1].reshape(n, n + 1)

    def _scatter_targets(self, layout: tuple) -> np.ndarray:
        """Flat targets in a clique's ``[M e] (n, n + 1)`` (``n * (n + 1)``: discarded) of the
        entries of its factors' systems ``(2 dof + 1)^2`` and its children's updates, in that
        order, for ``layout = (variables, ((slot of key i, of key j or -1) per factor), (slots
        of the separator per child))``; cached (at most 1024 layouts)."""
        size, factor_slots, child_slots = layout
        d = self.dof
        n = size * d
        span = np.arange(d)
        targets = []
        for slots in factor_slots:      # rows/columns: key i, key j (none: -1), the vector
            rows = np.concatenate([slot * d + span if slot >= 0 else np.full(d, -1) for slot in slots]
                                  + [[-1]])
            columns = rows.copy()
            columns[-1] = n
            targets.append(np.where((rows[:, None] >= 0) & (columns >= 0), rows[:, None] * (n + 1) + columns,
                                    n * (n + 1)).ravel())
        for slots in child_slots:
            rows = (np.array(slots)[:, None] * d + span).ravel()
            targets.append((rows[:, None] * (n + 1) + np.append(rows, n)).ravel())
        if len(self._scatter) >= 1024:
            self._scatter.clear()
        targets = self._scatter[layout] = np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)
        return targets

    # ------------------------------------------------------------------ solution
    def solve(self, cliques: list[Clique], delta: np.ndarray, threshold: float) -> list[int]:
        """Back-substitute ``cliques`` (parents first) into ``delta (N, dof)``, then, top down,
        each clique below whose separator holds a component that changed by more than
        ``threshold`` (0: all; iSAM2's wildfire); returns the variables solved. Cliques of
        ``cliques`` below one that is not (refactorized below a clique left for a later update,
        :meth:`first_below`) are solved after the wildfire from those above has passed."""
        flat, d = delta.reshape(-1), self.dof
        wildfire = threshold > 0
        moved = self._moved          # variable id -> 1 while its change exceeds the threshold
        if len(moved) < len(delta):
            moved = self._moved = bytearray(2 * len(delta))
        marked, solved, stack = [], [], []
        fresh = {id(clique) for clique in cliques}
        # ids of the cliques solved first (each a root or under another of them), and the
        # others: under a clique that waits for a later update, solved once the wildfire passed
        above, below = set(), []

        def back_substitute(clique: Clique, below_top: bool) -> None:
            new = clique.mean
            if clique.separator_ids:
                new = new - clique.gain.dot(flat[clique.separator_dofs])    # .dot: less overhead than @
            if clique.children:     # a leaf's changes are read by no clique below it
                if wildfire:
                    step = (new - flat[clique.dofs]).tolist()
                    for k, v in enumerate(clique.frontals):
                        if max(map(abs, step[k * d:(k + 1) * d])) > threshold:
                            moved[v] = 1
                            marked.append(v)
                if below_top and not below:       # only under waiting cliques has one fresh children
                    stack.extend(clique.children)
                else:
                    stack.extend(child for child in clique.children if id(child) not in fresh)
            flat[clique.dofs] = new
            solved.extend(clique.frontals)

        def spread() -> None:
            while stack:
                clique = stack.pop()
                if wildfire:
                    for v in clique.separator_ids:
                        if moved[v]:
                            break
                    else:       # no separator variable moved
                        continue
                back_substitute(clique, True)

        for clique in cliques:
            if clique.parent is None or id(clique.parent) in above:
                above.add(id(clique))
                back_substitute(clique, False)
            else:
                below.append(clique)
        spread()
        for clique in below:
            back_substitute(clique, False)
        spread()
        for v in marked:
            moved[v] = 0
        return solved

    def marginal(self, key: int) -> Marginal:
        """The marginal of a frontal variable of a root clique, or of a leaf hung by
        :meth:`hang` since the last :meth:`update` (computed when asked)."""
        clique = self.clique_of[key] if key < len(self.clique_of) else None
        if clique in self._leaves:
            return self._leaves[clique]
        if clique is None or clique.parent is not None:
            raise ValueError(f'incremental smoother: variable {key} is not in a root clique of the '
                             'Bayes tree (only the newest variables\' marginals are kept)')
        return Marginal(clique.cholesky, clique.frontals.index(key), self.dof)


class Marginal:
    """The marginal covariance of the ``k``-th frontal variable of a clique from the clique's
    Cholesky factor (which later updates replace but never modify, so the marginal stays that
    of the update that made it): at a root, the inverse of its information; at a leaf hung
    below a variable whose marginal is ``above``, with gain ``G`` (:meth:`BayesTree.hang`), its
    conditional covariance plus ``G cov(above) G^T``. :meth:`covariance` solves for it once,
    when first asked (and for the marginals above it not asked yet, iteratively)."""

    __slots__ = ('_cholesky', '_k', '_dof', '_gain', '_above', '_covariance')

    def __init__(self, cholesky: np.ndarray, k: int, dof: int, gain: np.ndarray | None = None,
                 above: Marginal | None = None):
        self._cholesky, self._k, self._dof = cholesky, k, dof
        self._gain, self._above = gain, above
        self._covariance = None

    def covariance(self) -> np.ndarray:
        """``(dof, dof)`` marginal covariance (symmetric)."""
        pending, marginal = [], self
        while marginal is not None and marginal._covariance is None:
            pending.append(marginal)
            marginal = marginal._above
        for marginal in reversed(pending):      # from the root down
            d, k = marginal._dof, marginal._k
            unit = np.zeros((len(marginal._cholesky), d))
            unit[k * d:(k + 1) * d] = np.eye(d)
            solution, _ = lapack.dpotrs(marginal._cholesky, unit)
            block = solution[k * d:(k + 1) * d]
            if marginal._above is not None:
                gain = marginal._gain
                block = block + gain @ marginal._above._covariance @ gain.T
            marginal._covariance = 0.5 * (block + block.T)
            marginal._cholesky = marginal._gain = marginal._above = None     # no longer needed
        return self._covariance


def _unlink(cliques) -> None:
    """Cut the parent and child links of ``cliques`` (an iterable), which point at each other:
    cliques no longer in use are then freed by reference counting, not by the cycle collector."""
    for clique in cliques:
        clique.parent = None
        clique.children.clear()


def _cuts(cost: np.ndarray, most: int) -> list[int]:
    """Where to cut ``cost (K,)`` (per clique, parents first) from the last clique back into
    ranges of at least ``most`` and less than ``most`` plus one clique's cost (the first
    clique's range may hold less): the first clique of each."""
    if not len(cost):
        return []
    tail = np.cumsum(cost[::-1])
    return (len(cost) - 1 - np.searchsorted(tail, np.arange(most, tail[-1], most))).tolist()


def _joins(separator: int, clique: Clique, frontals: int = 1, small: int = 0) -> bool:
    """Whether ``frontals`` variables eliminated just before ``clique``, with a separator of
    ``separator`` variables inside its frontals and separator, may join it: always when
    their columns fill its rows (a fundamental supernode) or the clique then holds at most
    ``small`` frontals, else when at most one row in ``_RELAX_SHARE`` of their separator is a
    structural zero and the clique stays within ``_RELAX_FRONTALS`` frontals (relaxed
    supernodes: fewer, larger dense steps and cached updates for a few zeros)."""
    missing = len(clique.frontals) + len(clique.separator_ids) - separator
    grown = len(clique.frontals) + frontals
    return missing == 0 or grown <= small or (missing <= separator // _RELAX_SHARE
                                              and grown <= _RELAX_FRONTALS)


def _size(clique: Clique) -> int:
    """``(F + S)^2`` in variables: its frontal matrix's (and update's) share of the tree."""
    return (len(clique.frontals) + len(clique.separator_ids)) ** 2


def _rows(variables: list[int] | tuple[int, ...], dof: int) -> slice | np.ndarray:
    """Rows of ``variables`` in the flat solution: a slice when they are consecutive ids in
    increasing order, else an index array ``(len(variables) dof,)``."""
    if len(variables) == 1:
        return slice(variables[0] * dof, (variables[0] + 1) * dof)
    if variables and variables[-1] - variables[0] == len(variables) - 1 and \
            list(variables) == sorted(variables):
        return slice(variables[0] * dof, (variables[-1] + 1) * dof)
    return np.array([v * dof + i for v in variables for i in range(dof)], dtype=np.int64)


def _extend_add(block: np.ndarray, w: int, n: int, at: np.ndarray, update: np.ndarray) -> None:
    """Add a child's ``update (m, m + 1)`` into its parent's flat ``(w, w)`` ``block``: rows and
    columns ``at (m,)``, the vector into column ``n``. Large updates whose rows fall in a few
    runs of consecutive rows go in as one slice add per pair of runs: in the worst-case soak's
    longest update (one relinearized pose, 531 variables re-eliminated or refactorized)
    updates of 84-88 variables in 1-7 runs carried most of the 12 million entries added, and
    its 698 adds took 107-177 ms so, against 199-217 ms scattered (bench/RESULTS.md). The
    others go through flat targets, formed here, not kept (``m^2`` indices per clique took
    half as much memory again as the cached updates)."""
    m = len(at)
    if m >= _RUN_ROWS:
        cut = np.flatnonzero(np.diff(at) != 1) + 1
        runs = len(cut) + 1
        if _RUN_COST * runs * (runs + 1) < m * m:
            square = block.reshape(w, w)
            bounds = [0, *cut.tolist(), m]
            spans = [(a, b, int(at[a])) for a, b in zip(bounds, bounds[1:])]
            for a, b, p in spans:
                rows, part = square[p:p + b - a], update[a:b]
                for c, e, q in spans:
                    rows[:, q:q + e - c] += part[:, c:e]
                rows[:, n] += part[:, -1]
            return
    block[(at[:, None] * w + np.append(at, n)).ravel()] += update.ravel()


def _eliminate_clique(clique: Clique, A: np.ndarray, frontal: int) -> np.ndarray:
    """Eliminate the first ``frontal`` rows of the system ``A = [M e] (n, n + 1)``: the
    conditional of the frontals on the separator and the update on the separator. A singular
    frontal block (a gauge freedom) gets a relative damping of 1e-9 of its mean diagonal.
    Returns the upper Cholesky factor of the frontal block (kept at a root)."""
    own = A[:frontal, :frontal]
    cholesky, info = lapack.dpotrf(own, lower=0, clean=1)
    if info != 0:
        damping = 1e-9 * max(float(np.trace(own)) / len(own), 1.0)
        cholesky, info = lapack.dpotrf(own + damping * np.eye(len(own)), lower=0, clean=1)
        if info != 0:
            raise np.linalg.LinAlgError(f'incremental smoother: the information of variables '
                                        f'{clique.frontals} is not positive definite')
    cross = A[:frontal, frontal:]
    solution, _ = lapack.dpotrs(cholesky, cross)
    clique.gain, clique.mean = solution[:, :-1], solution[:, -1]
    if clique.separator_ids:
        clique.update = A[frontal:, frontal:] - cross[:, :-1].T.dot(solution)
        clique.cholesky = None
    else:
        clique.update = None
        clique.cholesky = cholesky
    return cholesky
