"""SLAM back end (diffopt_ros.slam.backend): one pose-graph assembly for the incremental and the
batch solver, incremental updates against batch Levenberg-Marquardt, covariance in map axes."""
import math

import torch

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import Optimizer
from diffopt_ros.slam.backend import PoseGraphBackend
from diffopt_ros.slam.config import SlamConfig
from diffopt_ros.slam.graph import LOOP, ODOM, SCAN, SlamWeights, build_objective
from diffopt_ros.slam.system import _to_map_axes

F64 = torch.float64


def _circle(backend: PoseGraphBackend, count: int = 30, seed: int = 0) -> torch.Tensor:
    """Keyframes on a circle of radius 3 m, added one by one with noisy odometry and scan
    edges and a loop edge (one of them an outlier) every 10th, solving after each; returns
    the true poses ``(count, 3)``."""
    rng = torch.Generator().manual_seed(seed)
    angle = torch.linspace(0, 6.0, count, dtype=F64)
    truth = torch.stack((3 * torch.cos(angle), 3 * torch.sin(angle), angle + math.pi / 2), 1)
    noise = lambda scale: SE2.exp(scale * torch.randn(3, generator=rng, dtype=F64))  # noqa: E731
    backend.add_keyframe(0.0, truth[0].tolist(), truth[0])
    backend.solve(False)
    for k in range(1, count):
        step = SE2.between(truth[k - 1], truth[k])
        odom = SE2.compose(step, noise(0.02))
        backend.add_keyframe(float(k), SE2.compose(truth[0], odom).tolist(),
                             SE2.compose(backend.estimate[k - 1], odom))
        backend.add_edge(k - 1, k, odom, ODOM, 1.0)
        backend.add_edge(k - 1, k, SE2.compose(step, noise(0.005)), SCAN, 0.9)
        if k % 10 == 9:
            loop = SE2.between(truth[0], truth[k])
            if k == 19:
                loop = SE2.compose(loop, torch.tensor([0.5, 0.0, 0.0], dtype=F64))   # outlier
            backend.add_edge(0, k, loop, LOOP, 0.8)
        backend.solve(k % 10 == 9)
    return truth


def test_incremental_and_batch_solvers_get_the_same_factors_and_optimum():
    backend = PoseGraphBackend(SlamConfig(), torch.device('cpu'), F64)
    truth = _circle(backend)
    graph = backend.graph()
    assert graph.edges.shape == (2 * 29 + 3, 2) and backend.linked(19, 0)
    assert not backend.linked(0, 2)
    weights = SlamWeights()
    objective, _ = build_objective(graph, weights.information_by_kind(), weights.robust_scale)
    smoother = backend._sync_smoother()
    for values in (graph.estimate, truth, graph.estimate + 0.01):
        ours = smoother.error(values.numpy())
        batch = float(objective.error([values[None]])[0])
        assert math.isclose(ours, batch, rel_tol=1e-9), (ours, batch)
    # the incremental updates (Gauss-Newton steps on what moved more than the 1 cm
    # relinearization threshold, iterated up to 5 times after a loop) are near the batch
    # optimum; the batch solve of the back end (its re-seed) lands on it
    batch = Optimizer(objective, max_iterations=50, rel_tol=1e-12, abs_tol=1e-14).solve()['poses'][0]
    assert float((batch - graph.estimate).abs().max()) < 0.05
    # the Huber loss keeps the 0.5 m outlier loop from moving the poses by more than a fifth of it
    assert float((batch[:, :2] - truth[:, :2]).norm(dim=1).max()) < 0.15
    backend.solve_full()
    assert float((batch - backend.estimate).abs().max()) < 1e-3     # its default tolerances
    cov = backend.covariance
    assert torch.allclose(cov, cov.T) and bool((torch.linalg.eigvalsh(cov) > 0).all())


