"""Levenberg-Marquardt survives failed factorizations: it raises the damping and retries (as
GTSAM and Ceres do) and reaches the optimum of an undisturbed solve; a non-positive-definite
information matrix is a ValueError naming the factor and edge, not a LinAlgError."""
import pytest
import torch

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import Between, Objective, Optimizer, PoseToPoint, Prior, Variable, Vector

DT = torch.float64


def _square_graph():
    """A noisy square driven twice (9 poses) with a loop closure."""
    gen = torch.Generator().manual_seed(3)
    step = torch.tensor([1.0, 0.0, torch.pi / 2], dtype=DT)
    odom = SE2.compose(step.expand(8, 3), SE2.exp(0.05 * torch.randn(8, 3, generator=gen, dtype=DT)))
    init = [SE2.identity(dtype=DT)]
    for z in odom:
        init.append(SE2.compose(init[-1], z))
    poses = Variable(SE2, torch.stack(init), name='poses')
    info = torch.diag(torch.tensor([100.0, 100.0, 400.0], dtype=DT))
    return Objective([Prior(poses, [0], SE2.identity(1, dtype=DT), 1e6 * torch.eye(3, dtype=DT)),
                      Between(poses, range(8), range(1, 9), odom, info),
                      Between(poses, [0], [8], torch.zeros(1, 3, dtype=DT), info)])


def _failing_first(opt: Optimizer, failures: int) -> None:
    """The first ``failures`` factorizations of ``opt`` fail: each is a try that is not a step."""
    real, calls = opt.linear.factorize, []

    def failing(H):
        factor, ok = real(H)
        calls.append(None)
        return factor, ok & (len(calls) > failures)

    opt.linear.factorize = failing


@pytest.mark.parametrize('linear', ['dense', 'sparse'])
@pytest.mark.parametrize('failures', [1, 4])
def test_lm_retries_failed_factorizations(linear, failures):
    reference = Optimizer(_square_graph(), linear_solver=linear, lambda_factor=10.0)
    with torch.no_grad():
        ref = reference.solve()
    opt = Optimizer(_square_graph(), linear_solver=linear, lambda_factor=10.0)
    _failing_first(opt, failures)  # e.g. CHOLMOD: not positive definite
    lambdas, accepted = [], []
    with torch.no_grad():
        result = opt.solve(callback=lambda it, err, lam, acc: (lambdas.append(float(lam[0])),
                                                               accepted.append(bool(acc[0]))))
    assert accepted[:failures] == [False] * failures and accepted[failures]
    # the damping after each failure: raised tenfold from the initial 1e-5
    assert lambdas[:failures] == pytest.approx([opt.lambda_init * 10 ** (k + 1) for k in range(failures)])
    assert result.status == ['converged']
    assert torch.allclose(result.error, ref.error, rtol=1e-9)
    assert torch.allclose(result.values[0], ref.values[0], atol=1e-8)


def test_lm_gives_up_cleanly_when_no_factorization_succeeds():
    opt = Optimizer(_square_graph(), linear_solver='dense', lambda_max=1e3)
    opt.linear.factorize = lambda H: (None, torch.zeros(H.shape[0], dtype=torch.bool))
    opt.linear.solve = lambda H, factor, rhs: torch.full_like(rhs, float('nan'))
    with torch.no_grad():
        result = opt.solve()
    assert result.status == ['failed'] and torch.equal(result.error, result.initial_error)


