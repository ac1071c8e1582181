"""Nonlinear least squares: GTSAM-equal errors on w100 and subsets of w10000/sphere2500,
dense = sparse, batched = separate, robust losses, factors, covariances and I/O."""
import numpy as np
import pytest
import torch

from diffopt_ros.lie import SE2, SE3
from diffopt_ros.nlls import (
    AutoDiffFactor,
    BearingRangeFactor,
    Between,
    Cauchy,
    GemanMcClure,
    Huber,
    Objective,
    Optimizer,
    Prior,
    RangeFactor,
    Variable,
    Vector,
)
from diffopt_ros.nlls.io import GraphFormatError, read_graph, write_g2o

gtsam = pytest.importorskip('gtsam')
DT = torch.float64


def _data(name):
    return read_graph(gtsam.findExampleDataFile(name))


def _subgraph(data, n):
    """The first n poses and the edges among them."""
    keep = (data.i < n) & (data.j < n)
    data.poses = data.poses[:n]
    data.ids = data.ids[:n]
    data.i, data.j = data.i[keep], data.j[keep]
    data.measurements, data.information = data.measurements[keep], data.information[keep]
    return data


def _ours(data, **options):
    poses = Variable(data.group, data.poses, name='poses')
    d = data.group.dof
    prior = Prior(poses, [0], data.poses[:1], 1e6 * torch.eye(d, dtype=DT))
    edges = Between(poses, data.i, data.j, data.measurements, data.information)
    return Optimizer(Objective([prior, edges]), **options)


def _gtsam_error(data):
    """GTSAM's LM optimum for the same graph (prior on pose 0 with sigma 1e-3)."""
    graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
    planar = data.group is SE2
    perm = [3, 4, 5, 0, 1, 2]
    for k, p in enumerate(data.poses.numpy()):
        values.insert(k, gtsam.Pose2(*p) if planar else gtsam.Pose3(np.vstack((p, [0, 0, 0, 1]))))
    edges = zip(data.i.tolist(), data.j.tolist(), data.measurements.numpy(), data.information.numpy())
    for a, b, z, info in edges:
        if planar:
            model = gtsam.noiseModel.Gaussian.Information(info)
            graph.add(gtsam.BetweenFactorPose2(a, b, gtsam.Pose2(*z), model))
        else:
            model = gtsam.noiseModel.Gaussian.Information(info[np.ix_(perm, perm)])
            graph.add(gtsam.BetweenFactorPose3(a, b, gtsam.Pose3(np.vstack((z, [0, 0, 0, 1]))), model))
    d = 3 if planar else 6
    first = values.atPose2(0) if planar else values.atPose3(0)
    noise = gtsam.noiseModel.Diagonal.Sigmas(np.full(d, 1e-3))
    graph.add(gtsam.PriorFactorPose2(0, first, noise) if planar else gtsam.PriorFactorPose3(0, first, noise))
    result = gtsam.LevenbergMarquardtOptimizer(graph, values, gtsam.LevenbergMarquardtParams()).optimize()
    return graph.error(values), graph.error(result)


@pytest.mark.parametrize('name,n,solver', [
    ('w100.graph', 100, 'dense'), ('w100.graph', 100, 'sparse'),
    ('w10000.graph', 1500, 'sparse'), ('sphere2500.txt', 400, 'sparse')])
def test_lm_reaches_gtsam_error(name, n, solver):
    data = _subgraph(_data(name), n)
    initial, final = _gtsam_error(data)
    opt = _ours(data, linear_solver=solver)
    with torch.no_grad():
        result = opt.solve()
    assert float(result.initial_error[0]) == pytest.approx(initial, rel=1e-9)
    assert result.status == ['converged']
    assert float(result.error[0]) <= final * (1 + 1e-4)
    assert float(result.error[0]) >= final * (1 - 1e-3)  # the same optimum, not a different one


