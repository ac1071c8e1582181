"""Incremental smoothing (nlls.incremental): the eliminated system equals the batch one, the
iterated estimate equals batch Levenberg-Marquardt, bad input is refused."""
import gc

import numpy as np
import pytest
import torch

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import Between, Huber, Objective, Optimizer, Prior, Variable, bayes_tree, ordering
from diffopt_ros.nlls.bayes_tree import Clique
from diffopt_ros.nlls.incremental import IncrementalSmoother, UpdateStats

F64 = torch.float64
INFO = np.diag([400.0, 400.0, 900.0])


def _circle_graph(n=120, seed=0):
    """Poses on laps of a 20 m circle (40 poses a lap), noisy odometry and loop closures to
    earlier laps: ``(truth (n, 3), edges [(i, j)], measurements (E, 3))``."""
    rng = np.random.default_rng(seed)
    truth = [torch.zeros(3, dtype=F64)]
    for _ in range(1, n):
        step = torch.tensor([0.5, 0.0, 2 * np.pi / 40 + rng.normal(0, 0.05)], dtype=F64)
        truth.append(SE2.compose(truth[-1], step))
    truth = torch.stack(truth)
    edges = []
    for k in range(1, n):
        edges.append((k - 1, k))
        near = torch.nonzero((truth[:max(k - 10, 0), :2] - truth[k, :2]).norm(dim=1) < 1.0).flatten()
        edges += [(int(i), k) for i in near if rng.random() < 0.3]
    ij = torch.tensor(edges)
    noise = torch.tensor(rng.normal(0, [0.05, 0.05, 0.03], (len(edges), 3)), dtype=F64)
    measurements = SE2.retract(SE2.between(truth[ij[:, 0]], truth[ij[:, 1]]), noise)
    return truth, edges, measurements.numpy()


def _stream(smoother, edges, measurements, n, states=None, offset=0.0, **update):
    """Feed poses in order, each with its edges (loops with a Huber loss), each initialized
    at its odometry guess moved by ``offset`` (m, rad) along every axis; returns the stats (and
    appends the linearization points and solution after each update to ``states``)."""
    smoother.add_variable(0, np.zeros(3))
    smoother.add_prior(0, np.zeros(3), 1e6 * np.eye(3))
    smoother.update(**update)
    stats = []
    for k in range(1, n):
        mine = [e for e, (_, j) in enumerate(edges) if j == k]
        guess = SE2.compose(torch.from_numpy(smoother.estimate_of(k - 1)),
                            torch.from_numpy(measurements[mine[0]]))
        smoother.add_variable(k, guess.numpy() + offset)
        for e in mine:
            i = edges[e][0]
            smoother.add_between(i, k, measurements[e], INFO, huber=0.0 if i == k - 1 else 1.0)
        stats.append(smoother.update(**update))
        if states is not None:
            states.append((smoother._theta.copy(), smoother._delta[:k + 1].copy()))
    return stats


def _batch(edges, measurements, initial, robust=None):
    """The objective of :func:`_stream`'s factors (``robust (E,)``: the edges with a Huber loss;
    default those between poses that are not consecutive) and its variable."""
    poses = Variable(SE2, torch.as_tensor(initial), name='poses')
    ij, z = torch.tensor(edges), torch.from_numpy(measurements)
    odom = ij[:, 0] == ij[:, 1] - 1 if robust is None else ~torch.as_tensor(robust)
    info = torch.from_numpy(INFO)
    objective = Objective([Prior(poses, [0], torch.zeros(1, 3, dtype=F64), 1e6 * torch.eye(3, dtype=F64)),
                           Between(poses, ij[odom, 0], ij[odom, 1], z[odom], info),
                           Between(poses, ij[~odom, 0], ij[~odom, 1], z[~odom], info, Huber(1.0))])
    return objective, poses


def _batch_linear_system(smoother, edges, z, robust=None):
    """The batch Gauss-Newton information ``(3 n, 3 n)`` and gradient ``(3 n,)`` at the
    smoother's linearization points."""
    theta = torch.from_numpy(smoother._theta.copy())
    objective, _ = _batch(edges, z, theta, robust)
    lin = objective.linearize([theta[None]])
    from diffopt_ros.nlls.linear import DenseCholesky
    return DenseCholesky(objective).assemble(lin.blocks)[0], lin.gradient[0]


def _batch_linear_solution(smoother, edges, z, n, robust=None):
    """``(n, 3)``: the batch Gauss-Newton step at the smoother's linearization points."""
    H, gradient = _batch_linear_system(smoother, edges, z, robust)
    return torch.linalg.solve(H, -gradient).reshape(n, 3).numpy()


def test_eliminated_system_solves_the_batch_linear_system():
    """Without relinearization every factor stays linearized at its first point: after the
    stream (re-eliminating only tops, orphans re-attached, exact back-substitution) the
    solution is that of the batch Gauss-Newton system at those points."""
    n = 100
    _, edges, z = _circle_graph(n)
    smoother = IncrementalSmoother(wildfire_threshold=0.0, reorder_factor=0)    # tops only
    stats = _stream(smoother, edges, z, n, relinearize=False)
    assert max(s.eliminated for s in stats) < n / 2       # only tops were re-eliminated
    assert np.median([s.eliminated for s in stats]) < 25
    reference = _batch_linear_solution(smoother, edges, z, n)
    assert np.abs(smoother._delta[:n] - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())
    # the estimate as a copy, or as the smoother's own rows (read-only)
    rows, copy = smoother.estimate(copy=False), smoother.estimate()
    assert np.array_equal(rows, copy) and rows.shape == (n, 3) and not rows.flags.writeable
    with pytest.raises(ValueError):
        rows[0, 0] = 1.0
    copy[0, 0] += 1.0
    assert not np.array_equal(smoother.estimate(), copy)


def test_random_loop_closures_keep_the_batch_linear_solution():
    """Loop closures to random old poses (large tops, reordered, cliques re-attached): after
    each one the exact back-substitution equals the batch Gauss-Newton step."""
    rng = np.random.default_rng(3)
    n = 150
    truth, edges, z = _circle_graph(n, seed=2)
    smoother = IncrementalSmoother(wildfire_threshold=0.0)
    _stream(smoother, edges, z, n, relinearize=False)
    for _ in range(6):
        i, j = sorted(rng.choice(n, 2, replace=False).tolist())
        edges.append((i, j))
        z = np.concatenate((z, SE2.between(truth[i:i + 1], truth[j:j + 1]).numpy()))
        smoother.add_between(i, j, z[-1], INFO, huber=1.0)
        stats = smoother.update(relinearize=False)
        assert stats.eliminated >= 2 and stats.relinearized == 0
        reference = _batch_linear_solution(smoother, edges, z, n)
        assert np.abs(smoother._delta[:n] - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())


def _live_size(smoother) -> int:
    """The tree's size counted afresh: sum over its cliques of (frontals + separator)^2."""
    cliques = {id(c): c for c in smoother._tree.clique_of if c is not None}.values()
    return sum(map(bayes_tree._size, cliques))


