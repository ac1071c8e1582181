"""Plots of learning (PNG, matplotlib Agg): the loss history, predictions and trajectories.

Importing this module loads matplotlib (about a second), so its users import it where they plot.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def plot_prediction(path: Path, windows, start_params: dict[str, float], objective,
                    seconds: float = 30.0) -> None:
    """Recorded speed and yaw rate of the first run against the multi-step predictions of the
    starting model (``start_params``) and the learned one, for back-to-back windows covering the
    first ``seconds`` s."""
    first = windows.run == windows.run[0]
    t0 = windows.t0[first]
    H = windows.u.shape[1]
    picks = torch.nonzero(first).squeeze(1)[::H]
    picks = picks[(windows.t0[picks] - t0[0]) <= seconds]
    model = objective.model
    base = getattr(model, 'base', model)
    learned = {k: float(v) for k, v in base.parameter_values().items()}
    x0, u = windows.x0[picks].to(objective.scale.device), windows.u[picks].to(objective.scale.device)
    with torch.no_grad():
        after = objective.predict(x0, u).cpu().numpy()
        for key, value in start_params.items():
            setattr(base, key.split('.', 1)[1], value)
        before = objective.predict(x0, u).cpu().numpy()
        for key, value in learned.items():
            setattr(base, key, value)
    times = (windows.t0[picks, None] + windows.dt * (1 + np.arange(H))[None]).numpy()
    recorded = windows.x_next[picks].numpy()
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True, layout='constrained')
    for ax, j, label in ((axes[0], 3, 'v (m/s)'), (axes[1], 4, 'omega (rad/s)')):
        for k in range(len(picks)):
            ax.plot(times[k], recorded[k, :, j], 'k-', lw=1.5, label='recorded' if k == 0 else None)
            ax.plot(times[k], before[k, :, j], 'r--', lw=1, label='start model' if k == 0 else None)
            ax.plot(times[k], after[k, :, j], 'b-', lw=1, label='learned model' if k == 0 else None)
        ax.set_ylabel(label)
    axes[0].legend(loc='upper right')
    axes[0].set_title(f'{H}-step predictions under the recorded commands')
    axes[1].set_xlabel('time (s)')
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_trajectories(path: Path, trajectories: dict[str, np.ndarray], title: str) -> None:
    """x-y plot of named trajectories ``(K, >=2)`` (m)."""
    fig, ax = plt.subplots(figsize=(6, 6), layout='constrained')
    for name, xy in trajectories.items():
        ax.plot(xy[:, 0], xy[:, 1], label=name)
    ax.set_aspect('equal', adjustable='datalim')
    ax.set_xlabel('x (m)')
    ax.set_ylabel('y (m)')
    ax.legend()
    ax.set_title(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_history(path: Path, history: list[dict[str, float]], title: str) -> None:
    """``loss.png``: train/validation loss and the learned values against epochs (one row of
    ``history`` per epoch, as :class:`~diffopt_ros.learn.trainer.TrainResult` holds it)."""
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
