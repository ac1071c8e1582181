"""Data parallelism for the trainer: the torchrun process group, DDP and the global batch order.

Under ``torchrun`` (``WORLD_SIZE > 1``) :func:`init_distributed` joins the process group (gloo on
CPU, NCCL on CUDA) and :func:`data_parallel` wraps the objective in
``DistributedDataParallel``; each rank takes every ``world``-th item of each global mini-batch
of :func:`global_batches`, whose order depends on the seed and the epoch only, not on the number
of processes. One process (``WORLD_SIZE`` unset) runs the same code with ``world = 1``.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: ``rank`` of ``world`` processes on ``device``; ``owns_group``:
    :func:`init_distributed` created the process group (so :func:`leave_distributed` ends it)."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool


def init_distributed(device: str) -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (gloo on CPU, NCCL on CUDA).

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``; under torchrun, CUDA ranks use
            ``cuda:LOCAL_RANK``.

    Raises:
        RuntimeError: CUDA was asked for but is not available.
    """
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    wanted = torch.device(device)
    if wanted.type == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError(f'--device {device}: CUDA is not available on this machine')
        # Deterministic cuBLAS must be configured before its first use.
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        if world > 1:
            wanted = torch.device('cuda', local_rank)
        if wanted.index is not None:
            torch.cuda.set_device(wanted)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend='nccl' if wanted.type == 'cuda' else 'gloo')
        owns = True
    if dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    return DistContext(rank=rank, world=world, device=wanted, owns_group=owns)


def leave_distributed(ctx: DistContext) -> None:
    """End the process group if :func:`init_distributed` created it (after all ranks arrive)."""
    if ctx.owns_group:
        dist.barrier()
        dist.destroy_process_group()


def data_parallel(objective: nn.Module, ctx: DistContext) -> nn.Module:
    """``objective`` wrapped in ``DistributedDataParallel`` with several processes, else itself.

    Buffers are not broadcast: rank-local buffers (per-item warm starts) must stay per rank.
    """
    if ctx.world == 1:
        return objective
    device_ids = [ctx.device] if ctx.device.type == 'cuda' else None
    with warnings.catch_warnings():
        # torch deprecates broadcast_buffers=False but names no replacement that skips it yet.
        warnings.simplefilter('ignore', FutureWarning)
        return nn.parallel.DistributedDataParallel(objective, device_ids=device_ids,
                                                   broadcast_buffers=False)


def global_batches(n_items: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True
                   ) -> list[torch.Tensor]:
    """Index chunks of one epoch, the same on every rank whatever the number of processes.

    ``ceil(n / batch_size)`` chunks whose sizes differ by at most one, cut from a permutation
    drawn with seed ``seed + epoch``; ``0..n-1`` when ``shuffle`` is false or there is one
    chunk (a full batch), so every item stays on the same rank from epoch to epoch (warm starts
    kept per item stay local).
    """
    if n_items == 0:
        return []
    chunks = math.ceil(n_items / batch_size) if batch_size > 0 else 1
    if shuffle and chunks > 1:
        generator = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(n_items, generator=generator)
    else:
        order = torch.arange(n_items)
    return list(torch.tensor_split(order, chunks))


def check_shards(n_items: int, batch_size: int, ctx: DistContext, what: str) -> None:
    """Every mini-batch of :func:`global_batches` gives each rank at least one item.

    Raises:
        ValueError: the smallest mini-batch has fewer items than processes (``what`` named).
    """
    smallest = n_items // max(1, math.ceil(n_items / batch_size)) if batch_size > 0 else n_items
    if smallest < ctx.world:
        raise ValueError(f'{what}: mini-batches of {smallest} items cannot feed {ctx.world} processes; '
                         f'use a larger --batch-size or fewer processes')


def all_sum(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """``value`` summed over all ranks (itself with one process)."""
    if ctx.world > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value
