"""SE(2) factors in float64 numpy for the incremental smoother.

The closed forms of :class:`diffopt_ros.lie.SE2` (same conventions: poses ``(x, y, theta)``,
tangent ``(v_x, v_y, omega)``, right perturbations, Taylor series below ``SMALL_ANGLE``) on
``(E, 3)`` arrays: an incremental update linearizes a few factors, where torch's per-call
overhead would cost ten times the arithmetic (tested against the torch factors).
:func:`linearize_few` (and :func:`retract` of up to ``FEW`` poses) evaluate the same closed
forms one factor or pose at a time on Python floats: for the two or three factors of a typical
online update that is five to ten times faster than the array code, whose ~50 numpy calls
cost more than the arithmetic.
"""
from __future__ import annotations

import math

import numpy as np

from diffopt_ros.lie._util import SMALL_ANGLE, wrap_angle

FEW = 16      # up to this many factors or poses, the closed forms are evaluated one by one
_TWO_PI = 2 * math.pi


def _coefficients(theta: np.ndarray):
    """``sin t / t, (1 - cos t) / t, (1 - cos t) / t^2, (t - sin t) / t^2``."""
    small = np.abs(theta) < SMALL_ANGLE
    t = np.where(small, 1.0, theta)
    s, c, t2 = np.sin(t), np.cos(t), theta * theta
    return (np.where(small, 1 - t2 / 6 + t2 * t2 / 120, s / t),
            np.where(small, theta / 2 - theta * t2 / 24, (1 - c) / t),
            np.where(small, 0.5 - t2 / 24, (1 - c) / (t * t)),
            np.where(small, theta / 6 - theta * t2 / 120, (t - s) / (t * t)))


def _between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a^-1 b`` for ``(E, 3)`` poses."""
    c, s = np.cos(a[:, 2]), np.sin(a[:, 2])
    dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    return np.stack((c * dx + s * dy, -s * dx + c * dy, wrap_angle(b[:, 2] - a[:, 2])), axis=1)


def _log(g: np.ndarray) -> np.ndarray:
    w = wrap_angle(g[:, 2])
    small = np.abs(w) < SMALL_ANGLE
    t = np.where(small, 1.0, w)
    alpha = np.where(small, 1 - w * w / 12, t * np.sin(t) / (2 * (1 - np.cos(t))))
    beta = w / 2
    return np.stack((alpha * g[:, 0] + beta * g[:, 1], -beta * g[:, 0] + alpha * g[:, 1], w), axis=1)


def retract(g: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``g exp(d)`` for ``(E, 3)`` poses and tangents (row by row on Python floats up to
    ``FEW`` rows, :func:`retract_few`)."""
    if len(g) <= FEW:
        return np.array(retract_few(g.tolist(), d.tolist())).reshape(-1, 3)
    sinc, cosc, _, _ = _coefficients(d[:, 2])
    x, y = sinc * d[:, 0] - cosc * d[:, 1], cosc * d[:, 0] + sinc * d[:, 1]
    c, s = np.cos(g[:, 2]), np.sin(g[:, 2])
    return np.stack((g[:, 0] + c * x - s * y, g[:, 1] + s * x + c * y, wrap_angle(g[:, 2] + d[:, 2])), axis=1)


def retract_few(g, d) -> list[tuple[float, float, float]]:
    """:func:`retract` of sequences of poses ``g`` and tangents ``d`` (3 floats each), pose by
    pose on Python floats."""
    rows, cos, sin = [], math.cos, math.sin
    for (gx, gy, gt), (dx, dy, dt) in zip(g, d):
        sinc, cosc, _, _ = _coefficients_of(dt)
        x, y = sinc * dx - cosc * dy, cosc * dx + sinc * dy
        c, s = cos(gt), sin(gt)
        rows.append((gx + c * x - s * y, gy + s * x + c * y, _wrap(gt + dt)))
    return rows


def _right_jacobian_inv(xi: np.ndarray) -> np.ndarray:
    vx, vy, w = xi[:, 0], xi[:, 1], xi[:, 2]
    sinc, cosc, k1, k2 = _coefficients(w)
    det = sinc * sinc + cosc * cosc
    a, b = sinc / det, cosc / det
    c13, c23 = vx * k2 - vy * k1, vx * k1 + vy * k2
    out = np.zeros((len(xi), 3, 3))
    out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = a, -b, -(a * c13 - b * c23)
    out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = b, a, -(b * c13 + a * c23)
    out[:, 2, 2] = 1.0
    return out


