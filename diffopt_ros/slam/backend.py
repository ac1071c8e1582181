"""The SLAM back end: keyframe poses, the edges between them, and their solve (no scans).

:class:`PoseGraphBackend` keeps the graph that :class:`~diffopt_ros.slam.system.SlamSystem`
builds (keyframe stamps and odometry poses, edges with measurements, kinds and scan-match
fitness) and its estimate. Per graph change it folds the new keyframes and edges into an
incremental solver (:class:`~diffopt_ros.nlls.incremental.IncrementalSmoother`, iSAM2-style:
only the top of the elimination tree that the new edges and the keyframes whose estimate
moved from their linearization point touch is re-eliminated, and the solution is
back-substituted down to where it stops changing); :meth:`PoseGraphBackend.solve_full` runs
batch Levenberg-Marquardt on the objective of :func:`~diffopt_ros.slam.graph.build_objective`
(the differentiable solver that learning uses; both reach the same optimum) and re-seeds the
incremental solver from it. Both solvers get their factors from the one assembly of
:mod:`diffopt_ros.slam.graph` (anchor prior, information by edge kind less the directions a
scan match did not measure, Huber on scan and loop edges).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import Optimizer
from diffopt_ros.nlls.bayes_tree import Marginal
from diffopt_ros.nlls.incremental import IncrementalSmoother
from diffopt_ros.nlls.io import write_g2o
from diffopt_ros.slam.config import SlamConfig
from diffopt_ros.slam.graph import (
    EDGE_KINDS,
    PRIOR_INFORMATION,
    SlamGraph,
    build_objective,
    edge_information,
    robust_edges,
    to_g2o_data,
)


class _Rows:
    """Rows of ``shape`` appended one at a time to an array with spare rows (doubled when
    full); ``rows`` is the filled part (a view)."""

    def __init__(self, shape: tuple[int, ...], dtype):
        self._data = np.zeros((64, *shape), dtype=dtype)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, row) -> None:
        if self._count == len(self._data):
            self._data = np.concatenate((self._data, np.zeros_like(self._data)))
        self._data[self._count] = row
        self._count += 1

    @property
    def rows(self) -> np.ndarray:
        return self._data[:self._count]


class PoseGraphBackend:
    """Keyframes, edges and the incremental solve of a SLAM pose graph.

    Args:
        config: settings (``weights``, thresholds, iteration and time caps); the attribute
            may be replaced between updates.
        device, dtype: of the estimate and the measurements.

    Attributes:
        estimate: ``(K, 3)`` keyframe poses ``(x, y, yaw)`` in the map frame (m, rad); may be
            written. On the CPU in float64 it is a view of an array that the solves update in
            place (no tensor is made per solve): a caller keeps a copy, not the tensor, of an
            estimate it wants to keep.
        full_solves: iterated updates and batch solves so far.
    """

    def __init__(self, config: SlamConfig, device: torch.device, dtype: torch.dtype):
        self.config = config
        self.device, self.dtype = torch.device(device), dtype
        self._shared = self.device.type == 'cpu' and dtype == torch.float64
        self._poses = np.zeros((0, 3))      # on the CPU in float64: the estimate's storage
        self.estimate = torch.zeros(0, 3, dtype=dtype, device=device)
        self.full_solves = 0
        # per keyframe and per edge in arrays, not lists of Python objects: a long run holds tens
        # of thousands of edges, which every full garbage collection would otherwise visit
        self._stamps = _Rows((), np.float64)
        self._odom = _Rows((3,), np.float64)                 # (x, y, yaw)
        self._edges = _Rows((2,), np.int64)                  # (i, j)
        self._pairs: set[tuple[int, int]] = set()
        self._measurements = _Rows((3,), np.float64)         # (x, y, yaw) of T_i^-1 T_j
        self._kinds = _Rows((), np.int64)
        self._fitness = _Rows((), np.float64)
        self._degenerate: dict[int, Tensor] = {}      # (3, 3) per edge with unmeasured directions
        self._covariance: Tensor | None = None           # (3, 3) of the newest keyframe, body frame
        self._marginal: Marginal | None = None            # its source, until first asked
        self._smoother: IncrementalSmoother | None = None
        self._smoother_settings: tuple = ()             # what its factors were built with
        self._sent_edges = 0                            # edges already in the smoother
        self._factor_of_kind: list[tuple[np.ndarray, float]] = []   # (information, Huber)

    # ------------------------------------------------------------------ the graph
    @property
    def num_keyframes(self) -> int:
        """Number of keyframes K."""
        return len(self._stamps)

    @property
    def num_edges(self) -> int:
        """Number of edges E."""
        return len(self._edges)

    def odom(self, k: int) -> tuple[float, float, float]:
        """Keyframe ``k``'s map-anchored odometry pose ``(x, y, yaw)``."""
        return tuple(self._odom.rows[k].tolist())

    def add_keyframe(self, stamp: float, odom, pose: Tensor) -> int:
        """Append a keyframe at ``pose (3,)`` (initial estimate); returns its index."""
        k = len(self._stamps)
        self._stamps.append(stamp)
        self._odom.append(tuple(odom))
        if not self._shared:
            self.estimate = torch.cat((self.estimate, pose.reshape(1, 3)))
            return k
        if k == len(self._poses):
            self._poses = np.concatenate((self._poses, np.zeros((max(64, k), 3))))
            self._poses[:k] = self.estimate.numpy()
        self._poses[k] = pose.detach().reshape(3).cpu().numpy()
        self.estimate = torch.from_numpy(self._poses[:k + 1])
        return k

    def _set_estimate(self, poses: np.ndarray) -> None:
        """The estimate becomes a copy of ``poses (K, 3)`` (float64)."""
        if self._shared:
            self._poses[:len(poses)] = poses
        else:
            self.estimate = torch.tensor(poses, dtype=self.dtype, device=self.device)

    def add_edge(self, i: int, j: int, measurement: Tensor, kind: int, fitness: float,
                 degenerate: Tensor | None = None) -> None:
        """Edge ``T_i^-1 T_j = measurement (3,)`` of ``kind`` (index into
        :data:`~diffopt_ros.slam.graph.EDGE_KINDS`) and scan-match ``fitness``; ``degenerate``
        ``(3, 3)``: the directions its scan match did not measure
        (:attr:`~diffopt_ros.slam.icp.ScanMatch.degenerate_directions`; None: none)."""
        self._edges.append((i, j))
        self._pairs.add((min(i, j), max(i, j)))
        self._measurements.append(measurement.detach().cpu().double().numpy())
        self._kinds.append(kind)
        self._fitness.append(float(fitness))
        if degenerate is not None and bool(degenerate.any()):
            self._degenerate[len(self._edges) - 1] = degenerate.detach().to(dtype=self.dtype,
                                                                              device=self.device)

    def edge_information(self, e: int) -> Tensor:
        """``(3, 3)`` information of edge ``e`` (:func:`~diffopt_ros.slam.graph.edge_information`:
        its kind's diagonal when its scan match measured every direction)."""
        by_kind = self.information_by_kind()
        held, kind = self._degenerate.get(e), int(self._kinds.rows[e])
        if held is None:
            return torch.diag(by_kind[kind])
        return edge_information(torch.tensor([kind], device=self.device), by_kind, held[None])[0]

    def _degenerate_of(self, e: int) -> Tensor:
        """``(3, 3)`` degenerate directions of edge ``e`` (zero columns: none)."""
        held = self._degenerate.get(e)
        return torch.zeros(3, 3, dtype=self.dtype, device=self.device) if held is None else held

    def linked(self, i: int, j: int) -> bool:
        """Whether an edge joins keyframes ``i`` and ``j`` (either way round)."""
        return (min(i, j), max(i, j)) in self._pairs

    def information_by_kind(self) -> Tensor:
        """``(3, 3)`` information diagonals per edge kind, from the weights."""
        return self.config.weights.information_by_kind(self.dtype, self.device)

    def graph(self) -> SlamGraph:
        """The pose graph as data (a snapshot)."""
        long = dict(dtype=torch.int64, device=self.device)
        return SlamGraph(
            stamps=torch.tensor(self._stamps.rows, dtype=torch.float64, device=self.device),
            odom_poses=torch.tensor(self._odom.rows, dtype=self.dtype, device=self.device),
            estimate=self.estimate.clone(),
            edges=torch.tensor(self._edges.rows, **long),
            measurements=torch.tensor(self._measurements.rows, dtype=self.dtype, device=self.device),
            kinds=torch.tensor(self._kinds.rows, **long),
            fitness=torch.tensor(self._fitness.rows, dtype=self.dtype, device=self.device),
            degenerate=(torch.stack([self._degenerate_of(e) for e in range(len(self._edges))])
                        if len(self._edges) else
                        torch.zeros(0, 3, 3, dtype=self.dtype, device=self.device)))

    def save_g2o(self, path) -> None:
        """Write the graph (current estimate, edges, information from the weights) as g2o."""
        if not len(self._edges):
            raise ValueError(f'{path}: the graph has no edges yet (fewer than 2 keyframes)')
        write_g2o(path, to_g2o_data(self.graph(), self.information_by_kind()))

    # ------------------------------------------------------------------ solving
    @property
    def covariance(self) -> Tensor | None:
        """``(3, 3)`` marginal covariance of the newest keyframe in its body frame (right
        perturbation; m², rad²) as of the last solve, None before the first solve; computed
        on first access after a solve (a solve itself does not compute it)."""
        if self._marginal is not None:
            self._covariance = torch.as_tensor(self._marginal.covariance(),
                                               dtype=self.dtype).to(self.device)
            self._marginal = None
        return self._covariance

    def _settings(self) -> tuple:
        cfg = self.config
        return (cfg.weights, cfg.relinearize_threshold, cfg.wildfire_threshold)

    def _sync_smoother(self) -> IncrementalSmoother:
        """The incremental solver with every keyframe and edge of the graph: new ones are
        added (keyframes at their current estimate); a new solver is built (at the current
        estimate) when the weights or thresholds changed since its factors were made."""
        cfg = self.config
        if self._smoother is None or self._smoother_settings != self._settings():
            self._smoother = IncrementalSmoother(SE2, cfg.relinearize_threshold,
                                                 cfg.wildfire_threshold)
            self._smoother_settings = self._settings()
            self._sent_edges = 0
            kinds = torch.arange(len(EDGE_KINDS))       # the factor of an edge of each kind
            by_kind = self.information_by_kind().cpu()
            information = edge_information(kinds, by_kind, by_kind.new_zeros(len(kinds), 3, 3))
            self._factor_of_kind = [
                (row, float(cfg.weights.robust_scale) if robust else 0.0)
                for row, robust in zip(information.numpy(), robust_edges(kinds).tolist())]
        smoother = self._smoother
        smoother.relinearize_max = cfg.relinearize_max
        first = smoother.num_variables
        if first < self.num_keyframes:
            poses = self._poses if self._shared else self.estimate.detach().cpu().numpy()
            for k in range(first, self.num_keyframes):
                smoother.add_variable(k, poses[k])
            if first == 0:
                smoother.add_prior(0, self.odom(0), PRIOR_INFORMATION * np.eye(3))
        sent = self._sent_edges
        rows = zip(self._edges.rows[sent:].tolist(), self._measurements.rows[sent:].tolist(),
                   self._kinds.rows[sent:].tolist())
        for e, ((i, j), measurement, kind) in enumerate(rows, start=sent):
            information, huber = self._factor_of_kind[kind]
            if e in self._degenerate:
                information = self.edge_information(e).cpu().numpy()
            smoother.add_between(i, j, measurement, information, huber)
        self._sent_edges = len(self._edges)
        return smoother

    @property
    def preparing(self) -> bool:
        """The incremental solver has a reorder in progress that :meth:`prepare` can advance."""
        return self._smoother is not None and self._smoother.preparing

    def prepare(self) -> bool:
        """Run a slice of the incremental solver's reorder in progress, if any, between keyframe
        steps (:meth:`IncrementalSmoother.prepare`); returns whether it did any work."""
        return self._smoother is not None and self._smoother.prepare()

    def solve(self, iterate: bool) -> None:
        """Fold the new keyframes and edges into the incremental solver; when ``iterate`` (a
        loop closure that disagrees with the estimate), run up to ``iterations - 1`` further
        updates that relinearize what moved, until nothing moves or ``max_solve_time``."""
        cfg = self.config
        smoother = self._sync_smoother()
        started = time.perf_counter()
        smoother.update()
        for _ in range(cfg.iterations - 1 if iterate else 0):
            if time.perf_counter() - started > cfg.max_solve_time:
                break
            if smoother.update().eliminated == 0:
                break
        self.full_solves += int(iterate)
        self._read_smoother()

    def _read_smoother(self) -> None:
        smoother = self._smoother
        self._set_estimate(smoother.estimate(copy=False))      # copied there
        try:
            self._marginal = smoother.marginal(self.num_keyframes - 1)
        except ValueError:      # no new factor on the newest keyframe: its marginal is kept
            pass

    def solve_full(self) -> None:
        """Re-solve the whole graph with batch Levenberg-Marquardt (``full_iterations``, the
        differentiable solver), warm-started from the estimate, and re-seed the incremental
        solver at its solution (every factor relinearized there, the tree re-ordered)."""
        if self.num_keyframes < 2:
            return
        cfg = self.config
        objective, _ = build_objective(self.graph(), self.information_by_kind(),
                                       cfg.weights.robust_scale)
        optimizer = Optimizer(objective, method='lm', max_iterations=cfg.full_iterations,
                              max_time=cfg.max_solve_time, dense_max=300)
        with torch.no_grad():
            result = optimizer.solve()
        self._set_estimate(result['poses'][0].detach().cpu().double().numpy())
        self.full_solves += 1
        self._smoother = None
        self._sync_smoother().update(relinearize=False)
        self._read_smoother()
