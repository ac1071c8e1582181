"""Shared numerics for the Lie groups: skew matrices, small-angle-safe coefficients, angle wrap."""
from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

Angle = TypeVar('Angle', torch.Tensor, np.ndarray, float)

# Below this angle (rad) the closed forms are replaced by Taylor series; the series used are
# accurate to float64 round-off there, and the closed forms are well conditioned above it.
SMALL_ANGLE = 1e-3


def skew(v: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric matrix ``[v]x`` of 3-vectors: ``(..., 3) -> (..., 3, 3)``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack((o, -z, y, z, o, -x, -y, x, o), -1).reshape(*v.shape[:-1], 3, 3)


def skew_squared(v: torch.Tensor) -> torch.Tensor:
    """``[v]x [v]x = v v^T - |v|^2 I`` ``(..., 3, 3)`` of 3-vectors ``(..., 3)``, entry by entry (a
    batched product of 3x3 matrices costs several times more on the CPU)."""
    x, y, z = v.unbind(-1)
    xx, yy, zz, xy, xz, yz = x * x, y * y, z * z, x * y, x * z, y * z
    entries = (-yy - zz, xy, xz, xy, -xx - zz, yz, xz, yz, -xx - yy)
    return torch.stack(entries, -1).reshape(*v.shape[:-1], 3, 3)


def unskew(m: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`skew` (antisymmetric part): ``(..., 3, 3) -> (..., 3)``."""
    return 0.5 * torch.stack((m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                              m[..., 1, 0] - m[..., 0, 1]), -1)


def safe_angle(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(small, theta_safe)``: a mask of ``|theta| < SMALL_ANGLE`` and ``theta`` with those
    entries replaced by 1, so closed forms evaluated on ``theta_safe`` have finite gradients."""
    small = theta.abs() < SMALL_ANGLE
    return small, torch.where(small, torch.ones_like(theta), theta)


def wrap_angle(theta: Angle) -> Angle:
    """Angles (rad) wrapped to ``(-pi, pi]``, the range of ``atan2``: ``pi`` stays ``pi`` and
    ``-pi`` becomes ``pi``; angles already in the range are returned unchanged (bit for bit).

    Works on a torch tensor (any shape; differentiable, gradient 1 everywhere), a numpy array
    or numpy scalar (same type back) and a Python number (``float`` back).
    """
    if isinstance(theta, torch.Tensor):
        return theta - 2 * torch.pi * torch.ceil((theta - torch.pi) / (2 * torch.pi))
    if isinstance(theta, (np.ndarray, np.generic)):
        return theta - 2 * np.pi * np.ceil((theta - np.pi) / (2 * np.pi))
    theta = float(theta)
    return theta - 2 * math.pi * math.ceil((theta - math.pi) / (2 * math.pi))
