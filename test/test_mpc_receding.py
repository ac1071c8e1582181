"""The ROS-free receding-horizon pieces of mpc_node: references and warm-start shifting."""
import math

import numpy as np

from diffopt_ros.mpc.receding import (
    advance_plan,
    goal_reference,
    path_reference,
    timed_reference,
)


def test_goal_reference_points_at_the_goal_the_short_way_round():
    state = np.array([0.0, 0.0, 3.0, 0.0, 0.0])        # facing almost -x
    ref = goal_reference(state, np.array([-1.0, -0.1]), horizon=4)
    assert ref.shape == (4, 5)
    np.testing.assert_allclose(ref[:, :2], [[-1.0, -0.1]] * 4)
    bearing = math.atan2(-0.1, -1.0)                    # about -3.04 rad
    assert abs(ref[0, 2] - (bearing + 2 * math.pi)) < 1e-12   # unwrapped near yaw 3.0
    assert np.all(ref[:, 3:] == 0)


def test_path_reference_advances_along_the_path_from_the_projection():
    path = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 2.0, 0.0]])
    state = np.array([0.5, 0.3, 0.0, 0.0, 0.0])
    ref, progress = path_reference(state, path, 0.0, horizon=20, dt=0.1, speed=1.0)
    assert math.isclose(progress, 0.5)
    np.testing.assert_allclose(ref[0, :2], [0.6, 0.0], atol=1e-12)
    np.testing.assert_allclose(ref[14, :2], [2.0, 0.0], atol=1e-12)   # s = 2.0: the corner
    np.testing.assert_allclose(ref[16, :2], [2.0, 0.2], atol=1e-12)
    assert ref[0, 2] == 0.0 and math.isclose(ref[16, 2], math.pi / 2)
    np.testing.assert_allclose(ref[-1, :2], [2.0, 0.5], atol=1e-12)   # s = 2.5
    assert np.all(ref[:, 3] == 1.0)
    # Near the end the reference stops at the last point with zero speed.
    ref, progress = path_reference(np.array([2.0, 1.9, 1.5, 0, 0]), path, progress, 5, 0.1, 1.0)
    np.testing.assert_allclose(ref[-1], [2.0, 2.0, math.pi / 2, 0.0, 0.0], atol=1e-12)


def test_path_reference_follows_a_self_crossing_path_in_order():
    # A figure that passes (1, 0) twice: on the way out and on the way back.
    path = np.array([[0, 0], [2, 0], [2, 1], [1, 1], [1, -1]], dtype=float)
    state = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    _, progress = path_reference(state, path, 0.0, 5, 0.1, 0.5)
    assert math.isclose(progress, 1.0)                  # the first pass, not s = 5
    _, later = path_reference(state, path, 4.0, 5, 0.1, 0.5)
    assert math.isclose(later, 5.0)                     # once past, the second pass


def test_timed_reference_interpolates_in_time_and_holds_the_end():
    path = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    times = np.array([10.0, 12.0, 14.0])
    ref = timed_reference(np.zeros(5), path, times, now=11.0, horizon=40, dt=0.1)
    np.testing.assert_allclose(ref[0, :2], [0.55, 0.0], atol=1e-12)   # t = 11.1
    assert math.isclose(ref[0, 3], 0.5)
    np.testing.assert_allclose(ref[19, :2], [1.0, 0.5], atol=1e-12)   # t = 13.0
    np.testing.assert_allclose(ref[-1, :2], [1.0, 1.0], atol=1e-12)   # after the end
    assert ref[-1, 3] == 0.0


def test_advance_plan_zero_order_hold():
    controls = np.arange(8.0).reshape(4, 2)
    np.testing.assert_array_equal(advance_plan(controls, 0.05, 0.1), controls)
    np.testing.assert_array_equal(advance_plan(controls, 0.1, 0.1)[:, 0], [2, 4, 6, 6])
    np.testing.assert_array_equal(advance_plan(controls, 0.25, 0.1, hold_last=False)[:, 0],
                                  [4, 6, 0, 0])
    assert np.all(advance_plan(controls, 1.0, 0.1, hold_last=False) == 0)