def test_max_steps_counts_accepted_steps_as_gtsam_counts_iterations():
    """GTSAM counts one LM iteration per linearization, however many dampings it tries first;
    ``max_steps`` caps those, ``max_iterations`` every try. With the first 3 factorizations
    failing, 2 steps take 5 tries and end where the uncapped solve is after its second step."""
    trace = []
    reference = Optimizer(_square_graph(), lambda_factor=10.0)
    _failing_first(reference, 3)
    with torch.no_grad():
        full = reference.solve(callback=lambda it, err, lam, acc: trace.append((bool(acc[0]), err.clone())))
    accepted = [err for acc, err in trace if acc]
    assert [acc for acc, _ in trace[:3]] == [False] * 3 and len(accepted) >= 3
    assert full.status == ['converged'] and int(full.steps[0]) == len(accepted)
    assert int(full.iterations[0]) == len(trace)
    capped = Optimizer(_square_graph(), lambda_factor=10.0, max_iterations=None, max_steps=2)
    _failing_first(capped, 3)
    with torch.no_grad():
        result = capped.solve()
    assert result.status == ['max_iterations']
    assert int(result.steps[0]) == 2 and int(result.iterations[0]) == 5
    assert torch.allclose(result.error, accepted[1], rtol=1e-12)
    tries = Optimizer(_square_graph(), lambda_factor=10.0, max_iterations=4, max_steps=2)
    _failing_first(tries, 3)
    with torch.no_grad():
        result = tries.solve()
    assert int(result.iterations[0]) == 4 and int(result.steps[0]) == 1
    with pytest.raises(ValueError, match='both None'):
        Optimizer(_square_graph(), max_iterations=None)


def test_non_positive_definite_information_names_factor_and_edge():
    poses = Variable(SE2, SE2.identity(3, dtype=DT))
    info = torch.eye(3, dtype=DT).repeat(2, 1, 1)
    info[1, 2, 2] = -1
    objective = Objective([Between(poses, [0, 1], [1, 2], SE2.identity(2, dtype=DT), info, name='odom')])
    with pytest.raises(ValueError, match="factor 'odom': the information matrix of edge 1 is not positive"):
        Optimizer(objective).solve()


def test_pose_to_point_jacobians_match_autodiff():
    from diffopt_ros.lie import SE3
    from diffopt_ros.nlls import AutoDiffFactor
    gen = torch.Generator().manual_seed(0)
    for G, k in ((SE2, 2), (SE3, 3)):
        x = G.exp(torch.randn(5, G.dof, generator=gen, dtype=DT))
        p = torch.randn(4, k, generator=gen, dtype=DT)
        xv, pv = Variable(G, x), Variable(Vector(k), p)
        pi, li = [0, 1, 2, 3, 4, 0], [0, 1, 2, 3, 0, 3]
        z = torch.randn(6, k, generator=gen, dtype=DT)
        analytic = PoseToPoint(xv, pv, pi, li, z)
        auto = AutoDiffFactor(lambda a, b, m, G=G: G.act(G.inverse(a), b) - m, [xv, pv], [pi, li], k, [z])
        values = [x[pi][None], p[li][None]]
        r1, J1 = analytic.residual_and_jacobians(values)
        r2, J2 = auto.residual_and_jacobians(values)
        assert torch.allclose(r1, r2, atol=1e-12)
        assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(J1, J2))


def test_bearing_range_2d_analytic_matches_autodiff():
    from diffopt_ros.nlls import AutoDiffFactor, BearingRangeFactor
    from diffopt_ros.nlls.factors import _bearing_range_2d
    gen = torch.Generator().manual_seed(1)
    x = SE2.exp(torch.randn(5, 3, generator=gen, dtype=DT))
    p = 3 * torch.randn(4, 2, generator=gen, dtype=DT)
    xv, pv = Variable(SE2, x), Variable(Vector(2), p)
    pi, li = [0, 1, 2, 3, 4, 0], [0, 1, 2, 3, 0, 3]
    bearing, rng = torch.rand(2, 6, generator=gen, dtype=DT)
    z = torch.stack((6 * bearing - 3, 5 * rng), 1)
    values = [x[pi][None], p[li][None]]
    r1, J1 = BearingRangeFactor(xv, pv, pi, li, z).residual_and_jacobians(values)
    r2, J2 = AutoDiffFactor(_bearing_range_2d, [xv, pv], [pi, li], 2, [z]).residual_and_jacobians(values)
    assert torch.allclose(r1, r2, atol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(J1, J2))
