"""One training loop for every learning task: batched, data-parallel, resumable, logged.

A task is an ``nn.Module`` *objective* whose ``forward(batch)`` returns per-item losses ``(b,)``
and whose ``report()`` returns the learned values by their parameter names. The loop

- runs on ``device`` (``cpu``, ``cuda``, ``cuda:N``); under ``torchrun`` it joins the process
  group (gloo on CPU, NCCL on CUDA), wraps the objective in ``DistributedDataParallel`` and gives
  each rank every ``world``-th item of each global mini-batch (:mod:`.distributed`);
- reduces so that any number of processes computes the same gradient: each rank's loss is
  ``sum(local losses) * world / global batch size`` and DDP averages over ranks, which gives the
  mean over the global batch. Batches are cut from a permutation drawn from a generator seeded by
  ``seed + epoch`` on every rank, independent of the number of processes;
- shows its progress on rank 0 (:class:`~diffopt_ros.progress.Progress`: a tqdm bar on a
  terminal, a plain line every few seconds in a log or under ``progress=False``), logs
  ``metrics.csv`` and ``loss.png`` (:func:`~diffopt_ros.learn.plots.plot_history`) in
  ``out_dir``, saves ``checkpoint.pt`` (state dicts only, loaded with ``weights_only=True``)
  every ``checkpoint_every`` epochs and at the end, and resumes from one.

Items come as a :class:`~diffopt_ros.learn.items.Dataset` (e.g.
:class:`~diffopt_ros.learn.items.TensorItems`).
"""
from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from diffopt_ros.learn.distributed import (
    DistContext,
    all_sum,
    check_shards,
    data_parallel,
    global_batches,
    init_distributed,
    leave_distributed,
)
from diffopt_ros.learn.items import Dataset
from diffopt_ros.progress import Progress


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
    return float(all_sum(total, ctx)) / len(items)


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
        check_shards(len(train_items), cfg.batch_size, ctx, 'training items')
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
        model = data_parallel(objective, ctx)
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
                    return all_sum(sums[-1], ctx) / n

                optimizer.step(closure)
                scheduler.step()
                total += sums[0]
            train_loss = float(all_sum(total, ctx)) / len(train_items)
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
                from diffopt_ros.learn.plots import plot_history  # matplotlib only when plotting

                plot_history(out / 'loss.png', history, title)
        if on_end is not None:
            on_end(objective, ctx)
        return TrainResult(params=objective.report(), history=history, rank=ctx.rank, world=ctx.world)
    finally:
        leave_distributed(ctx)
