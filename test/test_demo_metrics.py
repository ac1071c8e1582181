"""The demo's metrics (diffopt_ros.demo.metrics) on trajectories with known errors."""
import math

import numpy as np

from diffopt_ros.demo import metrics


def test_metrics_on_known_trajectories():
    t = np.linspace(0.0, 10.0, 101)
    truth = np.column_stack([t, np.zeros_like(t), np.zeros_like(t)])
    # An estimate in a frame rotated by 90 deg and shifted, 0.1 m off to the left in truth.
    est_truth = truth + [0.0, 0.1, 0.0]
    to_frame, from_frame = metrics.se2_maps([2.0, -1.0, math.pi / 2])
    est = to_frame(est_truth)
    np.testing.assert_allclose(from_frame(est), est_truth, atol=1e-12)
    aligned = metrics.align_to_first_pose(t, est, t, truth)
    assert math.isclose(metrics.position_rmse(t, aligned, t, truth), 0.0, abs_tol=1e-12)  # first pose
    assert math.isclose(metrics.position_rmse(t, est_truth, t, truth), 0.1, rel_tol=1e-9)
    assert math.isclose(metrics.path_length(truth), 10.0)


def test_path_deviation_follows_the_plan_in_force():
    # Along x at y = 0.1 for 10 s; a first plan along y = 0 (deviation 0.1 m), replaced at t = 5 s
    # by one along y = 0.4 (0.3 m); an empty plan (unreachable goal) from t = 8 s counts nothing.
    t = np.linspace(0.0, 10.0, 101)
    positions = np.column_stack([t, np.full_like(t, 0.1)])
    plans = [(0.0, np.array([[0.0, 0.0], [10.0, 0.0]])), (5.0, np.array([[0.0, 0.4], [10.0, 0.4]])),
             (8.0, np.zeros((0, 2)))]
    np.testing.assert_allclose(metrics.distance_to_path(np.array([[5.0, 0.1], [12.0, 0.0], [-3.0, 4.0]]),
                                                        plans[0][1]), [0.1, 2.0, 5.0])
    first, second = (t < 5.0), (t >= 5.0) & (t < 8.0)
    expected = math.sqrt((first.sum() * 0.1 ** 2 + second.sum() * 0.3 ** 2) / (first.sum() + second.sum()))
    assert math.isclose(metrics.path_deviation(t, positions, plans, [(0.0, 10.0)]), expected)
    # only while a goal is driven to: the interval [0, 4] sees the first plan only
    assert math.isclose(metrics.path_deviation(t, positions, plans, [(0.0, 4.0)]), 0.1)
    assert math.isnan(metrics.path_deviation(t, positions, [], [(0.0, 10.0)]))
