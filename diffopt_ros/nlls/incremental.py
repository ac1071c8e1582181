"""Incremental smoothing of a growing pose graph (iSAM2: a Bayes tree re-eliminated where it
changed, fluid relinearization, partial back-substitution), for online SLAM back-ends.

The graph's Gauss-Newton system is kept eliminated as a Bayes tree of cliques
(:mod:`~diffopt_ros.nlls.bayes_tree`; Kaess et al., "iSAM2: Incremental smoothing and mapping
using the Bayes tree", IJRR 2012). One :meth:`IncrementalSmoother.update`

1. every ``relinearize_skip``-th update, relinearizes the variables whose solution moved more
   than ``relinearize_threshold`` from their linearization point (fluid relinearization:
   their factors are relinearized) and linearizes the new factors
   (:mod:`~diffopt_ros.nlls.factor_store`);
2. re-eliminates the cliques of the variables of the new factors and all their ancestors
   (the top of the tree), reordered with the variables of the new factors last; the cliques
   of relinearized factors below that top (and their ancestors there) keep their variables
   and separators (the graph's structure did not change there) and are factorized again in
   place, without reordering; the subtrees below stay as they are, represented by their
   cached updates;
3. back-substitutes from the new top down, continuing into a clique below only while a
   variable of its separator changed by more than ``wildfire_threshold`` (iSAM2's wildfire).

An update that adds one variable whose factors all join it to one variable (a new pose with
its odometry and scan-match edges to the last keyframe) and relinearizes nothing, or only such
leaves, is done without re-eliminating any top: between factors depend on the relative pose
only, so once the new pose is minimized out they pass a zero update up to the other, and the
new pose is eliminated alone as a leaf below it (:meth:`BayesTree.hang`), relinearized at once
while its solution is beyond the threshold (``LEAF_ITERATIONS``). A chain of such leaves grows
until an update touches it, or until ``bayes_tree.MAX_LEAVES`` hang; that update re-eliminates
it with the top (as iSAM2 re-eliminates the path of a loop closure).

Re-eliminating only the top, each time with the new factors' variables last, lets the tree's
ordering drift from a good one: on a route driven again and again without re-using keyframes
(every lap linked to the first), the cliques' separators grew to 4-5 times those of a fresh
ordering within three laps, and so did the tree's memory and the cost of an update (iSAM2,
on the same changes, slowed down alike). So the tree is *reordered* as iSAM1 did: when its
size (the sum over cliques of ``(frontals + separator)^2``) per variable exceeds
``reorder_factor`` times what it was after the last full elimination, every variable is
re-eliminated with a fresh ordering (the linearization points are kept, so the estimate does
not change). A full elimination of a few thousand poses takes hundreds of milliseconds, so it
is spread over updates: the update that finds the tree too large takes a snapshot of the
linearized factors as of the previous update and starts building a new tree from it
(:meth:`BayesTree.eliminate_all`); each update that adds variables or factors runs
``reorder_slice`` units of that work (about 10 µs each) besides its own, on the old tree
(updates that only relinearize, as the iterations of one solve, run none), and
:meth:`IncrementalSmoother.prepare` runs slices between updates (SLAM: on the scans between
keyframe steps). The update that completes the new tree, or the first that adds something
after :meth:`~IncrementalSmoother.prepare` completed it, swaps it in and re-eliminates on it
what changed since the snapshot (new factors and variables, and the factors relinearized
meanwhile) together with its own changes.

On a trajectory the top is a handful of variables per keyframe; a loop closure re-eliminates
the loop's path up the tree. The estimate after each update is one Gauss-Newton step on what
changed; :meth:`IncrementalSmoother.converge` iterates updates with every moved variable
relinearized until the steps vanish: then it is the batch Gauss-Newton / Levenberg-Marquardt
optimum (tested against :class:`~diffopt_ros.nlls.optimizer.Optimizer`).

Linear algebra runs in float64 numpy on the CPU (one dense block per clique; results are numpy
arrays, which a caller moves to its torch device, as the SLAM system does); factor residuals
and Jacobians use :mod:`diffopt_ros.lie` (any group: SE2, SE3). Not differentiable: learning
differentiates the batch solve (:class:`~diffopt_ros.nlls.optimizer.Optimizer`), which
reaches the same estimate. Errors follow GTSAM's convention ``sum rho(||r||^2_Sigma)`` with
``rho(s) = s / 2`` (or Huber).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import heap, se2_numpy
from diffopt_ros.nlls.bayes_tree import BayesTree, Clique, Marginal
from diffopt_ros.nlls.factor_store import FactorStore, retract
from diffopt_ros.nlls.steps import Steps, advance

REORDER_MIN = 64     # variables: smaller trees are cheap to update whatever their ordering
# units of a reorder's work per update (an ordered or grouped variable; a factorized clique is
# FACTOR_COST units): about 10 ms per update on a full elimination of 3,000 poses of the
# worst-case soak, where the whole took 200 ms
REORDER_SLICE = 1000
# updates between two returns of freed heap memory to the system (:func:`heap.trim`, 2-11 ms
# with a tree of a few hundred MiB): re-eliminated tops free and allocate arrays of changing
# sizes, and the heap they left behind added 10-19 KiB per keyframe in the worst-case soak
TRIM_EVERY = 100
# relinearizations of a leaf just hung whose solution is beyond the threshold (_settle): its
# Gauss-Newton steps shrink quadratically, from a few centimetres off to well within 1 mm in two
LEAF_ITERATIONS = 2
# up to this many rows, a row read or written one at a time costs less than one indexed access
_ROW_BY_ROW = 4


@dataclass(frozen=True)
class UpdateStats:
    """What one :meth:`IncrementalSmoother.update` did.

    Attributes:
        relinearized: variables relinearized (their factors re-linearized).
        eliminated: variables re-eliminated (the top of the tree).
        solved: conditionals back-substituted.
        max_step: largest ``|delta|`` component of the re-eliminated variables (m or rad).
        reordered: a reordered tree was swapped in by this update.
    """

    relinearized: int
    eliminated: int
    solved: int
    max_step: float
    reordered: bool = False


@dataclass
class _Reorder:
    """A reorder in progress: the new ``tree`` of the first ``variables`` variables and
    ``factors`` factors as linearized at the snapshot, the ``work`` (steps) that builds it,
    and the variables whose factors (among those) were relinearized since; ``built`` once the
    work has ended (the tree waits for an update to swap it in)."""

    tree: BayesTree
    work: Steps
    variables: int
    factors: int
    moved: set[int]
    built: bool = False


class IncrementalSmoother:
    """An incrementally solved pose graph of one Lie group (default SE(2)).

    Its dense steps are a few hundred rows at most: run it with one BLAS thread
    (:func:`diffopt_ros.threads.limit_threads`, or ``OPENBLAS_NUM_THREADS=1`` before numpy
    loads), as the nodes and benchmarks do. With two BLAS threads on a 2-core machine, the
    first 6,200 poses of the w10000 stream (relinearize_max 500) took 35.0 s of the calling
    thread's CPU, the longest update 317 ms, against 21.2 s and 102 ms with one
    (bench/RESULTS.md, "Small cliques take their children whatever their zeros").

    Args:
        group: a :mod:`diffopt_ros.lie` group (poses are ``(*group.shape)`` arrays).
        relinearize_threshold: relinearize a variable when a component of its solution moved
            more than this from the linearization point (m or rad; GTSAM's default 0.1).
        wildfire_threshold: back-substitution continues into a subtree while its solution
            changes by more than this (0: always, the exact linear solution).
        relinearize_skip: check for variables to relinearize every this many updates (1:
            every update; GTSAM's default 10).
        relinearize_max: relinearize at most this many variables per update, or the
            variables of one clique when it holds more (0: all beyond the threshold; slam_node's
            default is 300). When more are beyond it, they form a *wave* relinearized in parts
            over the next updates (which run whatever ``relinearize_skip``), the lowest in the
            tree first; each part refactorizes its cliques and those above them up to the
            cliques above the rest of the wave, which wait for it (their conditionals stay
            those of the earlier linearization meanwhile, as a clique's does until it is
            relinearized), so that each clique is refactorized about once per wave. A bound on
            an update's latency: after a loop closure thousands of variables may move beyond
            the threshold at once, and refactorizing their cliques is an update's longest step
            (bench/RESULTS.md: on the w10000 stream with 300, the longest update 86-94 ms
            instead of 250-310, at the same total time).
        reorder_factor: re-eliminate the whole tree with a fresh ordering when its size per
            variable grew beyond this many times its size after the last full elimination
            (0: never; trees of fewer than ``REORDER_MIN`` variables are not reordered).
        reorder_slice: units of a reorder's work run by each update that adds variables or
            factors (0: all of it in the update that starts it).

    Example::

        smoother = IncrementalSmoother()
        smoother.add_variable(0, (0.0, 0.0, 0.0))
        smoother.add_prior(0, (0.0, 0.0, 0.0), 1e6 * np.eye(3))
        smoother.update()
        smoother.add_variable(1, (1.0, 0.0, 0.0))
        smoother.add_between(0, 1, (1.0, 0.0, 0.1), 100 * np.eye(3))
        smoother.update()
        smoother.estimate()          # (2, 3)
    """

    def __init__(self, group=SE2, relinearize_threshold: float = 0.1,
                 wildfire_threshold: float = 1e-3, relinearize_skip: int = 1, reorder_factor: float = 2.0,
                 reorder_slice: int = REORDER_SLICE, relinearize_max: int = 0):
        if int(relinearize_skip) < 1:
            raise ValueError(f'incremental smoother: relinearize_skip {relinearize_skip} is not >= 1')
        if int(relinearize_max) < 0:
            raise ValueError(f'incremental smoother: relinearize_max {relinearize_max} is negative')
        if not (reorder_factor == 0 or reorder_factor > 1):
            raise ValueError(f'incremental smoother: reorder_factor {reorder_factor} is neither 0 nor > 1')
        if int(reorder_slice) < 0:
            raise ValueError(f'incremental smoother: reorder_slice {reorder_slice} is negative')
        self.reorder_factor = float(reorder_factor)
        self.reorder_slice = int(reorder_slice)
        self._reorder: _Reorder | None = None
        self.reorders = 0            # reordered trees swapped in so far
        self._fresh_size = math.inf      # the tree's size per variable after a full elimination
        self.group = group
        self.dof = group.dof
        self._size = math.prod(group.shape)
        self.relinearize_threshold = float(relinearize_threshold)
        self.wildfire_threshold = float(wildfire_threshold)
        self.relinearize_skip = int(relinearize_skip)
        self.relinearize_max = int(relinearize_max)
        self._wave: list[int] = []    # variables of a wave not relinearized yet (relinearize_max)
        self._count = 0
        self._points = np.zeros((0, *group.shape))     # linearization points (with spare rows)
        self._delta = np.zeros((0, self.dof))          # solution relative to them (spare rows)
        self._estimate = np.zeros((0, *group.shape))   # the points retracted by the solution
        self._sqrt_info: dict[bytes, np.ndarray] = {}  # square roots of recent informations
        self._factors = FactorStore(group)
        self._tree = BayesTree(self.dof)
        self._updates = 0
        self._swapped = False     # the last update swapped a reordered tree in
        self._new_factors: list[int] = []
        self._new_variables: list[int] = []
        self._far: set[int] = set()           # variables whose delta exceeds ...
        self._far_threshold = self.relinearize_threshold     # ... this threshold

    # ------------------------------------------------------------------ building the graph
    @property
    def num_variables(self) -> int:
        """Variables added so far (ids ``0..N-1``)."""
        return self._count

    @property
    def _theta(self) -> np.ndarray:
        """``(N, *group.shape)`` linearization points."""
        return self._points[:self._count]

    @property
    def num_factors(self) -> int:
        """Factors added so far."""
        return self._factors.count

    def add_variable(self, key: int, initial) -> None:
        """Add variable ``key`` (the next id, ``num_variables``) at ``initial`` (group shape)."""
        if key != self._count:
            raise ValueError(f'incremental smoother: variable {key} added, expected the next id '
                             f'{self._count} (ids are consecutive from 0)')
        value = np.asarray(initial, dtype=np.float64)
        if value.size != self._size:
            raise ValueError(f'incremental smoother: variable {key}: initial value of shape '
                             f'{value.shape} is not {self.group.shape}')
        if not all(map(math.isfinite, value.ravel().tolist())):
            raise ValueError(f'incremental smoother: variable {key}: non-finite initial value {value}')
        if key == len(self._delta):
            grow = max(64, len(self._delta))
            self._delta = np.concatenate((self._delta, np.zeros((grow, self.dof))))
            self._points = np.concatenate((self._points, np.zeros((grow, *self.group.shape))))
            self._estimate = np.concatenate((self._estimate, np.zeros((grow, *self.group.shape))))
        self._points[key] = self._estimate[key] = value.reshape(self.group.shape)
        self._count += 1
        self._factors.of_variable.append([])
        self._tree.add_variable()
        self._new_variables.append(key)

    def add_prior(self, key: int, measurement, information) -> int:
        """Prior ``r = log(z^-1 x_key)`` with ``information (dof, dof)``; returns the factor id."""
        return self._add_factor((int(key),), measurement, information, 0.0)

    def add_between(self, i: int, j: int, measurement, information, huber: float = 0.0) -> int:
        """Between ``r = log(z^-1 x_i^-1 x_j)`` with ``information (dof, dof)`` and a Huber loss
        of scale ``huber`` (whitened units; 0: none); returns the factor id."""
        if i == j:
            raise ValueError(f'incremental smoother: between factor from variable {i} to itself')
        return self._add_factor((int(i), int(j)), measurement, information, huber)

    def _add_factor(self, keys, measurement, information, huber) -> int:
        for key in keys:
            if not 0 <= key < self._count:
                raise IndexError(f'incremental smoother: factor on variable {key}, but only '
                                 f'{self._count} variables exist (add_variable first)')
        size = self._size
        if type(measurement) in (tuple, list) and len(measurement) == size \
                and all(type(x) is float for x in measurement):
            z = tuple(measurement)
        else:
            z = np.asarray(measurement, dtype=np.float64)
            if z.size != size:
                raise ValueError(f'incremental smoother: factor on {keys}: measurement of shape '
                                 f'{z.shape} is not {self.group.shape}')
            z = tuple(z.ravel().tolist())
        if not all(map(math.isfinite, z)):
            raise ValueError(f'incremental smoother: factor on {keys}: non-finite measurement')
        info = np.asarray(information, dtype=np.float64)
        if info.shape != (self.dof, self.dof):
            raise ValueError(f'incremental smoother: information of shape {info.shape} is not '
                             f'({self.dof}, {self.dof})')
        sqrt_info = self._sqrt_info.get(info.tobytes())
        if sqrt_info is None:
            if not np.isfinite(info).all():
                raise ValueError(f'incremental smoother: factor on {keys}: non-finite information')
            try:
                sqrt_info = np.linalg.cholesky(0.5 * (info + info.T)).T
            except np.linalg.LinAlgError as exc:
                raise ValueError(f'incremental smoother: factor on {keys}: information is not '
                                 'positive definite') from exc
            if len(self._sqrt_info) >= 64:
                self._sqrt_info.clear()
            self._sqrt_info[info.tobytes()] = sqrt_info
        index = self._factors.add(keys, z, sqrt_info, float(huber))
        self._new_factors.append(index)
        return index

    # ------------------------------------------------------------------ results
    def estimate(self, copy: bool = True) -> np.ndarray:
        """``(N, *group.shape)``: linearization points retracted by the current solution (a
        copy of the rows kept up to date for the variables each update solves; ``copy=False``:
        those rows themselves, read-only, valid until the next update)."""
        rows = self._estimate[:self._count]
        if copy:
            return rows.copy()
        rows = rows.view()
        rows.flags.writeable = False
        return rows

    def estimate_of(self, key: int) -> np.ndarray:
        """``(*group.shape)``: the current estimate of one variable."""
        return self._estimate[key].copy()

    def error(self, values: np.ndarray | None = None) -> float:
        """Objective ``sum rho(||r||^2_Sigma)`` at ``values`` (default: :meth:`estimate`)."""
        values = self.estimate() if values is None else np.asarray(values, dtype=np.float64)
        return self._factors.error(values)

    def marginal_covariance(self, key: int) -> np.ndarray:
        """``(dof, dof)`` marginal covariance of a variable of a root clique of the Bayes tree
        (the newest variable after an update that added factors on it: it is eliminated last),
        or of a leaf hung since the last update that re-eliminated a top (the newest variable
        after an update that hung it), in its right (body-frame) tangent space at the current
        linearization."""
        return self._tree.marginal(key).covariance()

    def marginal(self, key: int) -> Marginal:
        """:meth:`marginal_covariance` of ``key`` as of this update, computed only when its
        ``covariance()`` is first called (later updates do not change it)."""
        return self._tree.marginal(key)

    # ------------------------------------------------------------------ the update
    def update(self, relinearize: bool = True) -> UpdateStats:
        """Fold in the factors and variables added since the last update, relinearize what
        moved (if ``relinearize``, every ``relinearize_skip``-th update), re-eliminate the
        affected top of the tree and solve; start a reorder when the tree outgrew
        ``reorder_factor``, or run a slice of the one in progress (and, when it completes,
        swap its tree in and catch it up). In the update after a reorder's swap and every
        ``TRIM_EVERY`` updates, the heap memory freed is handed back to the system
        (:func:`heap.trim`)."""
        n = self._count
        self._updates += 1
        done = self._reorder_step(n)      # a finished reorder: its tree is now the smoother's
        relinearized, waiting = [], frozenset()
        check = relinearize and n and (self._wave or self._updates % self.relinearize_skip == 0)
        if check:
            relinearized, waiting = self._to_relinearize()
        factors = self._factors
        touched = self._new_factors
        if relinearized:      # the new points: the estimates (kept as retract(theta, delta))
            self._theta[relinearized] = self._estimate[relinearized]
            self._delta[relinearized] = 0.0
            self._far.difference_update(relinearized)
            touched = sorted(set(touched).union(*(factors.of_variable[v] for v in relinearized)))
            self._note_relinearized(touched)
        factors.linearize(touched, self._theta)
        tree = self._tree
        leaves = None if done is not None else self._hang(relinearized)
        if leaves is None:
            pairs = factors.pairs
            last = [v for f in self._new_factors for v in pairs[f] if v >= 0]
            changed = set(self._new_variables).union(last)      # where the graph's structure changed
            if done is not None:          # on the reordered tree: what changed since its snapshot
                changed.update(range(done.variables, n))
                changed.update(v for f in range(done.factors, factors.count) for v in pairs[f] if v >= 0)
            moved = set() if done is None else done.moved       # where only linearizations changed
            if relinearized:
                for f in touched:
                    moved.update(pairs[f])
                moved.discard(-1)
            moved -= changed
            if 2 * len(set(last)) > n:     # a batch start: constrain only the newest variable
                last = []
            last.append(n - 1)
        self._new_factors, self._new_variables = [], []
        if self._swapped or self._updates % TRIM_EVERY == 0:
            heap.trim()
        self._swapped = done is not None      # trimmed next time: this update has the catch-up
        if leaves is not None:
            solved = self._solve_leaves(leaves)
            step = self._retract(solved, len(leaves))
            again = self._settle(leaves[-1]) if check else 0
            return UpdateStats(len(relinearized) + again, len(leaves), len(solved), step)
        if not changed and not moved:
            return UpdateStats(0, 0, 0, 0.0, done is not None)
        cliques = tree.update(changed, last, factors, moved, waiting)
        solved = tree.solve(cliques, self._delta, self.wildfire_threshold)
        eliminated = sum(len(clique.frontals) for clique in cliques)   # the first rows solved
        if len(changed) == n:          # the whole tree ordered afresh
            self._fresh_size = tree.size / n
        return UpdateStats(len(relinearized), eliminated, len(solved), self._retract(solved, eliminated),
                           done is not None)

    def _hang(self, relinearized: list[int]) -> list[Clique] | None:
        """The update as leaves (:meth:`BayesTree.hang`; between factors depend on the relative
        pose only, so nothing above a leaf changes) when it adds at most one variable, all of
        whose factors join it to one variable below which a leaf may hang (a new pose with its
        odometry and scan-match edges to the last keyframe), no other factor, and relinearizes
        only leaves with nothing hung below them (:meth:`BayesTree.is_tip`: the poses last
        added so, whose first estimate moved): those are factorized again, the new one hung;
        returns the leaves, or None (nothing done: the update takes the general path)."""
        tree, k, on = self._tree, self._count - 1, -1
        if self._new_variables or self._new_factors:
            if self._new_variables != [k] or not self._new_factors:
                return None
            pairs = self._factors.pairs
            for f in self._new_factors:
                a, b = pairs[f]
                other = b if a == k else (a if b == k else -1)      # -1: a prior, or not on k
                if other < 0 or (on >= 0 and other != on):
                    return None
                on = other
            if not tree.hangs_below(on):
                return None
        elif not relinearized:
            return None
        if not all(map(tree.is_tip, relinearized)):
            return None
        leaves = [tree.rehang(v, self._factors) for v in relinearized]
        if on >= 0:
            leaves.append(tree.hang(k, on, self._new_factors, self._factors))
        return leaves

    def _settle(self, leaf: Clique) -> int:
        """Relinearize the variable of ``leaf`` (the one hung or factorized again last) at its
        estimate while its solution is beyond ``relinearize_threshold``, up to
        ``LEAF_ITERATIONS`` times (Gauss-Newton on that pose alone: nothing above the leaf
        changes). A new pose guessed from odometry is so brought to its scan match now, not
        by a relinearization of the next update that would take the general path. Returns the
        relinearizations run."""
        key, tree, factors = leaf.frontals[0], self._tree, self._factors
        for count in range(LEAF_ITERATIONS):
            if key not in self._beyond_threshold():
                return count
            self._theta[key] = self._estimate[key]
            self._delta[key] = 0.0      # (_retract below notes whether it is beyond again)
            # (a reorder's snapshot has none of a new leaf's factors, and a tip's are noted
            # already: the update relinearized it)
            factors.linearize(factors.of_variable[key], self._theta)
            self._retract(self._solve_leaves([tree.rehang(key, factors)]), 1)
        return LEAF_ITERATIONS

    def _note_relinearized(self, factors: list[int]) -> None:
        """Note the variables of ``factors`` (about to be relinearized) that the reorder in
        progress, if any, has in its snapshot: its tree refactorizes them when swapped in."""
        job = self._reorder
        if job is not None:
            pairs = self._factors.pairs
            job.moved.update(v for f in factors if f < job.factors for v in pairs[f] if v >= 0)

    def _solve_leaves(self, leaves: list[Clique]) -> list[int]:
        """Back-substitute ``leaves`` (:meth:`_hang`'s, parents first; nothing hangs below
        them but the later ones) into the solution; returns their variables."""
        delta, solved = self._delta, []
        for leaf in leaves:
            key = leaf.frontals[0]
            delta[key] = leaf.mean - leaf.gain.dot(delta[leaf.separator_ids[0]])
            solved.append(key)
        return solved

    @property
    def preparing(self) -> bool:
        """A reorder is in progress whose work :meth:`prepare` can run."""
        return self._reorder is not None and not self._reorder.built and self.reorder_slice > 0

    def prepare(self, budget: int | None = None) -> bool:
        """Run ``budget`` units (default ``reorder_slice``) of the reorder in progress between
        updates, e.g. while a robot drives on between keyframes: the updates then have less of
        it to run, and the next one that adds variables or factors swaps a built tree in (its
        snapshot is unaffected by what was added since). Returns whether it ran any (none: no
        reorder in progress, its tree built, or ``reorder_slice`` 0: whole reorders run in
        their update)."""
        if not self.preparing:
            return False
        job = self._reorder
        budget = self.reorder_slice if budget is None else int(budget)
        if budget <= 0:
            raise ValueError(f'incremental smoother: prepare budget {budget} must be > 0')
        job.built, _ = advance(job.work, budget)
        return True

    def _reorder_step(self, n: int) -> _Reorder | None:
        """Start a reorder when the tree outgrew its ordering (its snapshot: the variables and
        factors as of the last update), run a slice of the one in progress if this update adds
        variables or factors (or all of it if ``reorder_slice`` is 0), and return it if it
        finished: its tree, with the variables added since, is then the smoother's."""
        job = self._reorder
        if job is None:
            variables = n - len(self._new_variables)
            if not (self.reorder_factor > 0 and variables >= REORDER_MIN
                    and self._tree.size > self.reorder_factor * self._fresh_size * n):
                return None
            count = self._factors.count - len(self._new_factors)
            tree = BayesTree(self.dof)
            for _ in range(variables):
                tree.add_variable()
            # factorization steps of about a quarter slice (ordering and grouping steps are one
            # variable each): a slice overruns its budget by about that, or by one clique of a
            # large separator
            chunk = max(self.reorder_slice // 4, 1) if self.reorder_slice else 0
            work = tree.eliminate_all(self._factors.snapshot(count), [variables - 1], chunk)
            job = self._reorder = _Reorder(tree, work, variables, count, set())
        if self.reorder_slice and not (self._new_factors or self._new_variables):
            return None
        if not job.built:
            job.built, _ = advance(job.work, self.reorder_slice)
            if not job.built:
                return None
        self._reorder = None
        self.reorders += 1
        self._fresh_size = job.tree.size / job.variables
        for _ in range(job.variables, n):
            job.tree.add_variable()
        self._tree = job.tree
        return job

    def _to_relinearize(self) -> tuple[list[int], set]:
        """The variables to relinearize now, in increasing order, and the cliques whose
        refactorization waits for a later update: those beyond the threshold and none; or,
        when more than ``relinearize_max`` are, a *wave* of them, relinearized over the next
        updates in parts of about that many, the lowest in the tree first
        (:meth:`BayesTree.first_below`), whatever their solution does meanwhile (the cliques
        above the rest of the wave are refactorized with it). Variables that move beyond the
        threshold during a wave wait for the first check after it. With the bound lifted
        (``relinearize_max`` 0, as :meth:`converge` does), the rest of a wave joins the
        others."""
        far, cap = self._beyond_threshold(), self.relinearize_max
        if not cap or not (self._wave or cap < len(far)):
            far, self._wave = (far.union(self._wave) if self._wave else far), []
            return sorted(far), frozenset()
        first, self._wave, waiting = self._tree.first_below(self._wave or far, cap)
        return sorted(first), waiting

    def _beyond_threshold(self) -> set[int]:
        """The variables with a component of their solution beyond ``relinearize_threshold``
        (kept up to date by :meth:`_retract`; recomputed when the threshold changed)."""
        if self._far_threshold != self.relinearize_threshold:
            moved = np.abs(self._delta[:self._count]).max(axis=1) > self.relinearize_threshold
            self._far = set(np.flatnonzero(moved).tolist())
            self._far_threshold = self.relinearize_threshold
        return self._far

    def _retract(self, solved: list[int], eliminated: int) -> float:
        """Retract the estimates of the ``solved`` variables by their solution and note those
        beyond the relinearization threshold; returns the largest solution component of the
        first ``eliminated`` of them."""
        if len(solved) <= se2_numpy.FEW and self.group is SE2:       # on Python floats
            if len(solved) <= _ROW_BY_ROW:
                estimate, points = self._estimate, self._points
                delta = [self._delta[v].tolist() for v in solved]
                for v, row in zip(solved, se2_numpy.retract_few([points[v].tolist() for v in solved], delta)):
                    estimate[v] = row
            else:
                delta = self._delta[solved].tolist()
                self._estimate[solved] = se2_numpy.retract_few(self._points[solved].tolist(), delta)
            size = [max(abs(a), abs(b), abs(c)) for a, b, c in delta]
            step = max(size[:eliminated])
            far = [v for v, s in zip(solved, size) if s > self.relinearize_threshold]
        else:
            rows = np.array(solved)
            delta = self._delta[rows]
            self._estimate[rows] = retract(self.group, self._points[rows], delta)
            size = np.abs(delta).max(axis=1)
            step = float(size[:eliminated].max())
            far = rows[size > self.relinearize_threshold].tolist()
        if self._far_threshold == self.relinearize_threshold:
            self._far.difference_update(solved)
            self._far.update(far)
        return step

    def converge(self, max_updates: int = 50, tolerance: float = 1e-9) -> int:
        """Relinearize every variable that moved and update, until the largest step is below
        ``tolerance`` (Gauss-Newton on the whole graph, re-eliminating only what moved);
        returns the number of updates run (``relinearize_max`` does not apply)."""
        settings = (self.relinearize_threshold, self.wildfire_threshold, self.relinearize_skip,
                    self.relinearize_max)
        self.relinearize_threshold = self.wildfire_threshold = 0.0
        self.relinearize_skip, self.relinearize_max = 1, 0
        try:
            self.update()
            for count in range(1, max_updates + 1):
                n = self.num_variables
                if not n or float(np.abs(self._delta[:n]).max()) < tolerance:
                    return count
                self.update()
            return max_updates
        finally:
            (self.relinearize_threshold, self.wildfire_threshold, self.relinearize_skip,
             self.relinearize_max) = settings
