"""Implicit and unrolled MPC gradients against central finite differences (float64)."""
import pytest
import torch

from diffopt_ros.mpc import (
    MPC,
    DiffDriveLag,
    LinearDynamics,
    Pendulum,
    QuadraticCost,
    ResidualCost,
    TrackingCost,
)

D = torch.float64
EPS = 1e-6
TIGHT = dict(tolerance=1e-13, cost_tolerance=0.0, max_iterations=300)  # converge to round-off


def _directional_check(mpc, inputs, mode, seed=0):
    """d loss / d(inputs), d(dynamics parameters), d(cost parameters) along random directions vs FD."""
    g = torch.Generator().manual_seed(seed)
    sol = mpc(**inputs, backward='none')
    assert sol.converged.all()
    wx = torch.randn(sol.states.shape, generator=g, dtype=D)
    wu = torch.randn(sol.controls.shape, generator=g, dtype=D)

    def loss(**kw):
        s = mpc(**kw)
        return (s.states * wx).sum() + (s.controls * wu).sum()

    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items() if v is not None}
    mpc.zero_grad()
    loss(**leaves, backward=mode).backward()
    groups = {'inputs': [(inputs[k], leaves[k].grad) for k in leaves],
              'dynamics': [(p, p.grad) for p in mpc.dynamics.parameters()],
              'cost': [(p, p.grad) for p in mpc.cost.parameters()]}
    for name, pairs in groups.items():
        if not pairs:
            continue
        assert all(grad is not None for _, grad in pairs), f'missing gradient in {name}'
        directions = [torch.randn(value.shape, generator=g, dtype=D) for value, _ in pairs]
        analytic = sum(float((grad * d).sum()) for (_, grad), d in zip(pairs, directions))
        with torch.no_grad():
            for (value, _), d in zip(pairs, directions):
                value.add_(EPS * d)
            plus = loss(**inputs, backward='none')
            for (value, _), d in zip(pairs, directions):
                value.sub_(2 * EPS * d)
            minus = loss(**inputs, backward='none')
            for (value, _), d in zip(pairs, directions):
                value.add_(EPS * d)
        fd = float((plus - minus) / (2 * EPS))
        assert abs(analytic - fd) <= 1e-5 * max(1.0, abs(fd)), f'{mode} {name}: {analytic} vs FD {fd}'
    return sol


@pytest.mark.parametrize(('mode', 'solver'), [('implicit', 'riccati'), ('implicit', 'condensed'),
                                             ('unroll', 'riccati'), ('unroll', 'condensed')])
def test_diff_drive_gradients_with_active_bounds(mode, solver):
    model = DiffDriveLag(dt=0.1, gain_v=0.9, gain_omega=0.8, tau_v=0.2, tau_omega=0.15).to(D)
    cost = TrackingCost([10., 10., 1., 0.1, 0.1], [0.5, 0.3], terminal_scale=3., rate_weight=[0.5, 0.2],
                        angle_indices=model.angle_indices).to(D)
    mpc = MPC(model, cost, 8, u_lower=[-0.3, -1.0], u_upper=[0.6, 1.0], solver=solver, **TIGHT)
    inputs = dict(x_init=torch.tensor([[0., 0., 0.3, 0.1, 0.0], [0.2, -0.1, -0.5, 0.0, 0.2]], dtype=D),
                  target=torch.tensor([[1.0, 0.5, 0.0, 0, 0], [0.3, 0.4, 1.0, 0, 0]], dtype=D),
                  u_prev=torch.tensor([[0.1, 0.0], [0.0, 0.3]], dtype=D))
    sol = _directional_check(mpc, inputs, mode)
    assert sol.clamped.any(), 'the test must exercise active bounds'


def test_full_weight_matrices_and_reference_gradients():
    model = DiffDriveLag(dt=0.1).to(D)
    Q = torch.diag(torch.tensor([5., 4., 1., .2, .2]))
    Q[0, 1] = Q[1, 0] = 1.0
    cost = TrackingCost(Q, torch.tensor([[0.3, 0.1], [0.1, 0.2]]), full=True,
                        angle_indices=model.angle_indices).to(D)
    T = 6
    mpc = MPC(model, cost, T, u_lower=-0.8, u_upper=0.8, **TIGHT)
    ref = torch.zeros(1, T + 1, 5, dtype=D)
    ref[0, :, 0] = torch.linspace(0, 0.6, T + 1)
    ref[0, :, 1] = 0.2
    x0 = torch.tensor([[0., 0., 0.2, 0., 0.]], dtype=D)
    _directional_check(mpc, dict(x_init=x0, target=ref), 'implicit')


