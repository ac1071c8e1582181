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

    @classmethod
    def between_log_jacobians(cls, rel: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Jacobians ``(..., dof, dof)`` of ``r = log(z^-1 a^-1 b)`` (``rel = a^-1 b``) w.r.t.
        right perturbations of ``a`` and ``b``: ``(-Jr^-1(r) Ad(rel^-1), Jr^-1(r))``."""
        J_inv = cls.right_jacobian_inv(r)
        return -(J_inv @ cls.adjoint(cls.inverse(rel))), J_inv
