"""One training loop for every learning task: batched, data-parallel, resumable, logged.

A task is an ``nn.Module`` *objective* whose ``forward(batch)`` returns per-item losses ``(b,)``
and whose ``report()`` returns the learned values by their parameter names. The loop

- runs on ``device`` (``cpu``, ``cuda``, ``cuda:N``); under ``torchrun`` it joins the process
  group (gloo on CPU, NCCL on CUDA), wraps the objective in ``DistributedDataParallel`` and gives
  each rank every ``world``-th item of each global mini-batch;
- reduces so that any number of processes computes the same gradient: each rank's loss is
  ``sum(local losses) * world / global batch size`` and DDP averages over ranks, which gives the
  mean over the global batch. Batches are cut from a permutation drawn from a generator seeded by
  ``seed + epoch`` on every rank, independent of the number of processes;
- shows its progress on rank 0 (:class:`~diffopt_ros.progress.Progress`: a tqdm bar on a
  terminal, a plain line every few seconds in a log or under ``progress=False``), logs
  ``metrics.csv`` and ``loss.png`` in ``out_dir``, saves
  ``checkpoint.pt`` (state dicts only, loaded with ``weights_only=True``) every
  ``checkpoint_every`` epochs and at the end, and resumes from one.
"""
from __future__ import annotations

import csv
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from diffopt_ros.progress import Progress


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


@dataclass
class TrainConfig:
    """Settings of :func:`train`.

    Attributes:
        epochs: passes over the training items.
        lr: learning rate (Adam: cosine-annealed to ``lr * lr_final``).
        lr_final: final learning rate as a fraction of ``lr``.
        batch_size: items per global mini-batch (all ranks together); 0 = the whole set.
        seed: seed of parameter initialisation and batch order.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun, CUDA ranks use ``cuda:LOCAL_RANK``).
        out_dir: folder for metrics.csv, loss.png, checkpoint.pt (None = no files).
        resume: checkpoint to continue from (None = start fresh).
        checkpoint_every: epochs between checkpoints.
        progress: a tqdm bar on rank 0 when stderr is a terminal; False, or a log file: a
            plain line every few seconds (:class:`~diffopt_ros.progress.Progress`).
        grad_clip: clip the global gradient norm to this (None = no clipping).
        optimizer: ``'adam'`` or ``'lbfgs'`` (one strong-Wolfe step per batch: for small
            deterministic full-batch problems; ``lr`` scales its first step).
        betas: Adam's moment decay rates (less momentum than torch's default: full-batch
            gradients are exact, and (0.9, 0.999) oscillated along the valleys of the imitation
            loss; measured: 40 epochs reached the true lags to 1e-3 instead of 10%).
        plots: draw ``loss.png`` (matplotlib takes about a second).
        stop_tolerance: stop early once the training loss changed by at most this (relative)
            over 3 epochs (0: run all epochs).
    """

    epochs: int = 100
    lr: float = 0.05
    lr_final: float = 0.05
    batch_size: int = 0
    seed: int = 0
    device: str = 'cpu'
    out_dir: Path | None = None
    resume: Path | None = None
    checkpoint_every: int = 10
    progress: bool = True
    grad_clip: float | None = None
    optimizer: str = 'adam'
    stop_tolerance: float = 0.0
    plots: bool = True
    betas: tuple[float, float] = (0.5, 0.9)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        params: learned values by parameter name (after the last epoch).
        history: one dict per epoch: ``epoch`` (0: before training), ``train_loss``,
            ``val_loss`` (only with validation items), ``seconds`` and every learned value.
        rank, world: this process's rank and the number of processes.
    """

    params: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    rank: int = 0
    world: int = 1

    @property
    def metrics(self) -> dict[str, float]:
        """The last epoch's row of the history."""
        return dict(self.history[-1]) if self.history else {}


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: ``rank`` of ``world`` processes on ``device``."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool


def init_distributed(device: str) -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (gloo on CPU, NCCL on CUDA).

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


