"""What the trainer batches: the :class:`Dataset` protocol and :class:`TensorItems`.

A learning task hands :func:`~diffopt_ros.learn.trainer.train` its training and validation
items as a :class:`Dataset`; windows of recorded runs
(:meth:`~diffopt_ros.learn.windows.ControlWindows.items`) are :class:`TensorItems`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Dataset(Protocol):
    """Items a trainer can batch: ``len()``, ``batch(indices)`` and ``to(device)``."""

    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int]) -> Any: ...

    def to(self, device: torch.device) -> Dataset: ...


@dataclass
class TensorItems:
    """Items stored as tensors with a common leading dimension ``N``.

    Attributes:
        tensors: name -> tensor ``(N, ...)``.
    """

    tensors: dict[str, torch.Tensor]

    def __post_init__(self):
        sizes = {name: t.shape[0] for name, t in self.tensors.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f'TensorItems: leading dimensions differ: {sizes}')

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0] if self.tensors else 0

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """``{name: tensor[indices]}``."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return {name: t[index.to(t.device)] for name, t in self.tensors.items()}

    def to(self, device: torch.device) -> TensorItems:
        return TensorItems({name: t.to(device) for name, t in self.tensors.items()})
