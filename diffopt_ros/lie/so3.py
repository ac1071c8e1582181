"""SO(3): 3D rotations stored as rotation matrices ``(..., 3, 3)``.

Tangent vectors are rotation vectors ``(..., 3)`` (axis times angle, rad). Perturbations are on
the right, ``R exp(d)``. ``log`` takes the angle from ``atan2`` and, near pi, the axis from a
quaternion (Shepperd's method), which keeps it accurate at zero angle and at pi; every
coefficient switches to its Taylor series near zero.
"""
from __future__ import annotations

import torch

from diffopt_ros.lie._base import LieGroup
from diffopt_ros.lie._util import SMALL_ANGLE, skew, skew_squared


def _theta2(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(theta^2, small, theta_safe)`` of rotation vectors ``(..., 3)`` (gradient-safe at 0)."""
    t2 = (w * w).sum(-1)
    small = t2 < SMALL_ANGLE ** 2
    t = torch.sqrt(torch.where(small, torch.ones_like(t2), t2))
    return t2, small, t


def _exp_coefficients(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sin t / t, (1 - cos t)/t^2, (t - sin t)/t^3`` with ``t = |w|``, each ``(..., 1, 1)``."""
    t2, small, t = _theta2(w)
    s, c = torch.sin(t), torch.cos(t)
    a = torch.where(small, 1 - t2 / 6 + t2 * t2 / 120, s / t)
    b = torch.where(small, 0.5 - t2 / 24 + t2 * t2 / 720, (1 - c) / (t * t))
    cc = torch.where(small, 1.0 / 6 - t2 / 120 + t2 * t2 / 5040, (t - s) / (t * t * t))
    return a[..., None, None], b[..., None, None], cc[..., None, None]


def _log_coefficient(w: torch.Tensor) -> torch.Tensor:
    """``(1 - (t/2) cot(t/2)) / t^2`` ``(..., 1, 1)``, finite on ``[0, pi]``."""
    t2, small, t = _theta2(w)
    d = torch.where(small, 1.0 / 12 + t2 / 720, (1 - t * torch.sin(t) / (2 * (1 - torch.cos(t)))) / (t * t))
    return d[..., None, None]


def _eye(w: torch.Tensor) -> torch.Tensor:
    return torch.eye(3, dtype=w.dtype, device=w.device).expand(*w.shape[:-1], 3, 3)


def _quadratic_in_skew(w: torch.Tensor, p, q) -> torch.Tensor:
    """``I + p [w]x + q [w]x^2`` ``(..., 3, 3)``: the form of exp, its left Jacobian and that
    Jacobian's inverse; ``p``, ``q`` scalars or ``(..., 1, 1)``."""
    return _eye(w) + p * skew(w) + q * skew_squared(w)


def left_jacobian(w: torch.Tensor) -> torch.Tensor:
    """Left Jacobian ``(..., 3, 3)`` of exp at rotation vectors ``w (..., 3)``: ``Jl(w) = Jr(-w)``."""
    _, b, c = _exp_coefficients(w)
    return _quadratic_in_skew(w, b, c)


def left_jacobian_inv(w: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`left_jacobian`."""
    return _quadratic_in_skew(w, -0.5, _log_coefficient(w))


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(..., 4) = (x, y, z, w)`` (normalized here) -> matrices ``(..., 3, 3)``."""
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    return torch.stack((
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)), -1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(..., 4) = (x, y, z, w)``, ``w >= 0``.

    Shepperd's method: the largest of ``w, x, y, z`` is computed from the diagonal, the others
    from off-diagonal sums, so the result is accurate for every rotation (including angle pi).
    """
    r = R.reshape(*R.shape[:-2], 9)
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = r.unbind(-1)
    tr = r00 + r11 + r22
    diag = torch.stack((tr, r00, r11, r22), -1)
    case = diag.argmax(-1, keepdim=True)
    # 4 * (largest component)^2 for each case; clamped so unused branches stay finite
    four_sq = 1 + torch.stack((tr, r00 - r11 - r22, r11 - r00 - r22, r22 - r00 - r11), -1)
    big = torch.sqrt(four_sq.clamp_min(1e-12))
    z = torch.zeros_like(tr)
    cw = torch.stack((z, r21 - r12, r02 - r20, r10 - r01), -1)
    cx = torch.stack((r21 - r12, z, r01 + r10, r02 + r20), -1)
    cy = torch.stack((r02 - r20, r01 + r10, z, r12 + r21), -1)
    cz = torch.stack((r10 - r01, r02 + r20, r12 + r21, z), -1)
    # component k of case c: big/2 if k is the case's own component, else c_k / (2 big)
    own = torch.eye(4, dtype=torch.bool, device=R.device)  # rows: case (w, x, y, z)
    comps = []
    for k, cross in zip((1, 2, 3, 0), (cx, cy, cz, cw)):  # output order x, y, z, w
        val = torch.where(own[k], 0.5 * big, cross / (2 * big))
        comps.append(torch.gather(val, -1, case).squeeze(-1))
    q = torch.stack(comps, -1)
    q = q * torch.where(q[..., 3:] < 0, -1.0, 1.0)
    return q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)


# below this cosine of the angle (above ~2.69 rad) SO3.log takes the axis from the quaternion
_NEAR_PI_COS = -0.9


def _log_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation vectors ``(..., 3)`` of matrices ``(..., 3, 3)`` through Shepperd's quaternion:
    accurate for every angle up to and including pi."""
    q = matrix_to_quaternion(R)
    v, w = q[..., :3], q[..., 3]
    n2 = (v * v).sum(-1)
    small = n2 < 1e-12
    n = torch.sqrt(torch.where(small, torch.ones_like(n2), n2))
    w_safe = torch.where(small, w, torch.ones_like(w))
    scale = torch.where(small, 2 / w_safe * (1 - n2 / (3 * w_safe * w_safe)), 2 * torch.atan2(n, w) / n)
    return scale[..., None] * v


def rpy_to_matrix(rpy: torch.Tensor) -> torch.Tensor:
    """Roll, pitch, yaw ``(..., 3)`` (rad) -> ``Rz(yaw) Ry(pitch) Rx(roll)`` ``(..., 3, 3)``."""
    r, p, y = rpy.unbind(-1)
    cr, sr, cp, sp = torch.cos(r), torch.sin(r), torch.cos(p), torch.sin(p)
    cy, sy = torch.cos(y), torch.sin(y)
    return torch.stack((
        cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
        sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
        -sp, cp * sr, cp * cr), -1).reshape(*rpy.shape[:-1], 3, 3)


class SO3(LieGroup):
    """Batched SO(3) operations on rotation matrices ``(..., 3, 3)``."""

    name = 'SO3'
    dof = 3
    shape = (3, 3)

    @staticmethod
    def identity(*batch: int, dtype=None, device=None) -> torch.Tensor:
        """Identity rotations ``(*batch, 3, 3)``."""
        return torch.eye(3, dtype=dtype, device=device).expand(*batch, 3, 3).clone()

    @staticmethod
    def exp(w: torch.Tensor) -> torch.Tensor:
        """Rotation vectors ``(..., 3)`` (rad) -> matrices ``(..., 3, 3)`` (Rodrigues)."""
        a, b, _ = _exp_coefficients(w)
        return _quadratic_in_skew(w, a, b)

    @staticmethod
    def log(R: torch.Tensor) -> torch.Tensor:
        """Matrices ``(..., 3, 3)`` -> rotation vectors ``(..., 3)`` with angle in ``[0, pi]``.

        The angle is ``atan2(sin, cos)`` of the antisymmetric part and the trace, and the rotation
        vector that part scaled by ``angle / (2 sin)``: a few element-wise operations. Near pi,
        where the antisymmetric part vanishes and no longer fixes the axis, those rotations go
        through the quaternion (Shepperd's method, :func:`_log_quaternion`).
        """
        r = R.reshape(*R.shape[:-2], 9)
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = r.unbind(-1)
        v = torch.stack((r21 - r12, r02 - r20, r10 - r01), -1)  # 2 sin(angle) axis
        cos = 0.5 * (r00 + r11 + r22 - 1)
        s2 = 0.25 * (v * v).sum(-1)  # sin(angle)^2
        small = (s2 < SMALL_ANGLE ** 2) & (cos > 0)
        near_pi = cos < _NEAR_PI_COS
        # sin replaced by 1 where it is not used, so that no gradient there is inf * 0
        sin = torch.sqrt(torch.where(small | near_pi, torch.ones_like(s2), s2))
        angle = torch.atan2(sin, cos)
        t2 = s2 * (1 + s2 / 3)  # angle^2 = asin(sin)^2 to O(angle^6), for the series below
        scale = torch.where(small, 0.5 + t2 / 12 + 7 * t2 * t2 / 720, angle / (2 * sin))
        w = scale[..., None] * v
        if bool(near_pi.any()):
            at = near_pi.reshape(-1).nonzero().squeeze(1)
            fixed = _log_quaternion(R.reshape(-1, 3, 3).index_select(0, at))
            w = w.reshape(-1, 3).index_put((at,), fixed).reshape(w.shape)
        return w

    @staticmethod
    def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a b``."""
        return a @ b

    @staticmethod
    def inverse(R: torch.Tensor) -> torch.Tensor:
        """``R^T``."""
        return R.mT

    @staticmethod
    def between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a^-1 b``."""
        return a.mT @ b

    @staticmethod
    def retract(R: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``R exp(d)``."""
        return R @ SO3.exp(d)

    @staticmethod
    def local(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``log(a^-1 b)``."""
        return SO3.log(a.mT @ b)

    @staticmethod
    def act(R: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Rotate points ``p (..., 3)``."""
        return (R @ p.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def adjoint(R: torch.Tensor) -> torch.Tensor:
        """Adjoint ``(..., 3, 3)``: R itself."""
        return R

    @staticmethod
    def right_jacobian(w: torch.Tensor) -> torch.Tensor:
        """Right Jacobian of exp ``(..., 3, 3)``: ``exp(w + e) = exp(w) exp(Jr(w) e + O(e^2))``."""
        return left_jacobian(-w)

    @staticmethod
    def right_jacobian_inv(w: torch.Tensor) -> torch.Tensor:
        """Inverse right Jacobian ``(..., 3, 3)``: ``log(exp(w) exp(e)) = w + Jr^-1(w) e``."""
        return left_jacobian_inv(-w)

    to_quaternion = staticmethod(matrix_to_quaternion)
    from_quaternion = staticmethod(quaternion_to_matrix)
    from_rpy = staticmethod(rpy_to_matrix)