def test_gauss_newton_w100_and_dense_equals_sparse():
    data = _data('w100.graph')
    with torch.no_grad():
        dense = _ours(data, method='gn', linear_solver='dense').solve()
        sparse = _ours(data, method='gn', linear_solver='sparse').solve()
    assert dense.status == ['converged']
    assert float(dense.error[0]) == pytest.approx(0.568927, rel=1e-5)
    assert torch.allclose(dense.values[0], sparse.values[0], atol=1e-9)


@pytest.mark.parametrize('solver', ['dense', 'sparse'])
def test_batched_solve_equals_separate_solves(solver):
    data = _subgraph(_data('w100.graph'), 40)
    B = 4
    noise = 0.05 * torch.randn(B, len(data.i), 3, dtype=DT)
    meas = SE2.compose(data.measurements.expand(B, -1, -1), SE2.exp(noise))
    init = data.poses.expand(B, -1, -1).clone()

    def build(m, x0):
        poses = Variable(SE2, x0, name='poses')
        prior = Prior(poses, [0], data.poses[:1], 1e6 * torch.eye(3, dtype=DT))
        return Optimizer(Objective([prior, Between(poses, data.i, data.j, m, data.information)]),
                         linear_solver=solver)

    with torch.no_grad():
        batched = build(meas, init).solve()
        for b in range(B):
            alone = build(meas[b], init[b]).solve()
            assert torch.allclose(batched.values[0][b], alone.values[0][0], atol=1e-8)
            assert float(batched.error[b]) == pytest.approx(float(alone.error[0]), rel=1e-9)
            assert int(batched.iterations[b]) == int(alone.iterations[0])


@pytest.mark.parametrize('loss,model', [(Huber(1.3), 'Huber'), (Cauchy(0.7), 'Cauchy'),
                                        (GemanMcClure(1.1), 'GemanMcClure')])
def test_robust_losses_match_gtsam(loss, model):
    data = _subgraph(_data('w100.graph'), 30)
    perturbed = SE2.compose(data.poses, SE2.exp(0.3 * torch.randn(30, 3, dtype=DT)))
    poses = Variable(SE2, perturbed, name='poses')
    ours = Objective([Between(poses, data.i, data.j, data.measurements, 4 * data.information, loss=loss)])
    graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
    for k, p in enumerate(perturbed.numpy()):
        values.insert(k, gtsam.Pose2(*p))
    estimator = getattr(gtsam.noiseModel.mEstimator, model).Create(float(loss.scale))
    for a, b, z in zip(data.i.tolist(), data.j.tolist(), data.measurements.numpy()):
        noise = gtsam.noiseModel.Robust.Create(estimator, gtsam.noiseModel.Isotropic.Sigma(3, 0.5))
        graph.add(gtsam.BetweenFactorPose2(a, b, gtsam.Pose2(*z), noise))
    assert float(ours.error(ours.initial_values())[0]) == pytest.approx(graph.error(values), rel=1e-9)
    prior = Prior(poses, [0], data.poses[:1], 1e6 * torch.eye(3, dtype=DT))
    with torch.no_grad():
        result = Optimizer(Objective([prior, *ours.factors])).solve()
    assert result.status == ['converged']
    assert float(result.error[0]) < float(result.initial_error[0])


def test_autodiff_factor_matches_analytic_between():
    data = _subgraph(_data('w100.graph'), 20)
    poses = Variable(SE2, SE2.compose(data.poses, SE2.exp(0.1 * torch.randn(20, 3, dtype=DT))))

    def between(xi, xj, z):
        return SE2.log(SE2.between(z, SE2.between(xi, xj)))

    auto = AutoDiffFactor(between, [poses, poses], [data.i, data.j], 3, [data.measurements])
    analytic = Between(poses, data.i, data.j, data.measurements)
    values = [poses.value]
    la, lb = Objective([auto]).linearize(values), Objective([analytic]).linearize(values)
    assert torch.allclose(la.gradient, lb.gradient, atol=1e-10)
    assert torch.allclose(la.blocks[0], lb.blocks[0], atol=1e-10)