def test_a_tree_that_outgrew_its_ordering_is_reordered_without_changing_the_solution():
    """The tree's size is kept up to date through every update; once it outgrows
    ``reorder_factor`` times its size per variable after the last full elimination, a tree of
    every variable is eliminated afresh and swapped in (here in the next update:
    ``reorder_slice`` 0): the same linear solution (no relinearization), a tree no larger, and
    no second reorder until it outgrows that again."""
    n = 150
    _, edges, z = _circle_graph(n, seed=2)
    smoother = IncrementalSmoother(wildfire_threshold=0.0, reorder_factor=0, reorder_slice=0)  # tops only
    stats = _stream(smoother, edges, z, n, relinearize=False)
    assert max(s.eliminated for s in stats) < n and smoother._tree.size == _live_size(smoother)
    assert not any(s.reordered for s in stats)
    grown = smoother._tree.size
    before = smoother._delta[:n].copy()
    smoother.reorder_factor = 2.0       # its last full elimination: the first pose (size 1)
    assert grown > 2.0 * smoother._fresh_size * n
    old = smoother._tree
    assert smoother.update(relinearize=False) == UpdateStats(0, 0, 0, 0.0, True)    # nothing new to eliminate
    assert smoother._tree is not old and all(smoother._tree.clique_of)
    assert smoother._tree.size == _live_size(smoother) <= grown
    assert np.abs(smoother._delta[:n] - before).max() < 1e-9 * max(1.0, np.abs(before).max())
    reference = _batch_linear_solution(smoother, edges, z, n)
    assert np.abs(smoother._delta[:n] - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())
    assert smoother._fresh_size == smoother._tree.size / n
    assert not smoother.update(relinearize=False).reordered      # nothing new: nothing to do
    # streamed with reordering on (the default): reorders happen and the solution stays exact
    streamed = IncrementalSmoother(wildfire_threshold=0.0)
    stats = _stream(streamed, edges, z, n, relinearize=False)
    assert any(s.reordered for s in stats)
    assert streamed._tree.size == _live_size(streamed)
    reference = _batch_linear_solution(streamed, edges, z, n)
    assert np.abs(streamed._delta[:n] - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())


def test_freed_heap_is_returned_after_a_reorder_and_every_trim_every_updates(monkeypatch):
    """The smoother hands freed heap memory back in the update after each reorder's swap (not
    in the swap's, which has the catch-up to do) and every ``TRIM_EVERY`` updates, and at no
    other update."""
    from diffopt_ros.nlls import incremental
    n, every = 150, 7
    _, edges, z = _circle_graph(n, seed=2)
    smoother = IncrementalSmoother(wildfire_threshold=0.0)
    trims = []
    monkeypatch.setattr(incremental, 'TRIM_EVERY', every)
    monkeypatch.setattr(incremental.heap, 'trim', lambda: trims.append(smoother._updates))
    stats = _stream(smoother, edges, z, n, relinearize=False)
    reorders = {k + 3 for k, s in enumerate(stats) if s.reordered}   # the next update's numbers
    assert reorders and trims == sorted(reorders | set(range(every, n + 1, every)))


class _GrownTree:
    """The first ``grown`` of ``n`` poses of a circle graph (seed 2) streamed without reorders,
    which leaves the tree over twice its fresh size; ``reorder_factor`` 2 from then on."""

    def __init__(self, reorder_slice: int, n: int = 150, grown: int = 110):
        _, self.edges, self.z = _circle_graph(n, seed=2)
        self.n, self.grown = n, grown
        self.smoother = IncrementalSmoother(relinearize_threshold=0.01, wildfire_threshold=0.0,
                                            reorder_factor=0, reorder_slice=reorder_slice)
        _stream(self.smoother, *self.graph(grown), grown, offset=0.02, relinearize=False)
        self.smoother.reorder_factor = 2.0

    def graph(self, m: int):
        """The edges among the first ``m`` poses and their measurements."""
        return [(i, j) for i, j in self.edges if j < m], self.z[[j < m for _, j in self.edges]]

    def exact(self, m: int) -> bool:
        """The solution of the first ``m`` poses is the batch Gauss-Newton step (to 1e-9)."""
        reference = _batch_linear_solution(self.smoother, *self.graph(m), m)
        delta = self.smoother._delta[:m]
        return np.abs(delta - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())

    def add_pose(self, k: int) -> None:
        """Pose ``k`` (its odometry from ``k - 1``, 0.02 off) and its edges (loops robust)."""
        smoother, z = self.smoother, self.z
        mine = [e for e, (_, j) in enumerate(self.edges) if j == k]
        smoother.add_variable(k, SE2.compose(torch.from_numpy(smoother.estimate_of(k - 1)),
                                             torch.from_numpy(z[mine[0]])).numpy() + 0.02)
        for e in mine:
            i = self.edges[e][0]
            smoother.add_between(i, k, z[e], INFO, huber=0.0 if i == k - 1 else 1.0)


def test_a_reorder_spread_over_updates_catches_up_with_the_changes_made_meanwhile(monkeypatch):
    """With a small ``reorder_slice`` the reorder runs a slice per update, over many updates;
    meanwhile new poses, loop closures and relinearizations go into the old tree. The update
    that swaps the new tree in re-eliminates on it what changed since its snapshot: then the
    solution is the batch Gauss-Newton step at the current linearization points and the
    tree's size is up to date; later updates on the new tree stay exact. With
    ``reorder_slice`` 0 the update that starts the reorder swaps it in. Updates that only
    relinearize (the iterations of one solve) run no slice."""
    from diffopt_ros.nlls import incremental
    advanced = []
    advance = incremental.advance
    monkeypatch.setattr(incremental, 'advance', lambda work, budget: (advanced.append(budget),
                                                                      advance(work, budget))[1])
    for slice_ in (40, 0):
        case = _GrownTree(slice_)
        smoother, n, grown = case.smoother, case.n, case.grown
        assert smoother._tree.size > 2.0 * smoother._fresh_size * grown
        stats = []
        for k in range(grown, n):
            case.add_pose(k)
            stats.append(smoother.update())
            if smoother._reorder is not None:     # an update that only relinearizes runs no slice
                slices = len(advanced)
                assert not smoother.update(relinearize=False).reordered
                assert len(advanced) == slices and smoother._reorder is not None
            if stats[-1].reordered:
                m = k + 1
                assert smoother._tree.size == _live_size(smoother) and all(smoother._tree.clique_of)
                assert smoother._tree.size < 2.0 * smoother._fresh_size * m
                assert case.exact(m)
        swaps = [k for k, s in enumerate(stats) if s.reordered]
        assert len(swaps) == 1
        if slice_:       # many updates, with relinearizations, while it ran
            assert swaps[0] >= 5 and any(s.relinearized for s in stats[:swaps[0]])
        else:
            assert swaps == [0]
        assert case.exact(n) and smoother._tree.size == _live_size(smoother)


