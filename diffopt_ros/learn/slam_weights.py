"""Learning the SLAM back-end's factor weights through the pose-graph solve.

From a run with ``/odom``, ``/scan`` and ``/ground_truth/odom``, :func:`keyframe_sequence`
replays the SLAM front end (:class:`~diffopt_ros.slam.system.SlamSystem`, configured like
``slam_node`` but adding a keyframe at every keyframe step, none re-used) to get the pose graph
of the run: keyframes, odometry edges, scan-match and loop-closure edges with their
measurements, of the same kinds and weights as the graph slam_node keeps. :class:`SlamObjective`
then re-solves each graph with learnable weights (``weights.odom_xy``, ``weights.odom_yaw``,
``weights.scan_xy``, ``weights.scan_yaw``, ``robust.scale``, stored as logarithms) and scores
the solution against the ground truth at the keyframe stamps; the gradient reaches the weights
through the solver (``implicit``, ``unroll``, ``truncated`` or ``dlm`` backward,
:mod:`diffopt_ros.nlls`).

The trajectory error is the absolute trajectory error after aligning the first keyframe to the
ground truth (the map frame starts at the first odometry pose): the mean squared position
error ``(m^2)`` per keyframe.

One run's whole-trajectory error is dominated by a few low-frequency drift directions of that
run's noise, and weights fitted to it overfit the run. :func:`sub_sequences` cuts a run's graph
into short windows (graphs of their own, each aligned at its first keyframe); ``learn_slam``
trains on those by default (``window=10``), many nearly independent samples of the same run.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffopt_ros.bag.align import interpolate_states
from diffopt_ros.learn.datasets import GROUND_TRUTH_TOPIC, ODOM_TOPIC, SCAN_TOPIC, DatasetError, RunData
from diffopt_ros.nlls import Optimizer
from diffopt_ros.params_file import read_params_file
from diffopt_ros.progress import Progress
from diffopt_ros.slam.config import SlamConfig, config_from_params
from diffopt_ros.slam.graph import SlamGraph, SlamWeights, build_objective, information_by_kind
from diffopt_ros.slam.system import SlamSystem

#: SlamWeights field -> slam_node parameter, in the order of the learnable log-values.
WEIGHT_FIELDS = ('odom_xy', 'odom_yaw', 'scan_xy', 'scan_yaw', 'robust_scale')


def slam_params(params_file: str | os.PathLike | None = None,
                learned_file: str | os.PathLike | None = None) -> dict:
    """The slam_node parameters: ``config/slam.yaml`` (or ``params_file``), then ``learned_file``."""
    from diffopt_ros.paths import config_path

    values = read_params_file(params_file or config_path('slam.yaml'), 'slam_node')
    if learned_file:
        values.update(read_params_file(learned_file, 'slam_node'))
    return values


def slam_config(params: dict) -> SlamConfig:
    """The front end's :class:`SlamConfig` as slam_node builds it from its parameters."""
    return config_from_params(params)


@dataclass
class KeyframeSequence:
    """One run's pose graph and the ground truth at its keyframes.

    Attributes:
        name: the run.
        graph: the graph the front end built (:class:`SlamGraph`; ``estimate`` is the online
            result with the weights used then).
        ground_truth: ``(K, 3)`` true ``(x, y, yaw)`` at the keyframe stamps (map frame).
    """

    name: str
    graph: SlamGraph
    ground_truth: torch.Tensor


