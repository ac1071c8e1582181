"""Implicit gradients w.r.t. the control bounds, against finite differences of the converged solution.

A control held at a bound moves with it one to one; the free controls and the states follow through
the KKT conditions. Checked in float64 with central differences of the same solver, converged to a
tight tolerance, for fully and partially active bounds, linear and nonlinear dynamics, both solvers.
"""
import math

import pytest
import torch

from diffopt_ros.mpc import MPC, LinearDynamics, Pendulum, QuadraticCost

F64 = torch.float64


def _loss(sol, weights_x, weights_u):
    return (sol.states * weights_x).sum() + (sol.controls * weights_u).sum()


def _fd(solve, bound, loss, eps=1e-6):
    grad = torch.zeros_like(bound)
    flat = grad.view(-1)
    for i in range(bound.numel()):
        plus, minus = bound.detach().clone(), bound.detach().clone()
        plus.view(-1)[i] += eps
        minus.view(-1)[i] -= eps
        with torch.no_grad():
            flat[i] = (loss(solve(plus)) - loss(solve(minus))) / (2 * eps)
    return grad


def _lti():
    g = torch.Generator().manual_seed(5)
    A = torch.eye(3, dtype=F64) + 0.2 * torch.randn(3, 3, generator=g, dtype=F64)
    dyn = LinearDynamics(A, torch.randn(3, 2, generator=g, dtype=F64))
    cost = QuadraticCost(torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.1, 0.1], dtype=F64)),
                         torch.zeros(5, dtype=F64), n_x=3, C_final=10 * torch.eye(3, dtype=F64))
    return dyn, cost, 3.0 * torch.randn(2, 3, generator=g, dtype=F64)


def _pendulum():
    model = Pendulum().double()
    cost = QuadraticCost(torch.diag(torch.tensor([1.0, 1.0, 0.1, 0.001], dtype=F64)),
                         torch.tensor([-1.0, 0.0, 0.0, 0.0], dtype=F64), n_x=3)
    th = torch.tensor([2.0, -2.5], dtype=F64)
    return model, cost, torch.stack((th.cos(), th.sin(), torch.tensor([0.5, -0.3], dtype=F64)), -1)


@pytest.mark.parametrize('kind', ['lti', 'pendulum'])
@pytest.mark.parametrize('solver', ['condensed', 'riccati'])
def test_bound_gradients_match_finite_differences(kind, solver):
    dyn, cost, x0 = _lti() if kind == 'lti' else _pendulum()
    T, n_u = 6, dyn.n_u
    g = torch.Generator().manual_seed(6)
    # per-entry bounds: some tight (active), some loose (inactive)
    scale = 0.4 if kind == 'lti' else 1.0
    lower = (-scale * (0.5 + torch.rand(2, T, n_u, generator=g, dtype=F64))).requires_grad_()
    upper = (scale * (0.5 + torch.rand(2, T, n_u, generator=g, dtype=F64))).requires_grad_()
    wx = torch.randn(2, T + 1, dyn.n_x, generator=g, dtype=F64)
    wu = torch.randn(2, T, n_u, generator=g, dtype=F64)
    mpc = MPC(dyn, cost, T, solver=solver, tolerance=1e-12, cost_tolerance=1e-15, max_iterations=200)
    sol = mpc(x0, u_lower=lower, u_upper=upper)
    assert sol.converged.all()
    clamped = sol.clamped
    assert clamped.any() and not clamped.all(), 'the test needs partially active bounds'
    _loss(sol, wx, wu).backward()

    def loss(s):
        return _loss(s, wx, wu)

    fd_lower = _fd(lambda b: mpc(x0, u_lower=b, u_upper=upper.detach(), backward='none'), lower, loss)
    fd_upper = _fd(lambda b: mpc(x0, u_lower=lower.detach(), u_upper=b, backward='none'), upper, loss)
    torch.testing.assert_close(lower.grad, fd_lower, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(upper.grad, fd_upper, rtol=1e-5, atol=1e-6)
    assert lower.grad.abs().sum() > 0 and upper.grad.abs().sum() > 0
    # inactive bounds get no gradient
    at_lower = clamped & (sol.controls <= lower)
    assert (lower.grad[~at_lower] == 0).all()


def test_all_clamped_lower_bound_moves_the_controls_one_to_one():
    """The issue's case: every control clamped at a shared lower bound (n_u,)."""
    dyn = LinearDynamics(torch.eye(1, dtype=F64), torch.eye(1, dtype=F64))
    C = torch.diag(torch.tensor([0.0, 1.0], dtype=F64))
    cost = QuadraticCost(C, torch.tensor([0.0, 10.0], dtype=F64), n_x=1)
    lower = torch.tensor([-1.0], dtype=F64, requires_grad=True)
    for backward in ('implicit', 'unroll'):
        lower.grad = None
        sol = MPC(dyn, cost, 5, u_lower=lower, u_upper=1.0, backward=backward)(torch.zeros(1, 1, dtype=F64))
        assert sol.clamped.all()
        sol.controls.sum().backward()
        assert lower.grad is not None and math.isclose(float(lower.grad), 5.0, abs_tol=1e-12)