def test_a_reorder_swapped_in_during_a_relinearization_wave_keeps_the_solution():
    """A reorder spread over updates while ``relinearize_max`` splits waves: the tree swapped in
    during a wave goes on with it; every clique holds its conditional after every update, and
    once the bound is lifted the solution is the batch Gauss-Newton step."""
    case = _GrownTree(40)
    smoother = case.smoother
    smoother.relinearize_max = 3
    during = 0
    for k in range(case.grown, case.n):
        case.add_pose(k)
        waiting = bool(smoother._wave)
        during += smoother.update().reordered and waiting
        assert _conditionals_hold(smoother) < 1e-12
    assert during == 1
    smoother.relinearize_max = 0
    smoother.update()
    assert case.exact(case.n)


def test_a_reorder_prepared_between_updates_is_swapped_in_exactly():
    """``prepare()`` between updates (SLAM runs it on the scans between keyframe steps, with or
    without new poses and edges added since the last update) runs the reorder's slices outside
    the updates: its tree is built after fewer updates, waits (``preparing`` False) until an
    update that adds something swaps it in, and the solution is then the batch Gauss-Newton
    step at the current linearization points, as at the end of the stream."""
    swaps = {}
    for between in (0, 3):          # prepare() calls between two updates
        case = _GrownTree(40)
        smoother = case.smoother
        assert not smoother.preparing and not smoother.prepare()      # nothing in progress
        for k in range(case.grown, case.n):
            case.add_pose(k)
            if between and k % 2:    # with a new pose and its edges waiting for the update
                smoother.prepare()
            if smoother.update().reordered:
                swaps.setdefault(between, k)
                assert smoother._tree.size == _live_size(smoother)
                assert case.exact(k + 1)
            if smoother._reorder is not None and smoother._reorder.built:
                assert not smoother.preparing and not smoother.prepare()
                assert not smoother.update(relinearize=False).reordered     # adds nothing: waits
            for _ in range(between):
                smoother.prepare()
        assert case.exact(case.n) and smoother._tree.size == _live_size(smoother)
        assert smoother.reorders == 1
        with pytest.raises(ValueError, match='budget'):
            smoother._reorder = type('Job', (), {'built': False})()
            smoother.prepare(0)
    assert swaps[3] < swaps[0] - 3, swaps      # the slices ran between the updates


def test_a_long_stream_with_spread_reorders_and_large_children_keeps_the_batch_linear_solution(monkeypatch):
    """400 poses of laps linked to earlier laps (reorders spread over updates, children of 16
    or more variables added per run of rows, orphans re-attached below new orderings): the
    exact back-substitution is the batch Gauss-Newton step at the end."""
    n = 400
    _, edges, z = _circle_graph(n, seed=2)
    large = []
    add = bayes_tree._extend_add
    monkeypatch.setattr(bayes_tree, '_extend_add', lambda block, w, n, at, update: (
        large.append(len(at) >= bayes_tree._RUN_ROWS), add(block, w, n, at, update)))
    smoother = IncrementalSmoother(wildfire_threshold=0.0)
    stats = _stream(smoother, edges, z, n, relinearize=False)
    assert smoother.reorders >= 3 and sum(s.reordered for s in stats) == smoother.reorders
    assert sum(large) > 500
    reference = _batch_linear_solution(smoother, edges, z, n)
    assert np.abs(smoother._delta[:n] - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())


def test_a_small_clique_takes_a_child_with_zero_rows_except_in_a_small_top(monkeypatch):
    """Variables 3, 2, 1 form one clique (each one's separator the next ones: no zero), and
    variable 0, whose separator is only 1, leaves rows 2 and 3 of its column structurally zero:
    it joins (a clique of 4 frontals, ``_RELAX_SMALL``) when the top is larger than
    ``SMALL_TOP``, and keeps a clique of its own in a small top."""
    separators = {0: {1}, 1: {2, 3}, 2: {3}, 3: set()}

    def frontals(small_top: int) -> list[list[int]]:
        monkeypatch.setattr(bayes_tree, 'SMALL_TOP', small_top)
        tree = bayes_tree.BayesTree(3)
        for _ in range(4):
            tree.add_variable()
        return [clique.frontals for clique in tree._cliques([0, 1, 2, 3], separators, [])]

    assert bayes_tree._RELAX_SMALL >= 4
    assert frontals(4) == [[1, 2, 3], [0]]
    assert frontals(3) == [[0, 1, 2, 3]]


def test_small_cliques_join_their_parents_whatever_their_zeros_and_keep_the_batch_solution(monkeypatch):
    """In tops larger than ``SMALL_TOP`` and in chains refactorized in place, a clique of up to
    ``_RELAX_SMALL`` frontals takes its child's variables even where their columns have
    structural zeros: the same stream (loops, relinearization) builds fewer cliques (the
    merges that need no zero row happen either way), every separator inside its parent's
    variables, and the exact back-substitution is the batch Gauss-Newton step either way."""
    n = 300
    _, edges, z = _circle_graph(n, seed=3)
    counts = []
    for small in (0, bayes_tree._RELAX_SMALL):
        monkeypatch.setattr(bayes_tree, '_RELAX_SMALL', small)
        smoother = IncrementalSmoother(relinearize_threshold=0.01, wildfire_threshold=0.0)
        _stream(smoother, edges, z, n, offset=0.05)
        cliques = {id(c): c for c in smoother._tree.clique_of}.values()
        for clique in cliques:
            assert clique.parent is None or \
                set(clique.separator_ids) <= set(clique.parent.frontals) | set(clique.parent.separator_ids)
        counts.append(len(cliques))
        reference = _batch_linear_solution(smoother, edges, z, n)
        assert np.abs(smoother._delta[:n] - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())
        assert smoother._tree.size == _live_size(smoother)
    assert bayes_tree._RELAX_SMALL >= 2 and counts[1] < 0.8 * counts[0]


def test_chains_refactorized_in_place_are_merged_and_keep_the_batch_linear_solution(monkeypatch):
    """400 poses of laps linked to earlier laps, relinearized as they move: chains of cliques
    refactorized in place merge into their parents (relaxed supernodes). The tree stays a
    Bayes tree (every separator inside its parent's variables, every variable in the clique
    that holds it, its size counted afresh) and the exact back-substitution is the batch
    Gauss-Newton step at the linearization points."""
    n = 400
    _, edges, z = _circle_graph(n, seed=2)
    merged = []
    merge = bayes_tree.BayesTree._merge_chains
    monkeypatch.setattr(bayes_tree.BayesTree, '_merge_chains', lambda tree, kept: (
        lambda left: (merged.append(len(kept) - len(left)), left)[1])(merge(tree, kept)))
    smoother = IncrementalSmoother(relinearize_threshold=0.01, wildfire_threshold=0.0)
    stats = _stream(smoother, edges, z, n, offset=0.05)
    assert sum(merged) > 50 and sum(s.relinearized for s in stats) > 1000
    cliques = {id(c): c for c in smoother._tree.clique_of}.values()
    assert max(len(c.frontals) for c in cliques) > 1
    for clique in cliques:
        assert all(smoother._tree.clique_of[v] is clique for v in clique.frontals)
        assert all(child.parent is clique for child in clique.children)
        if clique.parent is not None:
            assert set(clique.separator_ids) <= set(clique.parent.frontals) | set(clique.parent.separator_ids)
    assert smoother._tree.size == _live_size(smoother)
    reference = _batch_linear_solution(smoother, edges, z, n)
    assert np.abs(smoother._delta[:n] - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())