def sub_sequences(sequence: KeyframeSequence, length: int, stride: int | None = None
                  ) -> list[KeyframeSequence]:
    """``sequence`` cut into windows of ``length`` keyframes every ``stride`` (default
    ``length // 2``), each a graph of its own: the edges with both ends inside (loop closures
    across windows drop out), anchored at the window's first estimated pose. The last window
    ends at the last keyframe. A sequence of at most ``length`` keyframes comes back whole."""
    count = len(sequence.graph.stamps)
    if length >= count:
        return [sequence]
    stride = max(1, stride or length // 2)
    starts = list(range(0, count - length, stride)) + [count - length]
    return [window(sequence, s, s + length) for s in sorted(set(starts))]


def window(sequence: KeyframeSequence, start: int, end: int) -> KeyframeSequence:
    """Keyframes ``start:end`` of ``sequence`` as a graph of their own (see
    :func:`sub_sequences`)."""
    graph = sequence.graph
    inside = ((graph.edges >= start) & (graph.edges < end)).all(-1)
    part = SlamGraph(stamps=graph.stamps[start:end], odom_poses=graph.estimate[start:end],
                     estimate=graph.estimate[start:end], edges=graph.edges[inside] - start,
                     measurements=graph.measurements[inside], kinds=graph.kinds[inside],
                     fitness=graph.fitness[inside], degenerate=graph.degenerate[inside])
    return KeyframeSequence(f'{sequence.name}[{start}:{end}]', part,
                            sequence.ground_truth[start:end])


def replay_scans(run: RunData, slam: SlamSystem, progress: Progress | None = None):
    """Feed ``run``'s scans to ``slam``, each with the odometry interpolated at its stamp (as
    slam_node pairs them), skipping scans outside the odometry or without a finite range.

    Yields:
        ``(index of the scan in run.scans, SlamUpdate)`` per scan processed.
    """
    scans = run.scans
    odom, ok = interpolate_states(run.odom.t, run.odom.values, scans.t, max_gap=0.5)
    if progress is not None:
        progress.update(int(len(ok) - ok.sum()))    # scans outside the odometry: skipped
    for k in np.flatnonzero(ok):
        if progress is not None:
            progress.update(1)
        if not np.isfinite(scans.ranges[k]).any():
            continue
        yield k, slam.process(float(scans.t[k]),
                              (odom[k, 0], odom[k, 1], math.remainder(odom[k, 2], 2 * math.pi)),
                              scans.ranges[k], scans.angles, scans.range_min, scans.range_max)


def keyframe_sequence(run: RunData, config: SlamConfig, dtype: torch.dtype = torch.float64,
                      progress: Progress | None = None) -> KeyframeSequence:
    """Replay the SLAM front end over ``run``'s scans with odometry interpolated at each scan,
    with ``config`` except that no keyframe is re-used (every keyframe step adds one).

    Args:
        run: the run.
        config: the front end's settings (as slam_node's).
        dtype: floating-point type of the graph.
        progress: counts every scan of the run (about 20 s for a 3-minute run: say so).

    Raises:
        DatasetError: the run lacks ``/odom``, ``/scan`` or ``/ground_truth/odom`` (named), or
            gives fewer than 3 keyframes.
    """
    for series, topic in ((run.odom, ODOM_TOPIC), (run.scans, SCAN_TOPIC),
                          (run.ground_truth, GROUND_TRUTH_TOPIC)):
        if series is None or len(series.t) < 2:
            raise DatasetError(f'{run.where}: topic {topic} is missing or has fewer than 2 '
                               f'messages (needed to learn the SLAM weights)')
    # every keyframe step adds a keyframe here (no re-use of keyframes in revisited places): each
    # pass gives its own odometry, scan and loop edges (more samples of the per-kind weights),
    # and consecutive keyframes stay linked, which the windows of sub_sequences rely on
    slam = SlamSystem(replace(config, reuse_distance=0.0), dtype=dtype)
    for _ in replay_scans(run, slam, progress):
        pass
    if slam.num_keyframes < 3:
        raise DatasetError(f'{run.where}: only {slam.num_keyframes} SLAM keyframes (the robot '
                           f'hardly moved?); need at least 3')
    graph = slam.graph()
    stamps = graph.stamps.cpu().numpy()
    truth, inside = interpolate_states(run.ground_truth.t, run.ground_truth.values, stamps)
    if not inside.all():
        raise DatasetError(f'{run.where}: {GROUND_TRUTH_TOPIC} does not cover the keyframes '
                           f'{stamps[~inside].tolist()[:5]}')
    return KeyframeSequence(run.name, graph, torch.as_tensor(truth[:, :3], dtype=dtype))


@dataclass
class Sequences:
    """Keyframe sequences as trainer items (one item per run)."""

    items: list[KeyframeSequence]

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, indices) -> list[KeyframeSequence]:
        return [self.items[i] for i in indices]

    def to(self, device) -> Sequences:
        def move(graph: SlamGraph) -> SlamGraph:
            return SlamGraph(**{k: v.to(device) for k, v in vars(graph).items()})

        return Sequences([KeyframeSequence(s.name, move(s.graph), s.ground_truth.to(device))
                          for s in self.items])