def test_linearization_equals_the_normal_equations_of_autodiff_jacobians():
    """Error, gradient and Gauss-Newton matrix of a batched objective that mixes both layouts
    of :meth:`Objective.linearize` (residuals of up to 3 entries with the edges last, SE(3)'s 6
    with batched products), shared, per-edge and batched informations and a robust loss, equal
    ``sum w J^T r`` and ``sum w J^T J`` of Jacobians by ``torch.func.jacrev`` through the
    retraction, assembled by the dense and the sparse solver."""
    from diffopt_ros.nlls import PoseToPoint
    from diffopt_ros.nlls.linear import DenseCholesky, SparseCholesky

    g = torch.Generator().manual_seed(3)
    B, N, M, K = 2, 7, 4, 5
    planar = Variable(SE2, SE2.exp(0.5 * torch.randn(B, N, 3, generator=g, dtype=DT)), name='planar')
    points = Variable(Vector(2), torch.randn(B, M, 2, generator=g, dtype=DT), name='points')
    spatial = Variable(SE3, SE3.exp(0.5 * torch.randn(B, K, 6, generator=g, dtype=DT)), name='spatial')

    def spd(*shape):
        a = torch.randn(*shape, generator=g, dtype=DT)
        return a @ a.mT + shape[-1] * torch.eye(shape[-1], dtype=DT)

    def measured(group, x, i, j, dof):
        """Measurements whose residuals are ``delta`` with rotation angles of 0.2-1 rad: away
        from 0, where the autodiff reference of closed forms like ``(1 - cos t) / t^2`` loses
        ``eps / t^2`` of relative accuracy (1e-9 at 5e-3 rad)."""
        delta = 0.3 * torch.randn(x.shape[0], len(i), dof, generator=g, dtype=DT)
        rot = delta[..., 2:] if group is SE2 else delta[..., 3:]
        norm = rot.norm(dim=-1, keepdim=True)
        rot.mul_((0.2 + 0.8 * torch.rand(norm.shape, generator=g, dtype=DT)) / norm)
        return group.compose(group.between(x[:, i], x[:, j]), group.exp(-delta))

    i, j = torch.tensor([0, 1, 2, 3, 4, 5, 0]), torch.tensor([1, 2, 3, 4, 5, 6, 4])
    k, l_ = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 0])
    factors = [
        Prior(planar, [0], SE2.identity(1, dtype=DT), spd(3, 3)),  # shared information
        Between(planar, i, j, measured(SE2, planar.value, i, j, 3), spd(B, len(i), 3, 3),
                loss=Huber(0.8)),  # batched measurements and informations, robust
        PoseToPoint(planar, points, [0, 2, 5, 6, 3], [0, 1, 2, 3, 3],
                    torch.randn(5, 2, generator=g, dtype=DT), spd(5, 2, 2)),
        Between(spatial, k, l_, measured(SE3, spatial.value, k, l_, 6)[0], spd(4, 6, 6), loss=Cauchy(1.5)),
        Prior(spatial, [0], SE3.identity(1, dtype=DT)),  # no information
    ]
    objective = Objective(factors)
    assert objective.edges_last == [True, True, True, False, False]
    values = objective.initial_values()
    lin = objective.linearize(values)

    def whitened(delta, b):
        """Per factor: whitened residuals ``(E, m)`` at ``values exp(delta)`` of problem b."""
        moved = objective.retract([x[b:b + 1] for x in values], delta[None])
        out = []
        for k, f in enumerate(factors):
            r, _ = f.residual_and_jacobians(objective._slot_values(k, moved), jacobians=False)
            r = r[b] if r.shape[0] > 1 else r[0]  # (E, m): batched measurements give (B, E, m)
            if f.information is not None:
                info = f.information if f.information.dim() < 4 else f.information[b]
                r = (torch.linalg.cholesky(info).mT @ r.unsqueeze(-1)).squeeze(-1)
            out.append(r)
        return out

    zero = torch.zeros(objective.dim, dtype=DT)
    for b in range(B):
        rs = whitened(zero, b)
        Js = torch.func.jacrev(lambda d, b=b: whitened(d, b))(zero)  # (E, m, n) per factor
        H = torch.zeros(objective.dim, objective.dim, dtype=DT)
        grad, error = torch.zeros(objective.dim, dtype=DT), 0.0
        for f, r, J in zip(factors, rs, Js):
            s = (r * r).sum(-1)
            w = torch.ones_like(s) if f.loss is None else f.loss.weight(s)
            error += float((0.5 * s if f.loss is None else f.loss.rho(s)).sum())
            grad += torch.einsum('e,emn,em->n', w, J, r)
            H += torch.einsum('e,emn,emk->nk', w, J, J)
        assert float(lin.error[b]) == pytest.approx(error, rel=1e-12)
        assert torch.allclose(lin.gradient[b], grad, rtol=1e-9, atol=1e-9)
        dense = DenseCholesky(objective).assemble(lin.blocks)[b]
        assert torch.allclose(dense, H, rtol=1e-9, atol=1e-9)
        sparse = SparseCholesky(objective, 'qdldl' if _installed('qdldl') else 'supernodal')
        Hs = torch.zeros_like(H)
        Hs[sparse.rows, sparse.cols] = sparse.assemble(lin.blocks)[b]
        assert torch.allclose(Hs, H, rtol=1e-9, atol=1e-9)


