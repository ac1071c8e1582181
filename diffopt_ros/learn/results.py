"""What a learning call returns and leaves behind: :class:`LearnResult` and the parameter file.

:func:`finish` turns the trainer's :class:`~diffopt_ros.learn.trainer.TrainResult` into the
losses before and after training, and writes the learned node parameters as a ROS parameter
YAML (:func:`~diffopt_ros.learn.export.write_params_yaml`) on rank 0.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from diffopt_ros.learn.export import write_params_yaml
from diffopt_ros.learn.trainer import TrainResult


@dataclass
class LearnResult:
    """What a learning call produced.

    Attributes:
        yaml_path: the learned ROS parameter file (None on ranks other than 0).
        params: learned values by node parameter name.
        metrics: losses before and after (``train_loss_before``, ``train_loss``, and
            ``val_loss_before``, ``val_loss`` when runs were kept for validation), ``epochs``,
            ``seconds`` and task numbers.
        history: per-epoch rows (see :class:`~diffopt_ros.learn.trainer.TrainResult`).
        out_dir: the output folder.
    """

    yaml_path: Path | None
    params: dict[str, float]
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path | None = None


def finish(result: TrainResult, out_dir: Path, began: float, extra: dict[str, float],
           node: str = 'mpc_node', name: str = 'mpc.yaml') -> LearnResult:
    """The :class:`LearnResult` of a training ``result``; rank 0 writes ``out_dir/name``
    (parameters of ``node``).

    Args:
        result: what :func:`~diffopt_ros.learn.trainer.train` returned.
        out_dir: the output folder.
        began: ``time.perf_counter()`` when the learning call began (``metrics['seconds']``
            counts from there).
        extra: task numbers added to the metrics.
        node: the ROS node the parameters are for.
        name: file name of the parameter YAML.
    """
    first, last = result.history[0], result.history[-1]
    metrics = {'train_loss_before': first['train_loss'], 'train_loss': last['train_loss']}
    if 'val_loss' in last:
        metrics.update(val_loss_before=first['val_loss'], val_loss=last['val_loss'])
    metrics.update(epochs=float(last['epoch']), seconds=time.perf_counter() - began, **extra)
    path = write_params_yaml(out_dir / name, node, result.params) if result.rank == 0 else None
    return LearnResult(path, dict(result.params), metrics, result.history, out_dir)