def aligned_positions(poses: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Positions ``(K, 2)`` of ``poses (K, 3)`` moved rigidly so the first pose lands on the
    first ground-truth pose ``truth (K, 3)``."""
    dyaw = truth[0, 2] - poses[0, 2]
    c, s = torch.cos(dyaw), torch.sin(dyaw)
    rel = poses[:, :2] - poses[:1, :2]
    rotated = torch.stack((c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1]), -1)
    return truth[:1, :2] + rotated


class SlamObjective(nn.Module):
    """Mean squared keyframe position error (m^2) of each graph re-solved with the weights.

    Args:
        weights: starting weights.
        backward: ``'implicit'``, ``'unroll'``, ``'truncated'`` or ``'dlm'``.
        iterations: Levenberg-Marquardt iterations per solve (from the online estimate).
        backward_steps: steps of the ``truncated`` backward, Newton refinement steps of
            ``implicit``.
        tolerance: relative and absolute error-decrease tolerance of the solver (None: the
            solver's defaults).
    """

    def __init__(self, weights: SlamWeights, backward: str = 'implicit', iterations: int = 20,
                 backward_steps: int = 5, tolerance: float | None = None):
        super().__init__()
        self.log_weights = nn.Parameter(torch.tensor(
            [math.log(getattr(weights, f)) for f in WEIGHT_FIELDS], dtype=torch.float64))
        self.backward, self.iterations, self.backward_steps = backward, iterations, backward_steps
        self.tolerance = tolerance

    def weights(self) -> torch.Tensor:
        """``(5,)`` ``odom_xy, odom_yaw, scan_xy, scan_yaw, robust_scale``."""
        return self.log_weights.exp()

    def solve(self, sequence: KeyframeSequence) -> torch.Tensor:
        """The re-solved keyframe poses ``(K, 3)``."""
        w = self.weights().to(sequence.graph.estimate)      # its device and dtype
        objective, _ = build_objective(sequence.graph, information_by_kind(*w[:4]), w[4])
        tolerances = {} if self.tolerance is None else {'rel_tol': self.tolerance,
                                                         'abs_tol': self.tolerance}
        optimizer = Optimizer(objective, max_iterations=self.iterations, backward=self.backward,
                              backward_steps=self.backward_steps, **tolerances)
        return optimizer.solve()['poses'][0]

    def forward(self, batch: list[KeyframeSequence]) -> torch.Tensor:
        """Per-run loss ``(b,)``: mean squared keyframe position error (m^2)."""
        losses = []
        for sequence in batch:
            positions = aligned_positions(self.solve(sequence), sequence.ground_truth)
            losses.append((positions - sequence.ground_truth[:, :2]).square().sum(-1).mean())
        return torch.stack(losses)

    @torch.no_grad()
    def report(self) -> dict[str, float]:
        values = self.weights().tolist()
        return SlamWeights(**dict(zip(WEIGHT_FIELDS, values))).as_params()


def trajectory_rmse(objective: SlamObjective, sequence: KeyframeSequence) -> float:
    """Keyframe position RMSE (m) of ``sequence`` solved with ``objective``'s weights."""
    with torch.no_grad():
        return float(objective([sequence])[0].sqrt())


def plot_sequences(path: Path, sequence: KeyframeSequence, before: torch.Tensor,
                   after: torch.Tensor) -> None:
    """Ground truth, odometry, and the graph solved with the starting and learned weights."""
    from diffopt_ros.learn.plots import plot_trajectories

    truth = sequence.ground_truth
    plot_trajectories(path, {
        'ground truth': truth[:, :2].cpu().numpy(),
        'odometry': aligned_positions(sequence.graph.odom_poses, truth).cpu().numpy(),
        'SLAM, starting weights': aligned_positions(before, truth).cpu().numpy(),
        'SLAM, learned weights': aligned_positions(after, truth).cpu().numpy()},
        f'{sequence.name}: keyframes')