def _installed(backend: str) -> bool:
    from diffopt_ros.nlls.linear import sparse_backend
    try:
        sparse_backend(backend)
        return True
    except ImportError:
        return False


@pytest.mark.parametrize('solver', ['dense', 'sparse'])
def test_landmark_slam_2d_matches_gtsam(solver):
    """Poses with odometry, bearing-range and range to landmarks: same optimum as GTSAM."""
    truth = torch.tensor([[0, 0, 0], [1, 0, 0.3], [2, 0.4, 0.6], [2.5, 1.2, 1.4]], dtype=DT)
    marks = torch.tensor([[1.5, 2.0], [3.0, -0.5]], dtype=DT)
    pi, li = torch.tensor([0, 1, 2, 3, 0, 2]), torch.tensor([0, 0, 1, 1, 1, 0])
    local = SE2.act(SE2.inverse(truth[pi]), marks[li])
    br = torch.stack((torch.atan2(local[:, 1], local[:, 0]), local.norm(dim=-1)), -1)
    br = br + 0.02 * torch.randn(6, 2, dtype=DT)
    rng = (truth[pi, :2] - marks[li]).norm(dim=-1) + 0.02 * torch.randn(6, dtype=DT)
    odo = SE2.between(truth[:-1], truth[1:]) + 0.02 * torch.randn(3, 3, dtype=DT)
    x0 = SE2.compose(truth, SE2.exp(0.1 * torch.randn(4, 3, dtype=DT)))
    l0 = marks + 0.2 * torch.randn(2, 2, dtype=DT)
    poses, points = Variable(SE2, x0, 'poses'), Variable(Vector(2), l0, 'marks')
    info_br = torch.diag(torch.tensor([100.0, 25.0], dtype=DT))
    factors = [Prior(poses, [0], truth[:1], 1e4 * torch.eye(3, dtype=DT)),
               Between(poses, [0, 1, 2], [1, 2, 3], odo, 400 * torch.eye(3, dtype=DT)),
               BearingRangeFactor(poses, points, pi, li, br, info_br),
               RangeFactor(poses, points, pi, li, rng, torch.tensor([[16.0]], dtype=DT))]
    with torch.no_grad():
        ours = Optimizer(Objective(factors), linear_solver=solver, rel_tol=1e-10, abs_tol=1e-12).solve()
    graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
    L = lambda k: gtsam.symbol('l', k)  # noqa: E731
    for k, p in enumerate(x0.numpy()):
        values.insert(k, gtsam.Pose2(*p))
    for k, p in enumerate(l0.numpy()):
        values.insert(L(k), p)
    iso = gtsam.noiseModel.Isotropic.Sigma
    graph.add(gtsam.PriorFactorPose2(0, gtsam.Pose2(*truth[0].numpy()), iso(3, 1e-2)))
    for k in range(3):
        graph.add(gtsam.BetweenFactorPose2(k, k + 1, gtsam.Pose2(*odo[k].numpy()), iso(3, 0.05)))
    for k in range(6):
        p, m = int(pi[k]), L(int(li[k]))
        graph.add(gtsam.BearingRangeFactor2D(p, m, gtsam.Rot2(float(br[k, 0])), float(br[k, 1]),
                                             gtsam.noiseModel.Diagonal.Sigmas(np.array([0.1, 0.2]))))
        graph.add(gtsam.RangeFactor2D(p, m, float(rng[k]), iso(1, 0.25)))
    assert float(ours.initial_error[0]) == pytest.approx(graph.error(values), rel=1e-9)
    params = gtsam.LevenbergMarquardtParams()
    params.setRelativeErrorTol(1e-10)
    final = graph.error(gtsam.LevenbergMarquardtOptimizer(graph, values, params).optimize())
    assert float(ours.error[0]) == pytest.approx(final, rel=1e-6)


