"""Alignment of recorded topics by time and windows for learning."""

import numpy as np
import pytest

from diffopt_ros.bag import hold, interpolate_states
from diffopt_ros.bag.align import window_starts


def _states(t):
    """A robot turning through +-pi: yaw wraps in the samples."""
    yaw = np.angle(np.exp(1j * (2.5 + 1.0 * t)))
    return np.column_stack([np.cos(t), np.sin(t), yaw, 0.5 + 0 * t, 1.0 + 0 * t])


def test_interpolation_is_linear_and_yaw_continuous_across_pi():
    t = np.linspace(0.0, 2.0, 21)
    tq = np.array([0.0, 0.05, 0.63, 0.67, 1.999, 2.0, 2.5, -0.1])
    x, ok = interpolate_states(t, _states(t), tq)
    np.testing.assert_array_equal(ok, [True] * 6 + [False] * 2)
    assert np.isnan(x[~ok]).all()
    # yaw 2.5 + t crosses pi at t = 0.64: interpolated on the continuous branch
    np.testing.assert_allclose(x[ok, 2], 2.5 + tq[ok], atol=1e-12)
    lo, hi = 6, 7  # samples around t = 0.63
    w = (0.63 - t[lo]) / (t[hi] - t[lo])
    np.testing.assert_allclose(x[2, :2], (1 - w) * _states(t)[lo, :2] + w * _states(t)[hi, :2])


def test_gaps_in_the_state_topic_invalidate_queries():
    t = np.array([0.0, 0.1, 0.2, 1.0, 1.1])
    _, ok = interpolate_states(t, _states(t), np.array([0.15, 0.5, 1.05]), max_gap=0.3)
    np.testing.assert_array_equal(ok, [True, False, True])


def test_hold_takes_the_latest_command_and_respects_max_age():
    t = np.array([0.0, 1.0, 2.0])
    u = np.array([[1.0, 0.1], [2.0, 0.2], [3.0, 0.3]])
    held, ok = hold(t, u, np.array([-0.5, 0.0, 0.99, 1.0, 2.7, 5.0]), max_age=1.0)
    np.testing.assert_array_equal(ok, [False, True, True, True, True, False])
    np.testing.assert_array_equal(held[ok, 0], [1.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match='not sorted'):
        hold(t[::-1], u, t)


def test_window_starts_skip_every_invalid_stretch():
    valid = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 1], bool)
    np.testing.assert_array_equal(window_starts(valid, 3), [0, 4, 5])
    np.testing.assert_array_equal(window_starts(valid, 20), [])
    with pytest.raises(ValueError):
        window_starts(valid, 0)
