"""Differentiable cross-entropy method: soft top-k, optimisation quality, unrolled gradients."""
import torch

from diffopt_ros.mpc import CEM, MPC, DiffDriveLag, TrackingCost
from diffopt_ros.mpc.cem import soft_top_k

D = torch.float64


def test_soft_top_k_sums_to_k_and_hardens():
    scores = torch.stack([torch.randperm(50).to(D) * 0.1 for _ in range(4)])      # gaps of 0.1
    for temperature in (1.0, 0.1, 0.001):
        y = soft_top_k(scores, 5, temperature)
        torch.testing.assert_close(y.sum(-1), torch.full((4,), 5.0, dtype=D))
        assert ((y >= 0) & (y <= 1)).all()
    hard = torch.zeros_like(scores).scatter(-1, scores.topk(5, -1).indices, 1.0)
    torch.testing.assert_close(y, hard, atol=1e-6, rtol=0)


def test_soft_top_k_gradient_matches_finite_differences():
    scores = torch.randn(2, 12, dtype=D, requires_grad=True)
    w = torch.randn(2, 12, dtype=D)
    assert torch.autograd.gradcheck(lambda s: (soft_top_k(s, 3, 0.7, iterations=80) * w).sum(), (scores,),
                                    eps=1e-6, atol=1e-6)


def _problem():
    model = DiffDriveLag(dt=0.1).to(D)
    cost = TrackingCost([10., 10., 1., 0.1, 0.1], [0.1, 0.1], terminal_scale=5.,
                        angle_indices=model.angle_indices).to(D)
    x0 = torch.zeros(2, 5, dtype=D)
    goal = torch.tensor([[1.0, 0.3, 0.0, 0, 0], [0.5, -0.5, -1.0, 0, 0]], dtype=D)
    return model, cost, x0, goal


def test_cem_approaches_the_ilqr_optimum():
    model, cost, x0, goal = _problem()
    T, lo, hi = 15, -1.0, 1.0
    best = MPC(model, cost, T, u_lower=lo, u_upper=hi, backward='none')(x0, target=goal)
    cem = CEM(model, cost, T, lo, hi, samples=200, elites=20, iterations=15, temperature=0.1)
    with torch.no_grad():
        sol = cem(x0, target=goal, generator=torch.Generator().manual_seed(0))
    assert sol.states.shape == (2, T + 1, 5) and sol.controls.shape == (2, T, 2)
    assert (sol.costs >= best.costs - 1e-9).all()                   # iLQR's local optimum is global here
    assert (sol.costs <= 1.15 * best.costs).all()
    assert ((sol.controls >= lo) & (sol.controls <= hi)).all()


def test_cem_unrolled_gradients_match_finite_differences():
    model, cost, x0, goal = _problem()
    cem = CEM(model, cost, 8, -1.0, 1.0, samples=40, elites=5, iterations=4, temperature=1.0)
    w = torch.randn(2, 8, 2, dtype=D)

    def loss(goal):
        return (cem(x0, target=goal, generator=torch.Generator().manual_seed(1)).controls * w).sum()

    goal = goal.clone().requires_grad_()
    loss(goal).backward()
    direction = torch.randn_like(goal)
    eps = 1e-6
    with torch.no_grad():
        fd = (loss(goal + eps * direction) - loss(goal - eps * direction)) / (2 * eps)
    analytic = (goal.grad * direction).sum()
    assert abs(float(analytic - fd)) <= 1e-5 * max(1.0, abs(float(fd)))
    assert model.log_gain_v.grad is None or torch.isfinite(model.log_gain_v.grad)