def test_linear_quadratic_gradients_with_active_bounds():
    g = torch.Generator().manual_seed(2)
    n, m, T = 3, 2, 6
    A = torch.eye(n, dtype=D) + 0.2 * torch.randn(n, n, generator=g, dtype=D)
    Bm = torch.randn(n, m, generator=g, dtype=D)
    M = torch.randn(n + m, n + m, generator=g, dtype=D)
    C = torch.nn.Parameter(M @ M.T / (n + m) + 0.2 * torch.eye(n + m, dtype=D))
    c = torch.nn.Parameter(torch.randn(n + m, generator=g, dtype=D))
    cost = QuadraticCost(C, c, n_x=n, C_final=torch.nn.Parameter(torch.eye(n, dtype=D)))
    mpc = MPC(LinearDynamics(A, Bm, 0.1 * torch.ones(n, dtype=D)), cost, T, u_lower=-0.5, u_upper=0.5,
              **TIGHT)
    sol = _directional_check(mpc, dict(x_init=2 * torch.randn(2, n, generator=g, dtype=D)), 'implicit')
    assert sol.clamped.any()


@pytest.mark.parametrize('mode', ['implicit', 'unroll'])
def test_gradients_without_control_bounds(mode):
    """No u_lower/u_upper at all: the implicit backward has no bound to move (it crashed on
    ``u <= None`` before)."""
    g = torch.Generator().manual_seed(5)
    n, m, T = 2, 1, 5
    A = torch.eye(n, dtype=D) + 0.1 * torch.randn(n, n, generator=g, dtype=D)
    Bm = torch.randn(n, m, generator=g, dtype=D)
    c = torch.nn.Parameter(torch.randn(n + m, generator=g, dtype=D))
    cost = QuadraticCost(torch.eye(n + m, dtype=D), c, n_x=n)
    mpc = MPC(LinearDynamics(A, Bm), cost, T, **TIGHT)
    sol = _directional_check(mpc, dict(x_init=torch.randn(2, n, generator=g, dtype=D)), mode)
    assert not sol.clamped.any()


def test_pendulum_physical_parameter_gradients():
    model = Pendulum(gravity=9.0, mass=1.2, length=0.9).to(D)
    q = torch.tensor([1., 1., 0.1, 0.01], dtype=D)
    goal = torch.tensor([1., 0., 0.], dtype=D)
    cost = QuadraticCost(torch.diag(q), torch.cat((-q[:3] * goal, torch.zeros(1, dtype=D))), n_x=3,
                         C_final=torch.diag(q[:3]), c_final=-q[:3] * goal)
    mpc = MPC(model, cost, 10, u_lower=-2.0, u_upper=2.0, **TIGHT)
    th = torch.tensor([0.6, -1.0], dtype=D)
    x0 = torch.stack((th.cos(), th.sin(), torch.tensor([0.5, 0.0], dtype=D)), -1)
    _directional_check(mpc, dict(x_init=x0), 'implicit')


def test_unconverged_samples_are_reported():
    model = DiffDriveLag(dt=0.1).to(D)
    cost = TrackingCost([10., 10., 1., 0.1, 0.1], [0.1, 0.1], angle_indices=(2,)).to(D)
    mpc = MPC(model, cost, 10, u_lower=-1.0, u_upper=1.0, max_iterations=1, tolerance=1e-12)
    x0 = torch.zeros(1, 5, dtype=D, requires_grad=True)
    with pytest.warns(RuntimeWarning, match='did not converge'):
        sol = mpc(x0, target=torch.tensor([[2.0, 1.0, 0, 0, 0]], dtype=D))
    assert not sol.converged.any()
    sol.states.sum().backward()
    assert torch.isfinite(x0.grad).all()


class _ObstacleResidual(torch.nn.Module):
    """Goal tracking plus a Gaussian obstacle penalty with a learnable centre (non-quadratic cost)."""

    def __init__(self):
        super().__init__()
        self.centre = torch.nn.Parameter(torch.tensor([0.5, 0.05], dtype=D))

    def forward(self, x, u, target):
        bump = 2.0 * torch.exp(-((x[..., :2] - self.centre) / 0.2).square().sum(-1, keepdim=True))
        return torch.cat((3.0 * (x[..., :2] - target[..., :2]), 0.3 * x[..., 2:], 0.3 * u, bump), -1)


