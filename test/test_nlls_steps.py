"""Work split into steps (nlls.steps) and the Bayes tree's full elimination as steps."""
import numpy as np
import pytest

from diffopt_ros.nlls import steps
from diffopt_ros.nlls.bayes_tree import BayesTree
from diffopt_ros.nlls.incremental import IncrementalSmoother


def _work(units):
    """Steps that yield ``units`` one after another and return how many there were."""
    yield from units
    return len(units)


def test_drain_runs_to_the_end_and_advance_stops_once_its_budget_is_spent():
    assert steps.drain(_work([3, 4, 5])) == 3
    work = _work([3, 4, 5, 6])
    assert steps.advance(work, 5) == (False, None)      # 3 + 4 >= 5: stops after the second
    assert steps.advance(work, 5) == (False, None)      # 5 >= 5
    assert steps.advance(work, 5) == (False, None)      # 6
    assert steps.advance(work, 5) == (True, 4)          # nothing left: ended
    assert steps.advance(_work([1, 1]), 0) == (True, 2)  # budget 0: to the end at once


def test_eliminate_all_in_steps_equals_it_in_one_and_refuses_an_eliminated_tree():
    """The full elimination of a small pose graph gives the same cliques, separators and
    conditionals whether it runs in one step or in many small ones; a tree that has
    eliminated variables already is refused when the work starts."""
    smoother = IncrementalSmoother(reorder_factor=0)
    smoother.add_variable(0, np.zeros(3))
    smoother.add_prior(0, np.zeros(3), 1e4 * np.eye(3))
    for k in range(1, 30):
        smoother.add_variable(k, [0.5 * k, 0.0, 0.0])
        smoother.add_between(k - 1, k, [0.5, 0.0, 0.0], 100 * np.eye(3))
        if k >= 10:
            smoother.add_between(k - 10, k, [5.0, 0.0, 0.0], 100 * np.eye(3))
    smoother.update(relinearize=False)
    factors = smoother._factors.snapshot(smoother.num_factors)
    trees, counts = [], []
    for chunk in (0, 4):
        tree = BayesTree(3)
        for _ in range(30):
            tree.add_variable()
        work = tree.eliminate_all(factors, [29], chunk)
        count = 0
        while not steps.advance(work, 1)[0]:
            count += 1
        trees.append(tree)
        counts.append(count)
    assert counts[0] == 0 and counts[1] > 30
    for a, b in zip(*(t.clique_of for t in trees)):
        assert a.frontals == b.frontals and a.separator_ids == b.separator_ids
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.gain, b.gain)
    with pytest.raises(ValueError, match='eliminated variables already'):
        steps.drain(trees[0].eliminate_all(factors, [29]))
