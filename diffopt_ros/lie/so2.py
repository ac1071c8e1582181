"""SO(2): planar rotations stored as an angle ``(..., 1)`` in rad, wrapped to ``(-pi, pi]``.

Tangent vectors are ``(..., 1)`` angles. Perturbations are on the right, ``R exp(d)``; for the
commutative SO(2) left and right coincide, so every Jacobian below is the identity or -1.
"""
from __future__ import annotations

import torch

from diffopt_ros.lie._base import LieGroup
from diffopt_ros.lie._util import wrap_angle


class SO2(LieGroup):
    """Batched SO(2) operations on angle tensors ``(..., 1)``."""

    name = 'SO2'
    dof = 1
    shape = (1,)

    @staticmethod
    def identity(*batch: int, dtype=None, device=None) -> torch.Tensor:
        """Identity rotations ``(*batch, 1)``."""
        return torch.zeros(*batch, 1, dtype=dtype, device=device)

    @staticmethod
    def exp(w: torch.Tensor) -> torch.Tensor:
        """Angle ``(..., 1)`` -> rotation ``(..., 1)`` (wrapped)."""
        return wrap_angle(w)

    @staticmethod
    def log(r: torch.Tensor) -> torch.Tensor:
        """Rotation ``(..., 1)`` -> angle in ``(-pi, pi]``."""
        return wrap_angle(r)

    @staticmethod
    def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a b`` for ``(..., 1)`` rotations."""
        return wrap_angle(a + b)

    @staticmethod
    def inverse(r: torch.Tensor) -> torch.Tensor:
        """``r^-1``."""
        return wrap_angle(-r)

    @staticmethod
    def between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a^-1 b``."""
        return wrap_angle(b - a)

    @staticmethod
    def retract(r: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``r exp(d)``."""
        return wrap_angle(r + d)

    @staticmethod
    def local(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``log(a^-1 b)``, ``(..., 1)``."""
        return wrap_angle(b - a)

    @staticmethod
    def matrix(r: torch.Tensor) -> torch.Tensor:
        """Rotation matrices ``(..., 2, 2)``."""
        c, s = torch.cos(r[..., 0]), torch.sin(r[..., 0])
        return torch.stack((c, -s, s, c), -1).reshape(*r.shape[:-1], 2, 2)

    @staticmethod
    def act(r: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Rotate points ``p (..., 2)`` by ``r (..., 1)``."""
        c, s = torch.cos(r), torch.sin(r)
        return torch.cat((c * p[..., :1] - s * p[..., 1:], s * p[..., :1] + c * p[..., 1:]), -1)

    @staticmethod
    def adjoint(r: torch.Tensor) -> torch.Tensor:
        """Adjoint ``(..., 1, 1)``: the identity."""
        return torch.ones(*r.shape, 1, dtype=r.dtype, device=r.device)

    @staticmethod
    def right_jacobian(w: torch.Tensor) -> torch.Tensor:
        """Right Jacobian of exp ``(..., 1, 1)``: the identity."""
        return torch.ones(*w.shape, 1, dtype=w.dtype, device=w.device)

    right_jacobian_inv = right_jacobian