def test_the_path_of_a_cuda_device_runs_on_the_cpu_in_float32():
    """A back end on CUDA, or in float32, keeps its estimate in a tensor of its own (only a
    float64 back end on the CPU shares it with the incremental solver's numpy rows): the
    incremental updates, the covariance and the batch re-solve then copy between the two. Here
    that path runs on the CPU in float32, against float64 on the same circle: the smoother
    solves in float64 either way, so its estimate differs by the rounding of the float32
    inputs and outputs (or, were a rounding to flip a relinearization decision, by a
    linearization error of the 1 cm threshold's order squared: 1e-4 m); the batch re-solve runs
    Levenberg-Marquardt in float32 and lands within its default tolerances (1e-3, as above)."""
    runs = {}
    for dtype in (F64, torch.float32):
        backend = PoseGraphBackend(SlamConfig(), torch.device('cpu'), dtype)
        _circle(backend)
        incremental, covariance = backend.estimate.clone(), backend.covariance
        assert incremental.dtype == covariance.dtype == dtype
        backend.solve_full()
        assert backend.estimate.dtype == backend.covariance.dtype == dtype
        runs[dtype] = incremental.double(), covariance.double(), backend.estimate.double()
    (inc64, cov64, full64), (inc32, cov32, full32) = runs[F64], runs[torch.float32]
    assert float((inc64 - inc32).abs().max()) < 1e-4
    assert torch.allclose(cov32, cov64, rtol=1e-3, atol=1e-3 * float(cov64.abs().max()))
    assert float((full64 - full32).abs().max()) < 1e-3


def test_relinearize_max_bounds_each_update_and_follows_the_config(monkeypatch):
    """``SlamConfig.relinearize_max`` reaches the incremental solver (also when the config is
    replaced between solves); no update then relinearizes more keyframes (or more than one
    clique of the Bayes tree holds: the bound takes whole cliques), some leave keyframes beyond
    the threshold to the next ones, and the optimum is the unbounded one's."""
    from dataclasses import replace

    from diffopt_ros.nlls.incremental import IncrementalSmoother

    counts = []
    update = IncrementalSmoother.update

    def counted(self, *args, **kwargs):
        stats = update(self, *args, **kwargs)
        largest = max(len(clique.frontals) for clique in self._tree.clique_of if clique is not None)
        counts.append((self.relinearize_max, stats.relinearized, largest, bool(self._wave)))
        return stats

    monkeypatch.setattr(IncrementalSmoother, 'update', counted)
    free = PoseGraphBackend(SlamConfig(), torch.device('cpu'), F64)
    _circle(free)
    assert max(r for _, r, _, _ in counts) > 2
    counts.clear()
    bounded = PoseGraphBackend(replace(SlamConfig(), relinearize_max=2), torch.device('cpu'), F64)
    _circle(bounded)
    assert {cap for cap, _, _, _ in counts} == {2}
    assert all(r <= max(2, largest) for _, r, largest, _ in counts)
    assert sum(waiting for _, _, _, waiting in counts) >= 3
    # iterated to convergence (which lifts the bound), both reach the same optimum: to 1e-6,
    # as the solvers' other tests (Gauss-Newton on Huber edges converges linearly; each run stops
    # at a step below 1e-10 m or rad)
    optimum = [backend._sync_smoother() for backend in (free, bounded)]
    for smoother in optimum:
        assert smoother.converge(max_updates=500, tolerance=1e-10) < 500
    assert abs(optimum[0].estimate() - optimum[1].estimate()).max() < 1e-6
    bounded.config = replace(bounded.config, relinearize_max=0)
    bounded.add_keyframe(30.0, bounded.odom(29), bounded.estimate[29])
    bounded.add_edge(29, 30, torch.zeros(3, dtype=F64), ODOM, 1.0)
    bounded.solve(False)
    assert counts[-1][0] == 0


def test_edge_information_equals_that_of_the_graph():
    """The back end's information of one edge (its kind's diagonal without degenerate
    directions) equals :func:`edge_information` of the graph (to rounding), for every kind,
    with and without a degenerate direction."""
    from diffopt_ros.slam.graph import edge_information

    backend = PoseGraphBackend(SlamConfig(), torch.device('cpu'), F64)
    for k in range(3):
        backend.add_keyframe(float(k), (float(k), 0.0, 0.0), torch.tensor([float(k), 0.0, 0.0], dtype=F64))
    along = torch.zeros(3, 3, dtype=F64)
    along[0, 0] = 1.0                      # x not measured (a corridor)
    step = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    backend.add_edge(0, 1, step, ODOM, 1.0)
    backend.add_edge(1, 2, step, SCAN, 0.9)
    backend.add_edge(0, 2, 2 * step, LOOP, 0.8)
    backend.add_edge(0, 2, 2 * step, SCAN, 0.7, along)
    graph = backend.graph()
    expected = edge_information(graph.kinds, backend.information_by_kind(), graph.degenerate)
    for e in range(backend.num_edges):     # one edge against a batch of four: rounding may differ
        torch.testing.assert_close(backend.edge_information(e), expected[e], rtol=1e-12, atol=0.0)
    assert expected[3, 0, 0] < expected[1, 0, 0]      # the degenerate scan edge lost weight along x