def between_factor(z: np.ndarray, xi: np.ndarray, xj: np.ndarray, jacobians: bool):
    """Residual ``log(z^-1 x_i^-1 x_j)`` ``(E, 3)`` and its Jacobians ``[(E, 3, 3)] * 2``
    (those of :class:`~diffopt_ros.nlls.factors.Between`)."""
    rel = _between(xi, xj)
    r = _log(_between(z, rel))
    if not jacobians:
        return r, []
    j_inv = _right_jacobian_inv(r)
    # Ad(rel^-1) = [[c, s, y'], [-s, c, -x'], [0, 0, 1]], (x', y') the translation of rel^-1
    c, s = np.cos(rel[:, 2]), np.sin(rel[:, 2])
    inv_x, inv_y = -(c * rel[:, 0] + s * rel[:, 1]), -(-s * rel[:, 0] + c * rel[:, 1])
    adjoint = np.zeros_like(j_inv)
    adjoint[:, 0, 0], adjoint[:, 0, 1], adjoint[:, 0, 2] = c, s, inv_y
    adjoint[:, 1, 0], adjoint[:, 1, 1], adjoint[:, 1, 2] = -s, c, -inv_x
    adjoint[:, 2, 2] = 1.0
    return r, [-(j_inv @ adjoint), j_inv]


def prior_factor(z: np.ndarray, x: np.ndarray, jacobians: bool):
    r = _log(_between(z, x))
    return r, ([_right_jacobian_inv(r)] if jacobians else [])


def _wrap(t: float) -> float:
    """:func:`~diffopt_ros.lie._util.wrap_angle` of one Python float, without its type checks."""
    return t - _TWO_PI * math.ceil((t - math.pi) / _TWO_PI)


def _coefficients_of(t: float) -> tuple[float, float, float, float]:
    """:func:`_coefficients` of one angle."""
    t2 = t * t
    if abs(t) < SMALL_ANGLE:
        return 1 - t2 / 6 + t2 * t2 / 120, t / 2 - t * t2 / 24, 0.5 - t2 / 24, t / 6 - t * t2 / 120
    s, c = math.sin(t), math.cos(t)
    return s / t, (1 - c) / t, (1 - c) / t2, (t - s) / t2


def linearize_few(z, xi, xj) -> np.ndarray:
    """The rows ``[J_i J_j -r]`` ``(E, 3, 7)`` of ``E`` factors, computed factor by factor on
    Python floats: a between ``r = log(z^-1 x_i^-1 x_j)`` where ``xj[e]`` is a pose (``J`` as
    in :func:`between_factor`), a prior ``r = log(z^-1 x_i)`` where it is None (``J_i`` as in
    :func:`prior_factor`, ``J_j = 0``). ``z``, ``xi``, ``xj``: sequences of ``E`` poses (3
    floats each; ``xj`` may hold None)."""
    flat = []
    cos, sin = math.cos, math.sin
    for (zx, zy, zt), (ax, ay, at), b in zip(z, xi, xj):
        if b is not None:                   # rel = x_i^-1 x_j, then g = z^-1 rel
            c, s = cos(at), sin(at)
            dx, dy, t = b[0] - ax, b[1] - ay, b[2] - at
            ax, ay, at = c * dx + s * dy, -s * dx + c * dy, _wrap(t)
        c, s = cos(zt), sin(zt)
        dx, dy, t = ax - zx, ay - zy, at - zt
        gx, gy, w = c * dx + s * dy, -s * dx + c * dy, _wrap(t)
        # r = log(g) (w is wrapped already) and the inverse right Jacobian at r
        t2 = w * w
        if abs(w) < SMALL_ANGLE:
            alpha = 1 - t2 / 12
            sinc, cosc = 1 - t2 / 6 + t2 * t2 / 120, w / 2 - w * t2 / 24
            k1, k2 = 0.5 - t2 / 24, w / 6 - w * t2 / 120
        else:
            s, c = sin(w), cos(w)
            alpha = w * s / (2 * (1 - c))
            sinc, cosc, k1, k2 = s / w, (1 - c) / w, (1 - c) / t2, (w - s) / t2
        beta = w / 2
        vx, vy = alpha * gx + beta * gy, -beta * gx + alpha * gy
        det = sinc * sinc + cosc * cosc
        p, q = sinc / det, cosc / det
        c13, c23 = vx * k2 - vy * k1, vx * k1 + vy * k2
        u0, u1 = -(p * c13 - q * c23), -(q * c13 + p * c23)
        if b is None:
            flat += (p, -q, u0, 0.0, 0.0, 0.0, -vx, q, p, u1, 0.0, 0.0, 0.0, -vy,
                     0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -w)
            continue
        # -(J_inv Ad(rel^-1)), Ad(rel^-1) = [[c, s, y'], [-s, c, -x'], [0, 0, 1]] as above
        c, s = cos(at), sin(at)
        inv_x, inv_y = -(c * ax + s * ay), -(-s * ax + c * ay)
        flat += (-(p * c + q * s), -(p * s - q * c), -(p * inv_y + q * inv_x + u0), p, -q, u0, -vx,
                 -(q * c - p * s), -(q * s + p * c), -(q * inv_y - p * inv_x + u1), q, p, u1, -vy,
                 0.0, 0.0, -1.0, 0.0, 0.0, 1.0, -w)
    return np.array(flat).reshape(-1, 3, 7)
