"""Per-sample costs: ``QuadraticCost`` with ``C (B, T, n, n)``, ``c (B, T, n)``, ``C_final (B, n_x, n_x)``.

Each sample of a batch of 64 must get the solution it gets alone (its own cost data as a shared
cost), on both subproblem solvers, for linear dynamics and for the pendulum (which needs several
iterations, so the iterations run on subsets of the batch and the line search on repeated rows).
"""
import math

import pytest
import torch

from diffopt_ros.mpc import MPC, LinearDynamics, Pendulum, QuadraticCost

F64 = torch.float64
BATCH, T = 64, 8


def _per_sample_cost(n_x, n_u, generator):
    n = n_x + n_u
    L = torch.randn(BATCH, T, n, n, generator=generator, dtype=F64) * 0.3
    C = L @ L.mT + torch.diag_embed(torch.rand(BATCH, T, n, generator=generator, dtype=F64) + 0.05)
    c = torch.randn(BATCH, T, n, generator=generator, dtype=F64) * 0.5
    C_final = torch.diag_embed(torch.rand(BATCH, n_x, generator=generator, dtype=F64) + 0.5)
    c_final = torch.randn(BATCH, n_x, generator=generator, dtype=F64) * 0.2
    return C, c, C_final, c_final


def _problem(kind, generator):
    if kind == 'pendulum':
        model = Pendulum().double()
        th = (torch.rand(BATCH, generator=generator, dtype=F64) * 2 - 1) * math.pi
        x0 = torch.stack((th.cos(), th.sin(), torch.randn(BATCH, generator=generator, dtype=F64)), -1)
        return model, x0, -2.0, 2.0
    A = torch.eye(3, dtype=F64) + 0.1 * torch.randn(3, 3, generator=generator, dtype=F64)
    model = LinearDynamics(A, torch.randn(3, 2, generator=generator, dtype=F64))
    return model, torch.randn(BATCH, 3, generator=generator, dtype=F64), -0.5, 0.5


@pytest.mark.parametrize('kind', ['pendulum', 'lti'])
@pytest.mark.parametrize('solver', ['riccati', 'condensed'])
def test_per_sample_costs_match_single_solves(kind, solver):
    generator = torch.Generator().manual_seed(3)
    model, x0, lower, upper = _problem(kind, generator)
    C, c, C_final, c_final = _per_sample_cost(model.n_x, model.n_u, generator)
    options = dict(u_lower=lower, u_upper=upper, backward='none', solver=solver, tolerance=1e-10,
                   max_iterations=100)
    batch = MPC(model, QuadraticCost(C, c, model.n_x, C_final, c_final), T, **options)(x0)
    assert batch.converged.all()
    if kind == 'pendulum':
        assert batch.iterations.max() > 1 and batch.iterations.min() < batch.iterations.max()
    for b in range(0, BATCH, 9):
        own = QuadraticCost(C[b], c[b], model.n_x, C_final[b], c_final[b])
        alone = MPC(model, own, T, **options)(x0[b:b + 1])
        torch.testing.assert_close(batch.costs[b:b + 1], alone.costs, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(batch.controls[b:b + 1], alone.controls, rtol=1e-6, atol=1e-6)


def test_per_sample_cost_gradients_reach_each_row():
    """Implicit gradients w.r.t. per-sample cost data: sample b's loss moves only row b."""
    generator = torch.Generator().manual_seed(4)
    model, x0, lower, upper = _problem('lti', generator)
    C, c, C_final, c_final = _per_sample_cost(model.n_x, model.n_u, generator)
    c = c[:4].clone().requires_grad_()
    cost = QuadraticCost(C[:4], c, model.n_x, C_final[:4], c_final[:4])
    sol = MPC(model, cost, T, u_lower=lower, u_upper=upper, solver='riccati')(x0[:4])
    sol.controls[1].sum().backward()
    assert c.grad[1].abs().sum() > 0
    assert c.grad[[0, 2, 3]].abs().sum() == 0
