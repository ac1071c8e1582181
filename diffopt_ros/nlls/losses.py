"""Robust losses on the squared whitened residual norm ``s = ||r||^2_Sigma``, GTSAM's convention.

The error of one factor is ``rho(s)``; the plain least-squares loss is ``rho(s) = s / 2``.
Solvers apply a loss by iterative reweighting: the residual and Jacobian are scaled by
``sqrt(w)`` with ``w = 2 rho'(s)`` (1 for the plain loss). ``scale`` (whitened residual units) may
be a learnable tensor; every loss is differentiable in it.
"""
from __future__ import annotations

import torch


class RobustLoss:
    """Base class: ``rho(s)`` and the IRLS weight ``2 rho'(s)``, elementwise on ``s (B, E)``."""

    def __init__(self, scale: float | torch.Tensor = 1.0):
        self.scale = scale

    def rho(self, s: torch.Tensor) -> torch.Tensor:
        """Robust error ``(B, E)`` of squared norms ``s (B, E)``."""
        raise NotImplementedError

    def weight(self, s: torch.Tensor) -> torch.Tensor:
        """IRLS weight ``2 rho'(s)``, ``(B, E)``."""
        raise NotImplementedError

    def tensors(self) -> list[torch.Tensor]:
        """Differentiable data of the loss (the scale when it is a tensor)."""
        return [self.scale] if isinstance(self.scale, torch.Tensor) else []

    def __repr__(self) -> str:
        return f'{type(self).__name__}(scale={self.scale})'


class Huber(RobustLoss):
    """``s/2`` for ``sqrt(s) <= k``, else ``k sqrt(s) - k^2/2``."""

    def rho(self, s):
        k = self.scale
        e = torch.sqrt(s.clamp_min(1e-300))
        return torch.where(e <= k, 0.5 * s, k * e - 0.5 * k * k)

    def weight(self, s):
        k = self.scale
        e = torch.sqrt(s.clamp_min(1e-300))
        return torch.where(e <= k, torch.ones_like(s), k / e)


class Cauchy(RobustLoss):
    """``(k^2/2) log(1 + s/k^2)``."""

    def rho(self, s):
        k2 = self.scale * self.scale
        return 0.5 * k2 * torch.log1p(s / k2)

    def weight(self, s):
        return 1.0 / (1.0 + s / (self.scale * self.scale))


class GemanMcClure(RobustLoss):
    """``(k^2/2) s / (k^2 + s)``."""

    def rho(self, s):
        k2 = self.scale * self.scale
        return 0.5 * k2 * s / (k2 + s)

    def weight(self, s):
        k2 = self.scale * self.scale
        return k2 * k2 / (k2 + s) ** 2