def _all_sum(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.world > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def _check_shards(n_items: int, cfg: TrainConfig, ctx: DistContext, what: str) -> None:
    smallest = n_items // max(1, math.ceil(n_items / cfg.batch_size)) if cfg.batch_size > 0 else n_items
    if smallest < ctx.world:
        raise ValueError(f'{what}: mini-batches of {smallest} items cannot feed {ctx.world} processes; '
                         f'use a larger --batch-size or fewer processes')


def evaluate(objective: nn.Module, items: Dataset, batch_size: int, ctx: DistContext) -> float:
    """Mean per-item loss over ``items`` (all ranks together); NaN when there are none."""
    if len(items) == 0:
        return math.nan
    total = torch.zeros((), dtype=torch.float64, device=ctx.device)
    with torch.no_grad():
        for chunk in global_batches(len(items), batch_size, 0, 0, shuffle=False):
            local = chunk[ctx.rank::ctx.world].tolist()
            if local:
                total += objective(items.batch(local)).sum().to(torch.float64)
    return float(_all_sum(total, ctx)) / len(items)


def _load_checkpoint(path: Path, objective: nn.Module, optimizer, scheduler) -> tuple[int, list]:
    state = torch.load(path, map_location='cpu', weights_only=True)
    try:
        objective.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ValueError(f'{path}: not a checkpoint of this task ({exc})') from exc
    return int(state['epoch']), [dict(row) for row in state['history']]


def _save_checkpoint(path: Path, objective: nn.Module, optimizer, scheduler, epoch: int,
                     history: list) -> None:
    tmp = path.with_name(path.name + '.tmp')
    torch.save({'model': objective.state_dict(), 'optimizer': optimizer.state_dict(),
                'scheduler': scheduler.state_dict(), 'epoch': epoch, 'history': history}, tmp)
    tmp.replace(path)


def _settled(history: list[dict[str, float]], tolerance: float, epochs: int = 3) -> bool:
    """Whether the training loss changed by at most ``tolerance`` (relative) over the last
    ``epochs`` epochs (the same decision on every rank: the losses are global)."""
    if tolerance <= 0 or len(history) <= epochs:
        return False
    losses = [row['train_loss'] for row in history[-epochs - 1:]]
    return max(losses) - min(losses) <= tolerance * abs(losses[-1])


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    """One row per epoch, columns in first-seen order."""
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    with open(path, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def plot_history(path: Path, history: list[dict[str, float]], title: str) -> None:
    """``loss.png``: train/validation loss and the learned values against epochs."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    epochs = [row['epoch'] for row in history]
    names = [key for key in history[0] if key not in ('epoch', 'train_loss', 'val_loss', 'seconds')]
    fig, (ax_loss, ax_par) = plt.subplots(1, 2, figsize=(10, 4), layout='constrained')
    ax_loss.semilogy(epochs, [row['train_loss'] for row in history], label='train')
    if all('val_loss' in row for row in history):
        ax_loss.semilogy(epochs, [row['val_loss'] for row in history], label='validation')
    ax_loss.set_xlabel('epoch')
    ax_loss.set_ylabel('loss')
    ax_loss.legend()
    ax_loss.set_title(title)
    for name in names:
        ax_par.plot(epochs, [row[name] for row in history], label=name)
    ax_par.set_xlabel('epoch')
    ax_par.set_title('learned values')
    if names:
        ax_par.legend(fontsize='small')
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(objective: nn.Module, train_items: Dataset, val_items: Dataset | None, cfg: TrainConfig,
          title: str = 'learning', on_end: Callable[[nn.Module, DistContext], None] | None = None
          ) -> TrainResult:
    """Fit ``objective``'s trainable parameters by Adam or L-BFGS on the mean per-item loss.

    Args:
        objective: module with ``forward(batch) -> (b,)`` per-item losses and
            ``report() -> {name: float}``; moved to the run's device.
        train_items: the training dataset (moved to the device here).
        val_items: the validation dataset, or None.
        cfg: settings.
        title: plot title.
        on_end: called on every rank after the last epoch (e.g. to draw trajectory plots on
            rank 0) with the unwrapped objective and the context.

    Returns:
        The learned values and the per-epoch history (identical on all ranks).
    """
    ctx = init_distributed(cfg.device)
    try:
        torch.manual_seed(cfg.seed)
        objective = objective.to(ctx.device)
        train_items = train_items.to(ctx.device)
        val_items = val_items.to(ctx.device) if val_items is not None else None
        if len(train_items) == 0:
            raise ValueError('no training items: the runs gave no usable windows')
        _check_shards(len(train_items), cfg, ctx, 'training items')
        params = [p for p in objective.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f'{type(objective).__name__}: nothing to learn (no trainable parameters)')
        n_steps = len(global_batches(len(train_items), cfg.batch_size, cfg.seed, 0))
        if cfg.optimizer == 'lbfgs':
            optimizer = torch.optim.LBFGS(params, lr=cfg.lr, max_iter=1, max_eval=20, history_size=10,
                                          line_search_fn='strong_wolfe')
            final = 1.0     # the line search picks the step
        elif cfg.optimizer == 'adam':
            optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
            final = cfg.lr_final
        else:
            raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {cfg.optimizer!r}")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, cfg.epochs * n_steps), eta_min=cfg.lr * final)
        start, history = 0, []
        if cfg.resume is not None:
            start, history = _load_checkpoint(Path(cfg.resume), objective, optimizer, scheduler)
        model = objective
        if ctx.world > 1:
            device_ids = [ctx.device] if ctx.device.type == 'cuda' else None
            with warnings.catch_warnings():
                # Rank-local buffers (per-item warm starts) must not be synchronised; torch
                # deprecates the flag but names no replacement that skips it yet.
                warnings.simplefilter('ignore', FutureWarning)
                model = nn.parallel.DistributedDataParallel(objective, device_ids=device_ids,
                                                            broadcast_buffers=False)
        out = Path(cfg.out_dir) if cfg.out_dir is not None else None
        lead = ctx.rank == 0
        if out is not None and lead:
            out.mkdir(parents=True, exist_ok=True)
        bar = None
        if lead and start < cfg.epochs:
            bar = Progress(cfg.epochs, title, unit='epoch', bar=cfg.progress, initial=start)
        validate = val_items is not None and len(val_items) > 0

        def losses(train_loss: float) -> dict[str, float]:
            if not validate:
                return {'train_loss': train_loss}
            return {'train_loss': train_loss,
                    'val_loss': evaluate(objective, val_items, cfg.batch_size, ctx)}

        if start == 0:   # the starting point, as epoch 0
            history.append({'epoch': 0,
                            **losses(evaluate(objective, train_items, cfg.batch_size, ctx)),
                            'seconds': 0.0, **objective.report()})
        for epoch in range(start, cfg.epochs):
            began = time.perf_counter()
            total = torch.zeros((), dtype=torch.float64, device=ctx.device)
            for chunk in global_batches(len(train_items), cfg.batch_size, cfg.seed, epoch):
                batch = train_items.batch(chunk[ctx.rank::ctx.world].tolist())
                sums, n = [], len(chunk)

                def closure(batch=batch, n=n, sums=sums):
                    optimizer.zero_grad(set_to_none=True)
                    loss_sum = model(batch).sum()
                    (loss_sum * (ctx.world / n)).backward()
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    sums.append(loss_sum.detach().to(torch.float64))
                    # The global mean, so that a line search decides alike on every rank.
                    return _all_sum(sums[-1], ctx) / n

                optimizer.step(closure)
                scheduler.step()
                total += sums[0]
            train_loss = float(_all_sum(total, ctx)) / len(train_items)
            row = {'epoch': epoch + 1, **losses(train_loss),
                   'seconds': time.perf_counter() - began, **objective.report()}
            history.append(row)
            if not math.isfinite(train_loss):
                raise FloatingPointError(f'{title}: the training loss became {train_loss} in epoch '
                                         f'{epoch + 1}; lower --lr')
            last = epoch + 1 == cfg.epochs or _settled(history, cfg.stop_tolerance)
            if out is not None and lead and ((epoch + 1) % cfg.checkpoint_every == 0 or last):
                _save_checkpoint(out / 'checkpoint.pt', objective, optimizer, scheduler, epoch + 1,
                                 history)
                write_metrics_csv(out / 'metrics.csv', history)
            if bar is not None:
                shown = {'loss': f'{train_loss:.4g}'}
                if validate:
                    shown['val'] = f'{row["val_loss"]:.4g}'
                bar.set_postfix(**shown)
                bar.update(1)
            if last:
                break
        if bar is not None:
            bar.close()
        if out is not None and lead and history:
            write_metrics_csv(out / 'metrics.csv', history)
            if cfg.plots:
                plot_history(out / 'loss.png', history, title)
        if on_end is not None:
            on_end(objective, ctx)
        return TrainResult(params=objective.report(), history=history, rank=ctx.rank, world=ctx.world)
    finally:
        if ctx.owns_group:
            dist.barrier()
            dist.destroy_process_group()
