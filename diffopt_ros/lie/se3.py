"""SE(3): 3D rigid motions stored as ``(..., 3, 4) = [R | t]`` (rotation matrix, translation in m).

Tangent vectors are ``(..., 6) = (v, omega)``: translation part first, then the rotation vector
(rad), as in Sophus/Theseus and ROS covariances (x, y, z, roll, pitch, yaw order). GTSAM's Pose3
uses ``(omega, v)``; :func:`diffopt_ros.nlls.io` converts information matrices accordingly.
Perturbations are on the right, ``g exp(d)``.
"""
from __future__ import annotations

import torch

from diffopt_ros.lie._base import LieGroup
from diffopt_ros.lie._util import skew
from diffopt_ros.lie.so3 import (
    SO3,
    _exp_coefficients,
    _log_coefficient,
    _quadratic_in_skew,
    _theta2,
    left_jacobian,
    left_jacobian_inv,
)


def _q_matrix(rho: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Barfoot's ``Q(rho, phi)`` ``(..., 3, 3)``, the top-right block of the SE(3) left Jacobian.

    Barfoot's series in ``P = [rho]x`` and ``F = [phi]x`` has products of up to four skew
    matrices; with ``[a]x [b]x = b a^T - (a.b) I``, ``c = phi.rho`` and ``t = |phi|`` they reduce to
    ``FP + PF + FPF = rho phi^T + phi rho^T - 2c I - c F``, ``FFP + PFF - 3 FPF = 2c F - t^2 P`` and
    ``FPFF + FFPF = -2c (phi phi^T - t^2 I)``. So ``Q = [u]x + S``: a skew part of the vector
    ``u = (1/2 - c2 t^2) rho + c (2 c2 - c1) phi`` and the symmetric
    ``S = c1 (rho phi^T + phi rho^T) - 2c c3 phi phi^T + 2c (c3 t^2 - c1) I``, entry by entry.
    """
    t2, small, t = _theta2(phi)
    s, co = torch.sin(t), torch.cos(t)
    c1 = torch.where(small, 1.0 / 6 - t2 / 120, (t - s) / (t * t * t))
    c2 = torch.where(small, 1.0 / 24 - t2 / 720, (t * t + 2 * co - 2) / (2 * t ** 4))
    c3 = torch.where(small, 1.0 / 120 - t2 / 2520, (2 * t - 3 * s + t * co) / (2 * t ** 5))
    c = (phi * rho).sum(-1)
    u = (0.5 - c2 * t2)[..., None] * rho + (c * (2 * c2 - c1))[..., None] * phi
    e, g = 2 * c * c3, 2 * c * (c3 * t2 - c1)
    r0, r1, r2 = rho.unbind(-1)
    p0, p1, p2 = phi.unbind(-1)
    u0, u1, u2 = u.unbind(-1)

    def sym(a0, a1, b0, b1):  # S_ab for a != b
        return c1 * (a0 * b1 + a1 * b0) - e * a1 * b1

    s01, s02, s12 = sym(r0, p0, r1, p1), sym(r0, p0, r2, p2), sym(r1, p1, r2, p2)
    return torch.stack((
        2 * c1 * r0 * p0 - e * p0 * p0 + g, s01 - u2, s02 + u1,
        s01 + u2, 2 * c1 * r1 * p1 - e * p1 * p1 + g, s12 - u0,
        s02 - u1, s12 + u0, 2 * c1 * r2 * p2 - e * p2 * p2 + g), -1).reshape(*phi.shape[:-1], 3, 3)


def _split(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return g[..., :3], g[..., 3]


def _join(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.cat((R, t.unsqueeze(-1)), -1)


def _right_jacobian_inv_blocks(xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Ji, K`` of ``Jr^-1(xi) = [[Ji, K], [0, Ji]]`` (``(..., 3, 3)`` each)."""
    v, w = xi[..., :3], xi[..., 3:]
    Ji = left_jacobian_inv(-w)
    return Ji, -(Ji @ _q_matrix(-v, -w) @ Ji)


def _block(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``[[a, b], [c, d]]`` of ``(..., 3, 3)`` blocks -> ``(..., 6, 6)``."""
    return torch.cat((torch.cat((a, b), -1), torch.cat((c, d), -1)), -2)


class SE3(LieGroup):
    """Batched SE(3) operations on ``(..., 3, 4) = [R | t]`` tensors."""

    name = 'SE3'
    dof = 6
    shape = (3, 4)

    @staticmethod
    def identity(*batch: int, dtype=None, device=None) -> torch.Tensor:
        """Identity poses ``(*batch, 3, 4)``."""
        return torch.eye(3, 4, dtype=dtype, device=device).expand(*batch, 3, 4).clone()

    @staticmethod
    def exp(xi: torch.Tensor) -> torch.Tensor:
        """Tangent ``(..., 6) = (v, omega)`` -> pose ``(..., 3, 4)``."""
        v, w = xi[..., :3], xi[..., 3:]
        a, b, c = _exp_coefficients(w)  # once, for both parts
        wv = torch.linalg.cross(w, v, dim=-1)  # Jl(w) v = v + b w x v + c w x (w x v)
        t = v + b[..., 0] * wv + c[..., 0] * torch.linalg.cross(w, wv, dim=-1)
        return _join(_quadratic_in_skew(w, a, b), t)

    @staticmethod
    def log(g: torch.Tensor) -> torch.Tensor:
        """Pose ``(..., 3, 4)`` -> tangent ``(..., 6)``."""
        R, t = _split(g)
        w = SO3.log(R)
        wt = torch.linalg.cross(w, t, dim=-1)  # Jl^-1(w) t = t - w x t / 2 + d w x (w x t)
        v = t - 0.5 * wt + _log_coefficient(w)[..., 0] * torch.linalg.cross(w, wt, dim=-1)
        return torch.cat((v, w), -1)

    @staticmethod
    def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a b``."""
        Ra, ta = _split(a)
        return torch.cat((Ra @ b[..., :3], (Ra @ b[..., 3:]) + ta.unsqueeze(-1)), -1)

    @staticmethod
    def inverse(g: torch.Tensor) -> torch.Tensor:
        """``g^-1``."""
        R, t = _split(g)
        Rt = R.mT
        return _join(Rt, -(Rt @ t.unsqueeze(-1)).squeeze(-1))

    @staticmethod
    def between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a^-1 b``."""
        Ra, ta = _split(a)
        Rt = Ra.mT
        return torch.cat((Rt @ b[..., :3], Rt @ (b[..., 3:] - ta.unsqueeze(-1))), -1)

    @staticmethod
    def retract(g: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``g exp(d)``."""
        return SE3.compose(g, SE3.exp(d))

    @staticmethod
    def local(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``log(a^-1 b)``."""
        return SE3.log(SE3.between(a, b))

    @staticmethod
    def act(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Transform points ``p (..., 3)`` (m): ``R p + t``."""
        R, t = _split(g)
        return (R @ p.unsqueeze(-1)).squeeze(-1) + t

    @staticmethod
    def act_jacobians(g: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``q = g p`` with ``dq/dd_g (..., 3, 6)`` (right perturbation) and ``dq/dp (..., 3, 3)``."""
        R, _ = _split(g)
        return SE3.act(g, p), torch.cat((R, -(R @ skew(p))), -1), R

    @staticmethod
    def matrix(g: torch.Tensor) -> torch.Tensor:
        """Homogeneous matrices ``(..., 4, 4)``."""
        bottom = torch.zeros(*g.shape[:-2], 1, 4, dtype=g.dtype, device=g.device)
        bottom[..., 0, 3] = 1
        return torch.cat((g, bottom), -2)

    @staticmethod
    def from_matrix(m: torch.Tensor) -> torch.Tensor:
        """Homogeneous ``(..., 4, 4)`` -> ``(..., 3, 4)``."""
        return m[..., :3, :]

    @staticmethod
    def from_translation_quaternion(tq: torch.Tensor) -> torch.Tensor:
        """``(..., 7) = (x, y, z, qx, qy, qz, qw)`` -> ``(..., 3, 4)``."""
        return _join(SO3.from_quaternion(tq[..., 3:]), tq[..., :3])

    @staticmethod
    def to_translation_quaternion(g: torch.Tensor) -> torch.Tensor:
        """``(..., 3, 4)`` -> ``(..., 7) = (x, y, z, qx, qy, qz, qw)``."""
        R, t = _split(g)
        return torch.cat((t, SO3.to_quaternion(R)), -1)

    @staticmethod
    def adjoint(g: torch.Tensor) -> torch.Tensor:
        """Adjoint ``(..., 6, 6) = [[R, [t]x R], [0, R]]``: ``g exp(d) g^-1 = exp(Ad(g) d)``."""
        R, t = _split(g)
        tR = torch.linalg.cross(t.unsqueeze(-1).expand_as(R), R, dim=-2)  # [t]x R, column by column
        return _block(R, tR, torch.zeros_like(R), R)

    @staticmethod
    def right_jacobian(xi: torch.Tensor) -> torch.Tensor:
        """Right Jacobian of exp ``(..., 6, 6)``: ``exp(xi + e) = exp(xi) exp(Jr(xi) e + O(e^2))``."""
        v, w = xi[..., :3], xi[..., 3:]
        J = left_jacobian(-w)
        return _block(J, _q_matrix(-v, -w), torch.zeros_like(J), J)

    @staticmethod
    def right_jacobian_inv(xi: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`right_jacobian` ``(..., 6, 6)``."""
        Ji, K = _right_jacobian_inv_blocks(xi)
        return _block(Ji, K, torch.zeros_like(Ji), Ji)

    @staticmethod
    def between_log_jacobians(rel: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`LieGroup.between_log_jacobians` by blocks: with ``Jr^-1(r) = [[Ji, K], [0, Ji]]``
        and ``Ad(rel^-1) = [[R^T, -R^T [t]x], [0, R^T]]`` (``rel = [R | t]``), the product is
        ``[[M, K R^T - M [t]x], [0, M]]`` with ``M = Ji R^T``: two 3x3 products and a cross
        product per edge in place of a 6x6 one."""
        Ji, K = _right_jacobian_inv_blocks(r)
        R, t = _split(rel)
        M = Ji @ R.mT
        corner = K @ R.mT - torch.linalg.cross(M, t.unsqueeze(-2).expand_as(M), dim=-1)  # rows m_i x t
        return -_block(M, corner, torch.zeros_like(M), M), _block(Ji, K, torch.zeros_like(Ji), Ji)
