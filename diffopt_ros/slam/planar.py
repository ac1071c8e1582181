"""SE(2) on Python floats ``(x, y, yaw)`` for per-scan bookkeeping: a few scalar operations,
where torch's per-call overhead would dominate (the tensor versions are
:class:`diffopt_ros.lie.SE2`), and a pose applied to a numpy point array. Angles in rad,
wrapped to ``[-pi, pi]``."""
from __future__ import annotations

import math

import numpy as np

Pose = tuple[float, float, float]


def compose(a, b) -> Pose:
    """``a * b``."""
    c, s = math.cos(a[2]), math.sin(a[2])
    return (a[0] + c * b[0] - s * b[1], a[1] + s * b[0] + c * b[1],
            math.remainder(a[2] + b[2], 2 * math.pi))


def inverse(a) -> Pose:
    """``a^-1``."""
    c, s = math.cos(a[2]), math.sin(a[2])
    return (-c * a[0] - s * a[1], s * a[0] - c * a[1], -a[2])


def between(a, b) -> Pose:
    """``a^-1 * b``."""
    return compose(inverse(a), b)


def transform(pose, points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points (m, float64) of a frame at ``pose`` in the frame ``pose`` is given in:
    ``R(yaw) p + (x, y)`` per row."""
    c, s = math.cos(pose[2]), math.sin(pose[2])
    return points @ np.array([[c, s], [-s, c]]) + (pose[0], pose[1])
