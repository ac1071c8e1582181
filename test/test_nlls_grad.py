"""Gradients through the solve: implicit and unroll match central finite differences (float64)
for factor weights and measurements; truncated and dlm point the same way; every learnable
input gets a gradient."""
import pytest
import torch

from diffopt_ros.lie import SE2
from diffopt_ros.nlls import BACKWARD_MODES, Between, Huber, Objective, Optimizer, Prior, Variable

DT = torch.float64
N = 6
I = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
J = torch.tensor([1, 2, 3, 4, 5, 0, 3, 4])


@pytest.fixture(scope='module')
def problem():
    g = torch.Generator().manual_seed(3)
    ang = torch.arange(N, dtype=DT)
    truth = torch.stack((torch.cos(ang), torch.sin(ang), ang + 1.57), -1)
    meas = SE2.between(truth[I], truth[J]) + 0.1 * torch.randn(len(I), 3, generator=g, dtype=DT)
    log_w = torch.log(torch.tensor([50.0, 50.0, 100.0], dtype=DT))
    log_w = log_w + 0.3 * torch.randn(len(I), 3, generator=g, dtype=DT)
    init = SE2.compose(truth, SE2.exp(0.2 * torch.randn(N, 3, generator=g, dtype=DT)))
    target = torch.randn(N, 2, generator=g, dtype=DT)
    return truth, meas, log_w, init, target


def _loss(problem, meas, log_w, init=None, mode=None, steps=5, solver='dense', scale=None,
          iterations=None):
    """The test loss at the solution; ``iterations`` fixes the iteration count (no stopping
    test), which makes the solve one smooth map whose derivative unrolling computes exactly."""
    truth, _, _, init0, target = problem
    poses = Variable(SE2, init0 if init is None else init, name='poses')
    loss = None if scale is None else Huber(scale)
    edges = Between(poses, I, J, meas, information=torch.diag_embed(log_w.exp()), loss=loss)
    prior = Prior(poses, [0], truth[:1], information=1e4 * torch.eye(3, dtype=DT))
    if iterations is None:  # to convergence
        settings = dict(step_tol=1e-13, max_iterations=500)
    else:  # Gauss-Newton: no damping, whose adaptation unrolling treats as a constant
        settings = dict(method='gn', step_tol=0.0, max_iterations=iterations)
    opt = Optimizer(Objective([prior, edges]), linear_solver=solver, rel_tol=0, abs_tol=0,
                    **settings)
    if mode is None:
        with torch.no_grad():
            out = opt.solve()
    else:
        out = opt.solve(backward=mode, backward_steps=steps)
    x = out['poses'][0]
    return ((x[:, :2] - target) ** 2).sum() + torch.sin(x[:, 2]).sum()


def _central(problem, meas, log_w, eps=1e-6):
    grads = []
    for which in (0, 1):
        base = (meas, log_w)[which]
        g = torch.zeros_like(base)
        for k in range(base.numel()):
            hi, lo = base.clone(), base.clone()
            hi.view(-1)[k] += eps
            lo.view(-1)[k] -= eps
            args_hi = (hi, log_w) if which == 0 else (meas, hi)
            args_lo = (lo, log_w) if which == 0 else (meas, lo)
            g.view(-1)[k] = (_loss(problem, *args_hi) - _loss(problem, *args_lo)) / (2 * eps)
        grads.append(g)
    return torch.cat([g.flatten() for g in grads])


@pytest.fixture(scope='module')
def reference(problem):
    _, meas, log_w, _, _ = problem
    return _central(problem, meas, log_w)


def _analytic(problem, mode, steps=5, solver='dense'):
    _, meas0, log_w0, _, _ = problem
    meas, log_w = meas0.clone().requires_grad_(True), log_w0.clone().requires_grad_(True)
    _loss(problem, meas, log_w, mode=mode, steps=steps, solver=solver).backward()
    return torch.cat([meas.grad.flatten(), log_w.grad.flatten()])


@pytest.mark.parametrize('mode,solver', [('implicit', 'dense'), ('implicit', 'sparse'),
                                         ('unroll', 'dense'), ('unroll', 'sparse')])
def test_exact_modes_match_finite_differences(problem, reference, mode, solver):
    g = _analytic(problem, mode, steps=10, solver=solver)
    assert (g - reference).norm() / reference.norm() < 1e-5


def test_implicit_single_step_is_the_gauss_newton_approximation(problem, reference):
    one = _analytic(problem, 'implicit', steps=1)
    err = (one - reference).norm() / reference.norm()
    assert 1e-4 < err < 0.1  # misses only the second-order residual terms
    assert (_analytic(problem, 'implicit', steps=3) - reference).norm() / reference.norm() < err / 10


@pytest.mark.parametrize('mode', ['truncated', 'dlm'])
def test_approximate_modes_point_the_right_way(problem, reference, mode):
    g = _analytic(problem, mode, steps=2)
    cos = g @ reference / (g.norm() * reference.norm())
    assert cos > 0.9


def test_unroll_reaches_initial_values_and_robust_scale(problem):
    _, meas, log_w, init0, _ = problem
    init = init0.clone().requires_grad_(True)
    scale = torch.tensor(0.5, dtype=DT, requires_grad=True)
    for mode in BACKWARD_MODES:
        init.grad = scale.grad = None
        loss = _loss(problem, meas, log_w, init=init, mode=mode, scale=scale)
        loss.backward()
        assert scale.grad is not None and torch.isfinite(scale.grad) and scale.grad != 0
        if mode == 'unroll':
            assert init.grad is not None and init.grad.abs().sum() > 0
    # unroll differentiates the iterations it ran: on a fixed number of Gauss-Newton iterations
    # (no stopping test, whose outcome depends on the last bits of rounding, and no adaptive
    # damping, which unrolling holds constant) it is the exact derivative of that smooth map, so
    # it matches central differences of the same map up to the FD truncation error O(eps^2) and
    # the rounding O(u / eps): measured 2e-9..4e-7 relative here under three MKL/ATen code paths,
    # so 1e-5 holds on every CPU. (IRLS converges only linearly: an FD of the "converged" solve
    # measures where rounding stopped the solver, -0.0933..-0.0945 across code paths.)
    iterations, eps = 12, 1e-4
    hi, lo = (_loss(problem, meas, log_w, scale=0.5 + d, iterations=iterations) for d in (eps, -eps))
    fd = (hi - lo) / (2 * eps)
    scale.grad = None
    _loss(problem, meas, log_w, mode='unroll', scale=scale, iterations=iterations).backward()
    assert float(scale.grad) == pytest.approx(float(fd), rel=1e-5)