def test_residual_cost_gradients_use_the_exact_hessian():
    model = DiffDriveLag(dt=0.1).to(D)
    cost = ResidualCost(_ObstacleResidual(), lambda x, g: 3.0 * (x[..., :2] - g[..., :2]))
    mpc = MPC(model, cost, 8, u_lower=-1.0, u_upper=1.0, **TIGHT)
    inputs = dict(x_init=torch.tensor([[0., 0., 0.0, 0., 0.]], dtype=D),
                  target=torch.tensor([[1.0, 0.0, 0.0, 0, 0]], dtype=D))
    _directional_check(mpc, inputs, 'implicit')


@pytest.mark.parametrize(('mode', 'solver'), [('implicit', 'riccati'), ('implicit', 'condensed'),
                                             ('unroll', 'condensed')])
def test_linear_tracking_gradients_wrt_target_u_prev_and_weights(mode, solver):
    """Linear dynamics and a quadratic tracking cost with a rate penalty: the stationarity is built
    from the expansion's gradient and the Jacobians (no double backward); checked against FD for the
    goal, the previous control, the weights and the dynamics, with active bounds (and through the
    triangular-solve roll-out when unrolled)."""
    g = torch.Generator().manual_seed(3)
    n, m, T = 4, 2, 7
    A = torch.eye(n, dtype=D) + 0.2 * torch.randn(n, n, generator=g, dtype=D)
    Bm = torch.randn(n, m, generator=g, dtype=D)
    cost = TrackingCost([2., 1., 0.5, 0.3], [0.2, 0.1], terminal_scale=3., rate_weight=[0.3, 0.1]).to(D)
    assert cost.quadratic
    mpc = MPC(LinearDynamics(A, Bm, 0.05 * torch.ones(n, dtype=D)), cost, T, u_lower=-0.4, u_upper=0.4,
              solver=solver, **TIGHT)
    inputs = dict(x_init=torch.randn(2, n, generator=g, dtype=D),
                  target=torch.randn(2, n, generator=g, dtype=D),
                  u_prev=0.2 * torch.randn(2, m, generator=g, dtype=D))
    sol = _directional_check(mpc, inputs, mode)
    assert sol.clamped.any(), 'the test must exercise active bounds'


def test_solutions_are_ordinary_tensors_and_second_derivatives_work():
    """The solver works in torch.inference_mode inside; what it hands out is usable with autograd,
    in place and inside a caller's inference mode, and the implicit backward supports create_graph."""
    g = torch.Generator().manual_seed(3)
    n, m, T = 3, 2, 5
    A = torch.eye(n, dtype=D) + 0.2 * torch.randn(n, n, generator=g, dtype=D)
    cost = QuadraticCost(torch.eye(n + m, dtype=D), torch.zeros(n + m, dtype=D), n_x=n)
    mpc = MPC(LinearDynamics(A, torch.randn(n, m, generator=g, dtype=D)), cost, T, u_lower=-0.5,
              u_upper=0.5, **TIGHT)
    x0 = 2 * torch.randn(2, n, generator=g, dtype=D)
    sol = mpc(x0, backward='none')
    assert not any(t.is_inference() for t in (sol.states, sol.controls, sol.costs, sol.clamped))
    w = torch.ones(T, m, dtype=D, requires_grad=True)
    (sol.controls * w).sum().backward()                # saved for backward: not an inference tensor
    sol.controls.add_(1.0)                             # in place outside inference mode
    with torch.inference_mode():
        assert mpc(x0).controls.is_inference()
    # second derivative of the implicit solution: d/dx0 of (d loss / dx0) . v against central FD

    def loss_grad(x, create_graph=False):
        x = x.clone().requires_grad_()
        return x, torch.autograd.grad(mpc(x).controls.square().sum(), x, create_graph=create_graph)[0]

    v = torch.randn(x0.shape, generator=g, dtype=D)
    x, grad = loss_grad(x0, create_graph=True)
    assert not grad.is_inference()
    (hess_v,) = torch.autograd.grad((grad * v).sum(), x)
    fd = (loss_grad(x0 + EPS * v)[1] - loss_grad(x0 - EPS * v)[1]) / (2 * EPS)
    assert torch.allclose(hess_v, fd, rtol=1e-5, atol=1e-7)