def test_marginal_covariance_matches_gtsam():
    data = _data('w100.graph')
    opt = _ours(data)
    with torch.no_grad():
        result = opt.solve()
    cov = opt.marginal_covariance(result.values, opt.objective.variables[0], 99)[0]
    graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
    for k, p in enumerate(result.values[0][0].numpy()):
        values.insert(k, gtsam.Pose2(*p))
    for a, b, z, info in zip(data.i.tolist(), data.j.tolist(), data.measurements.numpy(),
                             data.information.numpy()):
        model = gtsam.noiseModel.Gaussian.Information(info)
        graph.add(gtsam.BetweenFactorPose2(a, b, gtsam.Pose2(*z), model))
    graph.add(gtsam.PriorFactorPose2(0, values.atPose2(0), gtsam.noiseModel.Isotropic.Sigma(3, 1e-3)))
    ref = gtsam.Marginals(graph, values).marginalCovariance(99)
    assert np.allclose(cov.numpy(), ref, rtol=1e-6, atol=1e-12)


def test_g2o_round_trip_and_toro_conventions(tmp_path):
    for name in ('w100.graph', 'sphere2500.txt'):
        data = _subgraph(_data(name), 50)
        path = tmp_path / 'out.g2o'
        write_g2o(path, data)
        back = read_graph(path)
        assert back.group is data.group
        assert torch.allclose(back.poses, data.poses, atol=1e-7)
        assert torch.equal(back.i, data.i) and torch.equal(back.j, data.j)
        assert torch.allclose(back.information, data.information, rtol=1e-7)
    toro = tmp_path / 'toro.graph'
    toro.write_text('VERTEX2 0 0 0 0\nVERTEX2 1 1 0 0\nEDGE2 0 1 1 0 0 11 12 22 33 13 23\n')
    info = read_graph(toro).information[0]
    assert info.tolist() == [[11, 12, 13], [12, 22, 23], [13, 23, 33]]
    edge3 = tmp_path / 'e3.graph'
    upper = np.diag([1.0, 2, 3, 4, 5, 6])[np.triu_indices(6)]
    edge3.write_text('EDGE3 0 1 1 2 3 0.1 0.2 0.3 ' + ' '.join(f'{v:g}' for v in upper) + '\n')
    d3 = read_graph(edge3)
    assert torch.diagonal(d3.information[0]).tolist() == [4, 5, 6, 1, 2, 3]  # (rotation, translation) -> ours
    assert torch.allclose(d3.poses[1, :, 3], torch.tensor([1.0, 2, 3], dtype=DT))


