"""The demo's metrics (diffopt_ros.demo.metrics) on trajectories with known errors."""
import math

import numpy as np

from diffopt_ros.demo import metrics
from diffopt_ros.demo.course import Leg


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
    leg = Leg(start=np.zeros(2), goal=np.array([4.0, 0.0]), t0=1.0, speed=1.0, turn=1.0)
    assert leg.duration == 5.0
    times, points = leg.waypoints(0.5)
    assert np.all(np.diff(times) > 0) and times[0] == 1.0 and times[-1] == 6.0
    np.testing.assert_allclose(points[[0, 1, -1]], [[0, 0], [0, 0], [4, 0]])
    # The robot 1 s behind the reference while moving: error 1 m over the 4 moving seconds.
    robot = np.column_stack([np.clip(t - 3.0, 0.0, 4.0), np.zeros_like(t)])
    inside = (t >= 1.0) & (t <= 8.0)
    expected = np.sqrt(np.mean((leg.reference(t[inside])[:, 0] - robot[inside, 0]) ** 2))
    assert math.isclose(metrics.tracking_rmse([(leg, 8.0)], t, robot), expected)
    assert 0.5 < expected < 1.0
    # An estimate that jumps 0.3 m sideways at t = 5 s (a loop closure) while the wheels drive on.
    estimate = truth.copy()
    estimate[t >= 5.0, 1] += 0.3
    jumps = metrics.estimate_jumps(t, estimate, t, truth, threshold=0.1)
    assert len(jumps) == 1 and math.isclose(jumps[0][0], 5.0)
    assert math.isclose(jumps[0][1], math.hypot(0.1, 0.3) - 0.1)   # moved minus driven
    assert metrics.estimate_jumps(t, truth, t, truth) == []
    # Leaving out the settling time after it: only the samples inside the interval are dropped.
    ref_leg = Leg(start=np.zeros(2), goal=np.array([10.0, 0.0]), t0=0.0, speed=1.0)
    assert math.isclose(metrics.tracking_rmse([(ref_leg, 10.0)], t, estimate, [(5.0, 10.0)]), 0.0,
                        abs_tol=1e-12)
    assert metrics.tracking_rmse([(ref_leg, 10.0)], t, estimate) > 0.2