def test_covariance_in_map_axes_is_the_body_covariance_rotated():
    body = torch.tensor([[4.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 0.3]], dtype=F64)
    yaw = torch.tensor(0.7, dtype=F64)
    world = _to_map_axes(body, yaw)
    c, s = math.cos(0.7), math.sin(0.7)
    rotate = torch.tensor([[c, -s], [s, c]], dtype=F64)
    assert torch.allclose(world[:2, :2], rotate @ body[:2, :2] @ rotate.T)
    assert world[2, 2] == body[2, 2]
    assert torch.allclose(torch.linalg.eigvalsh(world), torch.linalg.eigvalsh(body))


def test_covariance_is_solved_for_on_first_access_and_stays_that_of_its_solve():
    """A solve keeps only the root clique's factor; the covariance is solved for when first
    read, equals the smoother's marginal at that solve, and a marginal read after later
    solves is still the one of its own solve."""
    backend = PoseGraphBackend(SlamConfig(), torch.device('cpu'), F64)
    _circle(backend, count=12)
    pending = backend._marginal
    assert pending is not None and backend._covariance is None       # not read yet
    expected = backend._smoother.marginal_covariance(11)
    odom = torch.tensor([0.3, 0.0, 0.1], dtype=F64)
    backend.add_keyframe(12.0, (0.0, 0.0, 0.0), SE2.compose(backend.estimate[11], odom))
    backend.add_edge(11, 12, odom, ODOM, 1.0)
    backend.solve(False)
    assert torch.equal(torch.from_numpy(pending.covariance()), torch.from_numpy(expected))
    newest = backend._smoother.marginal_covariance(12)
    assert not torch.allclose(torch.from_numpy(newest), torch.from_numpy(expected))
    assert torch.equal(backend.covariance, torch.from_numpy(newest)) and backend._marginal is None


def _corridor(degenerate: torch.Tensor | None, count: int = 40) -> PoseGraphBackend:
    """Keyframes 0.5 m apart along a corridor (the x axis): odometry edges right along it but
    drifting across it (1 cm and 0.005 rad per step), scan edges right across it but short
    along it (0.45 m, as a scan match that slid), with ``degenerate`` directions; solved
    after each keyframe."""
    backend = PoseGraphBackend(SlamConfig(), torch.device('cpu'), F64)
    odom = torch.tensor([0.5, 0.01, 0.005], dtype=F64)
    scan = torch.tensor([0.45, 0.0, 0.0], dtype=F64)
    backend.add_keyframe(0.0, (0.0, 0.0, 0.0), torch.zeros(3, dtype=F64))
    backend.solve(False)
    for k in range(1, count):
        backend.add_keyframe(float(k), (0.0, 0.0, 0.0), SE2.compose(backend.estimate[k - 1], odom))
        backend.add_edge(k - 1, k, odom, ODOM, 1.0)
        backend.add_edge(k - 1, k, scan, SCAN, 0.9, degenerate)
        backend.solve(False)
    return backend


def test_in_a_corridor_the_estimate_along_it_follows_the_odometry():
    """Scan edges whose match was degenerate along the corridor do not pull the estimate
    along it (the odometry sets it) and still correct the heading drift of the odometry;
    without the degenerate direction the scan's along-axis slide wins (its weight is 4x the
    odometry's). The incremental and the batch solver see the same per-edge information."""
    axis = torch.zeros(3, 3, dtype=F64)
    axis[0, 0] = 1.0
    backend = _corridor(axis)
    last, slid = backend.estimate[-1], _corridor(None).estimate[-1]
    assert abs(float(last[0]) - 0.5 * 39) < 0.01, 'along: the odometry (19.5 m)'
    assert float(slid[0]) < 0.5 * 39 - 1.0, 'full information: the scans slide it (about 18 m)'
    assert abs(float(last[2])) < 0.1 * 39 * 0.005, 'the scans correct most of the heading drift'
    graph = backend.graph()
    weights = SlamWeights()
    objective, _ = build_objective(graph, weights.information_by_kind(), weights.robust_scale)
    smoother = backend._sync_smoother()
    for values in (graph.estimate, graph.estimate + 0.01):
        assert math.isclose(smoother.error(values.numpy()),
                            float(objective.error([values[None]])[0]), rel_tol=1e-9)
    # the batch optimum is within the incremental solver's relinearization threshold (0.01)
    backend.solve_full()
    assert torch.allclose(backend.estimate, graph.estimate, atol=0.01)
    assert abs(float(backend.estimate[-1, 0]) - 0.5 * 39) < 0.01