@pytest.mark.parametrize('text,where', [
    ('VERTEX_SE2 0 0 0\n', ':1:'), ('VERTEX_SE2 0 0 0 0\nEDGE_SE2 0 1 a 0 0 1 0 0 1 0 1\n', ':2:'),
    ('# nothing\n', 'no vertices')])
def test_malformed_files_name_file_and_line(tmp_path, text, where):
    path = tmp_path / 'bad.g2o'
    path.write_text(text)
    with pytest.raises(GraphFormatError, match=where):
        read_graph(path)


def test_pgo_cli(tmp_path, capsys):
    from diffopt_ros.nlls import pgo_cli
    out, png = tmp_path / 'w100_opt.g2o', tmp_path / 'w100.png'
    assert pgo_cli.main([gtsam.findExampleDataFile('w100.graph'), '--out', str(out), '--plot', str(png)]) == 0
    text = capsys.readouterr().out
    assert 'initial error 38.544575' in text and 'final error 0.5689' in text and 'try   1' in text
    assert png.stat().st_size > 1000
    assert pgo_cli.main([str(out), '--solver', 'gn', '--quiet']) == 0
    assert 'final error 0.5689' in capsys.readouterr().out
    assert pgo_cli.main([str(tmp_path / 'missing.g2o')]) == 2  # a usage error


def test_se3_float32_solves():
    data = _subgraph(_data('sphere2500.txt'), 100)
    results = {}
    for dtype in (torch.float32, DT):
        poses = Variable(SE3, data.poses.to(dtype), name='poses')
        prior = Prior(poses, [0], data.poses[:1].to(dtype), 1e4 * torch.eye(6, dtype=dtype))
        edges = Between(poses, data.i, data.j, data.measurements.to(dtype), data.information.to(dtype))
        with torch.no_grad():
            results[dtype] = Optimizer(Objective([prior, edges])).solve()
    assert results[torch.float32].values[0].dtype == torch.float32
    assert float(results[torch.float32].error[0]) == pytest.approx(float(results[DT].error[0]), rel=1e-3)


def test_package_docstring_example_runs():
    """The differentiable pose-graph example in diffopt_ros.nlls' docstring (also in README)."""
    import textwrap

    import diffopt_ros.nlls as nlls
    code = textwrap.dedent(nlls.__doc__.split('::\n')[1])
    default = torch.get_default_dtype()
    scope = {}
    try:
        exec(compile(code, 'diffopt_ros/nlls/__init__.py docstring', 'exec'), scope)
    finally:
        torch.set_default_dtype(default)
    assert scope['result'].status == ['converged']
    grad = scope['log_w'].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize('backend', ['cholmod', 'supernodal', 'qdldl', 'cholespy', 'superlu'])
def test_sparse_backends_agree_with_dense(backend):
    from diffopt_ros.nlls.linear import sparse_backend
    try:
        sparse_backend(backend)
    except ImportError:
        pytest.skip(f'{backend} is not installed here')
    data = _subgraph(_data('w100.graph'), 60)
    sqrt_w = torch.ones(len(data.i), 3, dtype=DT, requires_grad=True)
    values, grads = [], []
    for kind, name in (('dense', 'auto'), ('sparse', backend)):
        poses = Variable(SE2, data.poses, name='poses')
        prior = Prior(poses, [0], data.poses[:1], 1e6 * torch.eye(3, dtype=DT))
        edges = Between(poses, data.i, data.j, data.measurements, torch.diag_embed(sqrt_w ** 2))
        opt = Optimizer(Objective([prior, edges]), linear_solver=kind, sparse_backend=name)
        result = opt.solve(backward='unroll')
        (grad,) = torch.autograd.grad(result.values[0][..., :2].square().sum(), sqrt_w)
        values.append(result.values[0].detach())
        grads.append(grad)
        cov = opt.marginal_covariance(result.values, poses, 59)
        assert cov.shape == (1, 3, 3)
    assert torch.allclose(values[0], values[1], atol=1e-9)
    assert torch.allclose(grads[0], grads[1], atol=1e-7, rtol=1e-6)