def test_cliques_assembled_in_ranges_give_the_same_tree(monkeypatch):
    """Many cliques factorized at once are assembled in ranges of about ``_ASSEMBLY_ENTRIES``
    entries: with ranges of a few cliques the stream's solution is the same, bit for bit."""
    n = 150
    _, edges, z = _circle_graph(n, seed=2)
    solutions = []
    for entries in (bayes_tree._ASSEMBLY_ENTRIES, 2000):
        monkeypatch.setattr(bayes_tree, '_ASSEMBLY_ENTRIES', entries)
        smoother = IncrementalSmoother(relinearize_threshold=0.01, wildfire_threshold=0.0, reorder_slice=0)
        _stream(smoother, edges, z, n, offset=0.05)
        solutions.append(smoother._delta[:n].copy())
    assert np.array_equal(solutions[0], solutions[1])


def test_relaxed_supernodes_join_only_with_few_structural_zeros():
    """A variable joins its parent's clique when its column fills the clique's rows, or
    leaves at most one row in ``_RELAX_SHARE`` of its separator empty while the clique stays
    within ``_RELAX_FRONTALS`` frontals."""
    clique = bayes_tree.Clique([10, 11])
    clique.separator_ids = tuple(range(20, 58))            # 2 frontals, 38 separator variables
    assert bayes_tree._joins(40, clique)                   # fills all 40 rows
    assert bayes_tree._joins(36, clique)                   # 4 empty rows, at most 36 // 8
    assert not bayes_tree._joins(35, clique)               # 5 empty rows, more than 35 // 8
    small = bayes_tree.Clique([1])
    small.separator_ids = (2, 3, 4)
    assert bayes_tree._joins(4, small) and not bayes_tree._joins(3, small)   # small: no zeros
    full = bayes_tree.Clique(list(range(bayes_tree._RELAX_FRONTALS)))
    full.separator_ids = tuple(range(100, 140))
    assert bayes_tree._joins(40 + bayes_tree._RELAX_FRONTALS, full)
    assert not bayes_tree._joins(40 + bayes_tree._RELAX_FRONTALS - 1, full)


@pytest.mark.parametrize('variables, runs', [(85, 1), (85, 3), (85, 40), (20, 2), (10, 1)])
def test_extend_add_equals_the_scatter(variables, runs):
    """A child's update added into its parent's block, with slices per pair of runs of
    consecutive rows (large updates in few runs) or with flat targets, equals the plain scatter
    of every entry."""
    rng = np.random.default_rng(variables + runs)
    gaps = np.zeros(variables, dtype=np.int64)
    gaps[rng.choice(np.arange(1, variables), runs - 1, replace=False)] = rng.integers(1, 4, runs - 1)
    at = ((np.arange(variables) + np.cumsum(gaps))[:, None] * 3 + np.arange(3)).ravel()
    n = int(at[-1]) + 1 + 3 * int(rng.integers(0, 3))
    w = n + 4
    update = rng.standard_normal((len(at), len(at) + 1))
    block = rng.standard_normal(w * w)
    expected = block.copy()
    expected.reshape(w, w)[np.ix_(at, np.append(at, n))] += update
    bayes_tree._extend_add(block, w, n, at, update)
    assert np.array_equal(block, expected)


def test_reorder_factor_and_slice_are_checked():
    with pytest.raises(ValueError, match='reorder_factor'):
        IncrementalSmoother(reorder_factor=0.5)
    with pytest.raises(ValueError, match='reorder_slice'):
        IncrementalSmoother(reorder_slice=-1)


def _structure(smoother):
    """Every clique's frontals and separator, by variable."""
    return [(tuple(c.frontals), tuple(c.separator.tolist())) for c in smoother._tree.clique_of]


def test_relinearization_refactorizes_in_place_and_solves_the_batch_system(monkeypatch):
    """An update that only relinearizes (no new factor) factorizes the cliques of the moved
    variables and their ancestors again with their variables and separators unchanged; with a
    new loop closure too, the top of its variables is reordered. Either way the exact
    back-substitution is the batch Gauss-Newton step at the new linearization points. (Small
    cliques refactorized in place may merge into their parents, _RELAX_SMALL; switched off
    here, so that the structure is compared as it was.)"""
    monkeypatch.setattr(bayes_tree, '_RELAX_SMALL', 0)
    rng = np.random.default_rng(7)
    n = 120
    truth, edges, z = _circle_graph(n, seed=5)
    smoother = IncrementalSmoother(relinearize_threshold=0.01, wildfire_threshold=0.0)
    _stream(smoother, edges, z, n, offset=0.05, relinearize=False)
    before = _structure(smoother)
    stats = smoother.update()
    assert 0 < stats.relinearized < n and stats.eliminated >= stats.relinearized
    assert _structure(smoother) == before
    reference = _batch_linear_solution(smoother, edges, z, n)
    assert np.abs(smoother._delta[:n] - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())
    for _ in range(3):
        i, j = sorted(rng.choice(n - 20, 2, replace=False).tolist())
        edges.append((i, j))
        z = np.concatenate((z, SE2.between(truth[i:i + 1], truth[j:j + 1]).numpy()))
        smoother.add_between(i, j, z[-1], INFO, huber=1.0)
        stats = smoother.update()
        assert stats.relinearized > 0
        reference = _batch_linear_solution(smoother, edges, z, n)
        assert np.abs(smoother._delta[:n] - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())


def test_updates_leave_no_reference_cycles():
    """The cliques an update replaces are unlinked from each other: reference counting frees
    them at once, and a long-running node's full garbage collections find nothing of the tree
    to free (before: thousands of dead cliques in parent-child cycles, a pause of ~0.1 s).
    The collector's garbage is kept (``DEBUG_SAVEALL``) and searched for the tree's objects."""
    rng = np.random.default_rng(1)
    n = 150
    truth, edges, z = _circle_graph(n, seed=2)
    smoother = IncrementalSmoother(relinearize_threshold=0.01)

    def run():
        _stream(smoother, edges, z, n, offset=0.02)
        for _ in range(5):       # loop closures across the tree: large tops replaced
            i, j = sorted(rng.choice(n, 2, replace=False).tolist())
            smoother.add_between(i, j, SE2.between(truth[i], truth[j]).numpy(), INFO, huber=1.0)
            smoother.update()

    assert _cliques_left_in_cycles(run) == 0
    cliques = {id(c): c for c in smoother._tree.clique_of}
    assert all(id(child) in cliques for c in cliques.values() for child in c.children)


def test_a_dropped_smoother_leaves_no_reference_cycles():
    """A smoother that is dropped (as the SLAM back end drops its smoother after a batch
    re-solve or a change of weights) is freed by reference counting, its Bayes tree with it:
    the collector's garbage (kept with ``DEBUG_SAVEALL``) holds none of its cliques."""
    n = 60
    truth, edges, z = _circle_graph(n, seed=3)
    smoother = IncrementalSmoother()
    _stream(smoother, edges, z, n, offset=0.02)
    assert all(c is not None for c in smoother._tree.clique_of)
    held = [smoother]
    del smoother
    assert _cliques_left_in_cycles(held.clear) == 0


