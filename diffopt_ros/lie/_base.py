"""Jacobians shared by every group, written once in terms of each group's adjoint."""
from __future__ import annotations

import torch

Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class LieGroup:
    """Base of the group classes: Jacobians of compose, inverse and between (right perturbations)."""

    @classmethod
    def compose_jacobians(cls, a: torch.Tensor, b: torch.Tensor) -> Triple:
        """``(a b, d(ab)/da = Ad(b^-1), d(ab)/db = I)``, Jacobians ``(..., dof, dof)``."""
        ab = cls.compose(a, b)
        J_a = cls.adjoint(cls.inverse(b))
        return ab, J_a, torch.eye(cls.dof, dtype=J_a.dtype, device=J_a.device).expand_as(J_a)

    @classmethod
    def inverse_jacobian(cls, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g^-1, d(g^-1)/dg = -Ad(g))``."""
        return cls.inverse(g), -cls.adjoint(g)

    @classmethod
    def between_jacobians(cls, a: torch.Tensor, b: torch.Tensor) -> Triple:
        """``(a^-1 b, d/da = -Ad(b^-1 a), d/db = I)``."""
        rel = cls.between(a, b)
        J_a = -cls.adjoint(cls.inverse(rel))
        return rel, J_a, torch.eye(cls.dof, dtype=J_a.dtype, device=J_a.device).expand_as(J_a)
