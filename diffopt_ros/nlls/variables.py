"""Optimization variables: ``N`` elements of one manifold (a Lie group or a vector space), batched.

A :class:`Variable` holds a tensor ``(B, N, *group.shape)``: ``B`` independent problems (batch)
of ``N`` elements each, e.g. all poses of a pose graph. Factors refer to elements by index, so
one variable and one factor object cover a whole graph and every operation is vectorized.
"""
from __future__ import annotations

import torch


class Vector:
    """The vector space R^dim as a (commutative) group: compose is ``+``, retract is ``x + d``."""

    def __init__(self, dim: int):
        self.dof = int(dim)
        self.shape = (int(dim),)
        self.name = f'R{dim}'

    def __repr__(self) -> str:
        return f'Vector({self.dof})'

    @staticmethod
    def retract(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``x + d``."""
        return x + d

    @staticmethod
    def local(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``b - a``."""
        return b - a

    @staticmethod
    def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a + b``."""
        return a + b

    @staticmethod
    def inverse(x: torch.Tensor) -> torch.Tensor:
        """``-x``."""
        return -x

    @staticmethod
    def between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``b - a``."""
        return b - a

    log = staticmethod(lambda x: x)
    exp = staticmethod(lambda x: x)

    def identity(self, *batch: int, dtype=None, device=None) -> torch.Tensor:
        """Zeros ``(*batch, dim)``."""
        return torch.zeros(*batch, self.dof, dtype=dtype, device=device)

    def adjoint(self, x: torch.Tensor) -> torch.Tensor:
        """Identity ``(..., dim, dim)``."""
        eye = torch.eye(self.dof, dtype=x.dtype, device=x.device)
        return eye.expand(*x.shape[:-1], self.dof, self.dof)

    def right_jacobian_inv(self, x: torch.Tensor) -> torch.Tensor:
        """Identity ``(..., dim, dim)``."""
        return self.adjoint(x)


class Variable:
    """``N`` elements of ``group`` for ``B`` problems: ``value (B, N, *group.shape)``.

    Args:
        group: a Lie group class from :mod:`diffopt_ros.lie` or a :class:`Vector`.
        value: ``(N, *shape)`` (one problem, B = 1) or ``(B, N, *shape)``; may require grad
            (initial values are differentiable under the ``unroll``/``truncated`` backward modes).
        name: used in error messages and result dictionaries.
    """

    def __init__(self, group, value: torch.Tensor, name: str = 'x'):
        shape = tuple(group.shape)
        if tuple(value.shape[-len(shape):]) != shape or value.dim() not in (len(shape) + 1, len(shape) + 2):
            raise ValueError(f'variable {name!r}: value of shape {tuple(value.shape)} is not '
                             f'(N, {shape}) or (B, N, {shape}) for group {group.name}')
        if value.dim() == len(shape) + 1:
            value = value.unsqueeze(0)
        self.group = group
        self.value = value
        self.name = name

    @property
    def num(self) -> int:
        """Number of elements N."""
        return self.value.shape[1]

    @property
    def dof(self) -> int:
        """Tangent dimension of one element."""
        return self.group.dof

    def __repr__(self) -> str:
        return f'Variable({self.name!r}, {self.group.name}, B={self.value.shape[0]}, N={self.num})'