def _cliques_left_in_cycles(action) -> int:
    """The Bayes-tree cliques that ``action()`` leaves for the cycle collector: run with the
    collector off, then one collection that keeps what it finds (``DEBUG_SAVEALL``)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        action()
        gc.collect()
        return sum(isinstance(o, Clique) for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_relinearization_every_skip_updates_and_above_the_threshold():
    """With ``relinearize_skip=4`` variables are relinearized only at every 4th update, and
    only those whose solution moved more than the threshold (checked from the stats and the
    linearization points); iterating still reaches the batch optimum."""
    n = 80
    truth, edges, z = _circle_graph(n, seed=4)
    smoother = IncrementalSmoother(relinearize_threshold=0.02, relinearize_skip=4)
    stats = _stream(smoother, edges, z, n)            # updates 1..n (the first: pose 0)
    counts = [s.relinearized for s in stats]
    assert sum(counts) > 0
    assert all(c == 0 for k, c in enumerate(counts, 2) if k % 4)
    # the variables beyond the threshold, kept per solve, are those of the whole solution
    beyond = np.abs(smoother._delta[:n]).max(axis=1) > 0.02
    assert smoother._far == set(np.flatnonzero(beyond).tolist()) and beyond.any()
    before = smoother._theta.copy()
    delta = smoother._delta[:n].copy()
    smoother._updates = 3                             # the next update checks
    smoother.update()
    moved = np.abs(delta).max(axis=1) > 0.02
    assert np.array_equal(np.any(smoother._theta != before, axis=1), moved)
    assert smoother.converge(tolerance=1e-10) < 50
    batch = Optimizer(_batch(edges, z, truth)[0], max_iterations=100, rel_tol=1e-14, abs_tol=1e-14).solve()
    assert np.abs(smoother.estimate() - batch['poses'][0].numpy()).max() < 1e-6
    assert abs(smoother.error() - float(batch.error[0])) < 1e-10 * float(batch.error[0])


def _ancestors(clique) -> list:
    """``clique`` and its ancestors, up to its root."""
    line = []
    while clique is not None:
        line.append(clique)
        clique = clique.parent
    return line


def _conditionals_hold(smoother) -> float:
    """Largest ``|delta_F - (mean - gain delta_S)|`` over the cliques of the tree: 0 when
    every clique was back-substituted after its separator took its final value."""
    delta, worst = smoother._delta, 0.0
    for clique in {id(c): c for c in smoother._tree.clique_of if c is not None}.values():
        x = delta[clique.separator].ravel() if len(clique.separator) else np.zeros(0)
        expected = clique.mean - clique.gain @ x
        worst = max(worst, float(np.abs(delta[clique.frontals].ravel() - expected).max()))
    return worst


def test_first_below_splits_whole_cliques_with_descendants_first():
    """``BayesTree.first_below``: the first part is the variables of whole cliques, at most
    the bound (or one clique's), none of whose cliques is above a clique of the rest; the
    cliques returned as waiting are exactly the rest's cliques and their ancestors."""
    n = 100
    _, edges, z = _circle_graph(n, seed=8)
    smoother = IncrementalSmoother()
    _stream(smoother, edges, z, n)
    tree = smoother._tree
    variables = list(range(0, n, 3))
    for most in (1, 5, 12, 40):
        first, rest, waiting = tree.first_below(variables, most)
        assert sorted(first + rest) == variables
        cliques = {id(tree.clique_of[v]): tree.clique_of[v] for v in first}
        assert len(first) <= most or len(cliques) == 1
        for clique in cliques.values():     # whole cliques
            assert set(clique.frontals) & set(variables) <= set(first)
        above_rest = {id(c) for v in rest for c in _ancestors(tree.clique_of[v])}
        assert {id(c) for c in waiting} == above_rest
        assert not above_rest & set(cliques)
        assert 0 < len(first) < len(variables) or most >= len(variables)


def test_relinearize_max_takes_a_wave_in_parts_and_keeps_the_batch_solution(monkeypatch):
    """With ``relinearize_max=3``, the variables beyond the threshold at a check are
    relinearized over the next updates, at most 3 (or one clique's) per update, lowest in
    the tree first, although ``relinearize_skip`` would skip those updates; a variable that
    moves beyond the threshold meanwhile waits for the wave's end. Through a stream's waves
    every clique holds its conditional (those refactorized below one left for later are
    back-substituted after it, and once); after a wave the tree is exact again (the batch Gauss-Newton
    step), also when the bound is lifted in the middle of one; iterating reaches the batch
    optimum."""
    n = 80
    truth, edges, z = _circle_graph(n, seed=4)
    smoother = IncrementalSmoother(relinearize_threshold=0.02, relinearize_skip=4, relinearize_max=3,
                                   wildfire_threshold=0.0)
    update, held, repeated = smoother.update, [], []
    solve = bayes_tree.BayesTree.solve

    def once(tree, cliques, delta, threshold):
        solved = solve(tree, cliques, delta, threshold)
        repeated.append(len(solved) - len(set(solved)))
        return solved
    monkeypatch.setattr(bayes_tree.BayesTree, 'solve', once)

    def checked(**options):
        waiting = bool(smoother._wave)
        stats = update(**options)
        held.append((waiting, _conditionals_hold(smoother)))
        return stats
    smoother.update = checked
    stats = _stream(smoother, edges, z, n)
    del smoother.update
    assert any(s.relinearized and k % 4 for k, s in enumerate(stats, 2))     # parts between checks
    assert sum(waiting for waiting, _ in held) > 10 and max(worst for _, worst in held) < 1e-12
    assert len(repeated) > n // 4 and max(repeated) == 0     # (the updates that hang a leaf solve it alone)
    smoother.relinearize_max = 0
    smoother.converge(tolerance=1e-12)
    smoother.relinearize_max = 3

    def wave_of(size):
        """Solutions moved beyond the threshold on ``size`` variables; the next update checks."""
        smoother._delta[:n] = 0.0
        wave = np.arange(10, 70, 60 // size)[:size]
        smoother._delta[wave, 2] = 0.05
        smoother._far_threshold = None                    # recomputed from the solution
        smoother._updates = 3
        return wave

    wave = wave_of(10)
    before = smoother._theta.copy()
    parts = []
    while len(parts) < 10:
        stats = smoother.update()
        assert stats.relinearized > 0
        parts.append(np.flatnonzero(np.any(smoother._theta != before, axis=1)).tolist())
        before = smoother._theta.copy()
        tree = smoother._tree       # none of the part's cliques above the rest's
        above_rest = {id(c) for v in smoother._wave for c in _ancestors(tree.clique_of[v])}
        assert not above_rest & {id(tree.clique_of[v]) for v in parts[-1]}
        if not smoother._wave:
            break
    assert sorted(v for part in parts for v in part) == wave.tolist()      # each once, no other
    assert len(parts) >= 4 and all(len(part) <= 3 for part in parts[:-1])
    reference = _batch_linear_solution(smoother, edges, z, n)
    assert np.abs(smoother._delta[:n] - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())
    # lifted mid-wave: the rest of the wave goes at once, and the tree is exact again
    wave_of(10)
    assert 0 < smoother.update().relinearized <= 3 and smoother._wave
    smoother.relinearize_max = 0
    smoother.update()
    assert not smoother._wave
    reference = _batch_linear_solution(smoother, edges, z, n)
    assert np.abs(smoother._delta[:n] - reference).max() < 1e-9 * max(1.0, np.abs(reference).max())
    smoother.relinearize_max = 3
    assert smoother.converge(tolerance=1e-10) < 50 and smoother.relinearize_max == 3
    batch = Optimizer(_batch(edges, z, truth)[0], max_iterations=100, rel_tol=1e-14, abs_tol=1e-14).solve()
    assert np.abs(smoother.estimate() - batch['poses'][0].numpy()).max() < 1e-6
    with pytest.raises(ValueError, match='relinearize_max -1 is negative'):
        IncrementalSmoother(relinearize_max=-1)


def test_minimum_degree_order_and_separators():
    """The constrained variables come last in the given order; each reported separator is
    the variable's later neighbours after the fill of everything eliminated before it
    (checked by eliminating the dense adjacency pattern in that order); the order fills less
    than the natural one."""
    rng = np.random.default_rng(7)
    n = 60
    edges = np.array([(k, k + 1) for k in range(n - 1)]
                     + [(a, a + int(rng.integers(5, 20))) for a in rng.integers(0, n - 20, 30)])
    separators = [(3, 10, 11), (40, 41)]
    constrained = [20, n - 1]
    order, found = ordering.elimination_order(list(range(n)), edges, separators, constrained)
    assert order[-2:] == constrained and sorted(order) == list(range(n))

    def fill(order):
        pattern = np.zeros((n, n), dtype=bool)
        pattern[edges[:, 0], edges[:, 1]] = pattern[edges[:, 1], edges[:, 0]] = True
        for separator in separators:
            pattern[np.ix_(separator, separator)] = True
        np.fill_diagonal(pattern, False)
        result = {}
        for v in order:
            neighbours = np.nonzero(pattern[v])[0]
            result[v] = set(neighbours.tolist())
            pattern[np.ix_(neighbours, neighbours)] = True
            np.fill_diagonal(pattern, False)
            pattern[v, :] = pattern[:, v] = False
        return result

    assert found == fill(order)
    assert sum(map(len, found.values())) < sum(map(len, fill(list(range(n))).values()))


def test_bad_input_is_refused_with_the_reason():
    smoother = IncrementalSmoother()
    with pytest.raises(ValueError, match='expected the next id 0'):
        smoother.add_variable(3, np.zeros(3))
    smoother.add_variable(0, np.zeros(3))
    with pytest.raises(ValueError, match='non-finite initial'):
        smoother.add_variable(1, [np.nan, 0.0, 0.0])
    with pytest.raises(IndexError, match='only 1 variables exist'):
        smoother.add_between(0, 1, np.zeros(3), INFO)
    smoother.add_variable(1, np.zeros(3))
    with pytest.raises(ValueError, match='not \\(3, 3\\)'):
        smoother.add_between(0, 1, np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match='positive definite'):
        smoother.add_between(0, 1, np.zeros(3), -np.eye(3))
    with pytest.raises(ValueError, match='non-finite measurement'):
        smoother.add_between(0, 1, [np.inf, 0, 0], INFO)
    with pytest.raises(ValueError, match='to itself'):
        smoother.add_between(1, 1, np.zeros(3), INFO)
    smoother.add_prior(0, np.zeros(3), INFO)
    smoother.add_between(0, 1, [1.0, 0.0, 0.0], INFO)
    smoother.update()
    smoother.add_variable(2, np.zeros(3))
    smoother.add_between(1, 2, [1.0, 0.0, 0.0], INFO)
    smoother.update()          # cliques {1, 2} (the root) and {0} below it
    with pytest.raises(ValueError, match='not in a root clique'):
        smoother.marginal_covariance(0)
    assert np.allclose(smoother.estimate()[1:], [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match='relinearize_skip 0'):
        IncrementalSmoother(relinearize_skip=0)


def test_numpy_se2_factors_equal_the_torch_factors():
    """The smoother's numpy SE(2) residuals and Jacobians are those of nlls' Between and Prior
    (small angles, ordinary ones and angles near pi)."""
    from diffopt_ros.nlls.se2_numpy import between_factor, prior_factor, retract
    rng = np.random.default_rng(5)
    angles = np.concatenate((rng.uniform(-np.pi, np.pi, 20), [1e-5, -3e-4, np.pi - 1e-4, -np.pi + 2e-4]))
    n = len(angles)
    xi = np.c_[rng.normal(0, 3, (n, 2)), rng.permutation(angles)]
    xj = np.c_[rng.normal(0, 3, (n, 2)), angles]
    z = np.c_[rng.normal(0, 3, (n, 2)), rng.permutation(angles)]
    poses = Variable(SE2, torch.from_numpy(np.concatenate((xi, xj))), name='poses')
    values = [torch.from_numpy(xi)[None], torch.from_numpy(xj)[None]]
    between = Between(poses, range(n), range(n, 2 * n), torch.from_numpy(z))
    r_t, (ji_t, jj_t) = between.residual_and_jacobians(values)
    r, (ji, jj) = between_factor(z, xi, xj, True)
    for ours, theirs in ((r, r_t), (ji, ji_t), (jj, jj_t)):
        assert np.allclose(ours, theirs[0].numpy(), rtol=1e-10, atol=1e-12)
    r_t, (j_t,) = Prior(poses, range(n), torch.from_numpy(z)).residual_and_jacobians(values[:1])
    r, (j,) = prior_factor(z, xi, True)
    assert np.allclose(r, r_t[0].numpy(), atol=1e-12) and np.allclose(j, j_t[0].numpy(), atol=1e-10)
    d = np.c_[rng.normal(0, 1, (n, 2)), rng.permutation(angles)]
    assert np.allclose(retract(xi, d), SE2.retract(torch.from_numpy(xi), torch.from_numpy(d)).numpy(),
                       atol=1e-12)


def test_few_factors_and_poses_on_floats_equal_the_array_code():
    """:func:`se2_numpy.linearize_few` (the rows ``[J_i J_j -r]`` of a few betweens and priors
    together) and the row-by-row :func:`se2_numpy.retract` of up to ``FEW`` poses equal the
    array code (ordinary angles, small ones, zero and angles near pi)."""
    from diffopt_ros.nlls import se2_numpy
    rng = np.random.default_rng(11)
    angles = np.concatenate((rng.uniform(-np.pi, np.pi, 12), [0.0, 1e-5, -3e-4, np.pi - 1e-4]))
    n = len(angles)
    xi = np.c_[rng.normal(0, 3, (n, 2)), rng.permutation(angles)]
    xj = np.c_[rng.normal(0, 3, (n, 2)), angles]
    z = np.c_[rng.normal(0, 3, (n, 2)), rng.permutation(angles)]
    r, (ji, jj) = se2_numpy.between_factor(z, xi, xj, True)
    expected = np.concatenate((ji, jj, -r[:, :, None]), axis=2)
    r, (j,) = se2_numpy.prior_factor(z, xi, True)
    prior = np.concatenate((j, np.zeros((n, 3, 3)), -r[:, :, None]), axis=2)
    is_prior = rng.random(n) < 0.3
    expected[is_prior] = prior[is_prior]
    rows = se2_numpy.linearize_few(z.tolist(), xi.tolist(),
                                   [None if p else x for p, x in zip(is_prior, xj.tolist())])
    assert rows.shape == (n, 3, 7) and 0 < is_prior.sum() < n
    assert np.allclose(rows, expected, rtol=1e-12, atol=1e-12)
    d = np.c_[rng.normal(0, 1, (n, 2)), rng.permutation(angles)]
    assert n <= se2_numpy.FEW
    many = se2_numpy.retract(np.tile(xi, (3, 1)), np.tile(d, (3, 1)))        # the array code
    assert np.allclose(se2_numpy.retract(xi, d), many[:n], rtol=1e-12, atol=1e-12)


def test_small_tops_assembled_clique_by_clique_equal_the_vectorized_scatter(monkeypatch):
    """Tops of up to ``SMALL_TOP`` variables (the online update: the new pose and the root)
    are assembled clique by clique, and up to ``FEW`` factors linearized and poses retracted
    on Python floats; with those paths switched off every top goes through the vectorized
    scatter and the array code. Both give the same linearization points and solution after every
    update of a stream with loop closures (Huber), relinearization and wildfire (new poses
    start 2 cm / 0.02 rad off their odometry guess, so that every update has a non-zero
    right-hand side), and both converge to batch Levenberg-Marquardt. (Small cliques join
    their parents in tops larger than ``SMALL_TOP``, _RELAX_SMALL: switched off in both runs,
    so that the two build the same tree.)"""
    from diffopt_ros.nlls import bayes_tree, se2_numpy
    monkeypatch.setattr(bayes_tree, '_RELAX_SMALL', 0)
    n = 90
    truth, edges, z = _circle_graph(n, seed=6)
    runs = []
    for small, few in ((bayes_tree.SMALL_TOP, se2_numpy.FEW), (0, 0)):
        monkeypatch.setattr(bayes_tree, 'SMALL_TOP', small)
        monkeypatch.setattr(se2_numpy, 'FEW', few)
        smoother = IncrementalSmoother(relinearize_threshold=0.01)
        states = []
        stats = _stream(smoother, edges, z, n, states, offset=0.02)
        assert sum(s.relinearized for s in stats) > 0 and max(s.eliminated for s in stats) > 2 * small
        assert smoother.converge(tolerance=1e-10) < 50
        runs.append((states, smoother.estimate()))
    (states, estimate), (reference_states, reference_estimate) = runs
    assert len(states) == n - 1
    for (theta, delta), (theta_ref, delta_ref) in zip(states, reference_states):
        assert np.abs(theta - theta_ref).max() < 1e-9 and np.abs(delta - delta_ref).max() < 1e-9
    batch = Optimizer(_batch(edges, z, truth)[0], max_iterations=100, rel_tol=1e-14, abs_tol=1e-14).solve()
    for ours in (estimate, reference_estimate):
        assert np.abs(ours - batch['poses'][0].numpy()).max() < 1e-6


def test_wildfire_solve_equals_the_rule_applied_to_every_clique(monkeypatch):
    """``BayesTree.solve`` against the wildfire rule written out: solve the re-eliminated
    cliques, then, top down, every clique one of whose separator components changed by more
    than the threshold (leaves included in the comparison); after every update of a stream
    with loop closures and relinearization, both give the same solution and solve the same
    variables, and some updates stop the wildfire above some cliques."""
    from diffopt_ros.nlls import bayes_tree

    def reference(cliques, delta, threshold):
        delta, changed, solved = delta.copy(), set(), []
        fresh = {id(clique) for clique in cliques}

        def visit(clique, forced):
            if not forced and not changed & set(clique.separator.tolist()):
                return
            x = delta[clique.separator].ravel() if len(clique.separator) else np.zeros(0)
            new = (clique.mean - clique.gain @ x).reshape(-1, 3)
            changed.update(v for v, step in zip(clique.frontals, np.abs(new - delta[clique.frontals]))
                           if (step > threshold).any())
            delta[clique.frontals] = new
            solved.extend(clique.frontals)
            for child in clique.children:
                if id(child) not in fresh:
                    visit(child, False)
        for clique in cliques:      # parents first; a fresh child comes after its parent
            visit(clique, True)
        return delta, sorted(solved)

    checked, partial = [0], [0]
    solve = bayes_tree.BayesTree.solve

    def compared(tree, cliques, delta, threshold):
        expected, expected_solved = reference(cliques, delta, threshold)
        solved = solve(tree, cliques, delta, threshold)
        assert sorted(solved) == expected_solved
        assert np.array_equal(delta, expected)
        checked[0] += 1
        partial[0] += len(solved) < sum(c is not None for c in tree.clique_of)
        return solved
    monkeypatch.setattr(bayes_tree.BayesTree, 'solve', compared)
    n = 90
    _, edges, z = _circle_graph(n, seed=6)
    _stream(IncrementalSmoother(relinearize_threshold=0.01, wildfire_threshold=1e-3), edges, z, n,
            offset=0.02)
    assert checked[0] > n // 2 and partial[0] > checked[0] // 2     # (a leaf hung is solved alone)


class _LeafStream:
    """Poses fed one at a time, each with two factors to the previous one (odometry, and a
    Huber one that disagrees a little, as a scan match adds): the edges kept for the batch."""

    def __init__(self, smoother, n, seed=5):
        self.smoother, self.rng = smoother, np.random.default_rng(seed)
        self.truth, _, _ = _circle_graph(n + 2)
        self.edges, self.z, self.robust = [], np.zeros((0, 3)), []
        smoother.add_variable(0, np.zeros(3))
        smoother.add_prior(0, np.zeros(3), 1e6 * np.eye(3))
        smoother.update(relinearize=False)

    def add_edge(self, i, j, measurement, huber):
        self.edges.append((i, j))
        self.z = np.concatenate((self.z, measurement[None]))
        self.robust.append(huber > 0)
        self.smoother.add_between(i, j, measurement, INFO, huber=huber)

    def add_pose(self, k, offset=0.02, flip=(False, False), **update):
        """Add pose ``k`` and its two factors to pose k-1 (each from pose k instead where
        ``flip`` says), update."""
        truth, rng, smoother = self.truth, self.rng, self.smoother
        odometry = SE2.retract(SE2.between(truth[k - 1], truth[k]), torch.tensor(rng.normal(0, 0.02, 3)))
        guess = SE2.compose(torch.from_numpy(smoother.estimate_of(k - 1)), odometry)
        smoother.add_variable(k, guess.numpy() + rng.normal(0, offset, 3))
        scan = SE2.retract(odometry, torch.tensor(rng.normal(0, 0.05, 3)))
        for measurement, huber, backwards in ((odometry, 0.0, flip[0]), (scan, 1.0, flip[1])):
            if backwards:
                self.add_edge(k, k - 1, SE2.inverse(measurement).numpy(), huber)
            else:
                self.add_edge(k - 1, k, measurement.numpy(), huber)
        return smoother.update(**update)

    def assert_batch(self, k):
        """The solution is the batch Gauss-Newton step at the linearization points."""
        reference = _batch_linear_solution(self.smoother, self.edges, self.z, k + 1, self.robust)
        error = np.abs(self.smoother._delta[:k + 1] - reference).max()
        assert error < 1e-9 * max(1.0, np.abs(reference).max())

    def assert_marginal(self, k):
        """The marginal of the newest pose ``k`` is the batch one."""
        H, _ = _batch_linear_system(self.smoother, self.edges, self.z, self.robust)
        covariance = torch.linalg.inv(H)[-3:, -3:].numpy()
        error = np.abs(self.smoother.marginal_covariance(k) - covariance).max()
        assert error < 1e-9 * np.abs(covariance).max()


def test_a_pose_joined_to_one_pose_is_hung_as_a_leaf_with_the_batch_solution_and_marginal():
    """A new pose whose factors all join it to one pose (from it, to it, or both) is eliminated
    alone below that pose (one clique, one conditional solved, its factors' update on the
    separator zero up to rounding), also in a chain of such leaves, and the solution stays the
    batch Gauss-Newton step. The
    marginal of the newest leaf is the batch one; after an update that re-eliminated the top
    (a loop closure between older poses) the leaves' marginals no longer hold, and a pose
    joined to one of them takes the general path."""
    n = 40
    smoother = IncrementalSmoother(wildfire_threshold=0.0, reorder_factor=0)
    stream = _LeafStream(smoother, n)
    for k in range(1, n):
        stats = stream.add_pose(k, flip=(k % 3 == 0, k % 3 == 0 or k % 2 == 1), relinearize=False)
        leaf = smoother._tree.clique_of[k]
        assert stats.eliminated == stats.solved == 1, (k, stats)    # the first below the root
        assert leaf.separator_ids == (k - 1,) and leaf.frontals == [k]
        # its factors' Schur complement on pose k-1 (the leaf's update, taken as zero) vanishes
        A = np.zeros((6, 7))           # rows and columns: pose k-1, pose k, the vector
        for f in smoother._factors.of_variable[k]:
            system = smoother._factors.system[f]
            order = [0, 1, 2, 3, 4, 5] if smoother._factors.pairs[f][0] == k - 1 else [3, 4, 5, 0, 1, 2]
            A[np.ix_(order, order + [6])] += system[:6]
        on = [0, 1, 2, 6]
        schur = A[:3, on] - A[:3, 3:6] @ np.linalg.solve(A[3:6, 3:6], A[3:6, on])
        assert np.abs(schur).max() < 1e-9 * np.abs(A).max()
        stream.assert_batch(k)
    stream.assert_marginal(n - 1)
    # a loop closure between older poses re-eliminates the top: the leaves' marginals are gone
    stream.add_edge(3, 20, SE2.between(stream.truth[3], stream.truth[20]).numpy(), 1.0)
    assert smoother.update(relinearize=False).eliminated > 1
    stream.assert_batch(n - 1)
    stats = stream.add_pose(n, relinearize=False)
    assert stats.eliminated > 1              # pose n-1: a leaf hung before the loop closure
    stream.assert_batch(n)
    stream.assert_marginal(n)


def test_a_chain_of_leaves_is_bounded_so_that_a_link_to_the_newest_pose_stays_small(monkeypatch):
    """An exploration without loop closures hangs each new pose below the last one: a chain of
    leaves, newest deepest, which the next update touching the newest pose re-eliminates whole
    (its ancestors). At most ``MAX_LEAVES`` leaves hang between updates that re-eliminate a
    top, so a link from the newest pose to the one two before it re-eliminates about that many
    variables, where without the bound it re-eliminates the whole exploration; the solution
    and the newest marginal are the batch ones either way."""
    from diffopt_ros.nlls import bayes_tree
    n = 50
    for bound in (8, None):
        monkeypatch.setattr(bayes_tree, 'MAX_LEAVES', bound or n + 10)
        smoother = IncrementalSmoother(wildfire_threshold=0.0, reorder_factor=0)
        stream = _LeafStream(smoother, n)
        run = longest = 0
        for k in range(1, n):
            stats = stream.add_pose(k, relinearize=False)
            run = run + 1 if stats.eliminated == stats.solved == 1 else 0
            longest = max(longest, run)
        stream.assert_batch(n - 1)
        stream.add_edge(n - 3, n - 1, SE2.between(stream.truth[n - 3], stream.truth[n - 1]).numpy(), 1.0)
        stats = smoother.update(relinearize=False)
        if bound:
            assert longest == bound and stats.eliminated <= bound + 2, (longest, stats)
        else:
            assert longest == n - 1 and stats.eliminated == n, (longest, stats)
        stream.assert_batch(n - 1)
        stream.assert_marginal(n - 1)


def test_a_leaf_beyond_the_threshold_is_relinearized_at_once_or_in_the_next_update():
    """New poses guessed 5 cm / 0.05 rad off: each update hangs the new pose and relinearizes it
    at once (a Gauss-Newton step or two on that pose alone) until its solution is within the
    threshold, so the next update hangs the next one; the solution is the batch step at the
    linearization points and the marginal the batch one. A leaf that moved beyond the
    threshold later, with nothing below it, is factorized again in the next update, the new
    pose hung below it (two leaves); one with a leaf below it takes the general path."""
    n = 30
    smoother = IncrementalSmoother(relinearize_threshold=0.01, wildfire_threshold=0.0, reorder_factor=0)
    stream = _LeafStream(smoother, n)
    for k in range(1, n):
        stats = stream.add_pose(k, offset=0.05)
        assert stats.eliminated == stats.solved == 1 and stats.relinearized >= 1, (k, stats)
        assert np.abs(smoother._delta[k]).max() <= 0.01
        stream.assert_batch(k)
    stream.assert_marginal(n - 1)
    smoother._delta[n - 1] += 0.02          # the tip moved beyond the threshold
    smoother._far.add(n - 1)
    tip = smoother._tree.clique_of[n - 1]
    stats = stream.add_pose(n)
    assert stats.eliminated == stats.solved == 2 and stats.relinearized >= 1, stats
    assert smoother._tree.clique_of[n - 1] is tip and smoother._tree.clique_of[n].parent is tip
    stream.assert_batch(n)
    stream.assert_marginal(n)
    smoother._delta[n - 1] += 0.02          # with pose n hung below it
    smoother._far.add(n - 1)
    stats = stream.add_pose(n + 1)
    assert stats.eliminated > 2, stats
    stream.assert_batch(n + 1)
    stream.assert_marginal(n + 1)
