"""diffopt_ros.mpc: models, costs, box QP, box-constrained LQR against an independent QP solver."""
import copy
import pickle

import numpy as np
import osqp
import pytest
import scipy.sparse as sp
import torch

from diffopt_ros.mpc import (
    MPC,
    Cartpole,
    DiffDriveLag,
    Dynamics,
    KinematicBicycle,
    LinearDynamics,
    NeuralResidual,
    Pendulum,
    QuadraticCost,
    ResidualCost,
    TrackingCost,
    Unicycle,
    autodiff_jacobians,
    rollout,
    shift_one_step,
)
from diffopt_ros.mpc.boxqp import solve_box_qp
from diffopt_ros.mpc.solve_blocks import solve_scope

D = torch.float64


@pytest.mark.parametrize('model', [
    DiffDriveLag(dt=0.1, gain_v=0.8, gain_omega=0.7, tau_v=0.25, tau_omega=0.2),
    Unicycle(dt=0.1), KinematicBicycle(dt=0.1), Pendulum(), Cartpole(),
    NeuralResidual(DiffDriveLag(dt=0.1), hidden=(8,)),
])
def test_analytic_jacobians_match_autodiff(model):
    model = model.to(D)
    if isinstance(model, NeuralResidual):
        torch.nn.init.normal_(model.mlp[-1].weight)
    x = torch.randn(3, 4, model.n_x, dtype=D)
    if isinstance(model, (Pendulum, Cartpole)):
        th = torch.randn(3, 4, dtype=D)
        i = 0 if isinstance(model, Pendulum) else 2
        x[..., i], x[..., i + 1] = th.cos(), th.sin()
    u = torch.randn(3, 4, model.n_u, dtype=D)
    A, B = model.jacobians(x, u)
    A_ref, B_ref = autodiff_jacobians(model.forward, x, u)
    assert A.shape == (3, 4, model.n_x, model.n_x) and B.shape == (3, 4, model.n_x, model.n_u)
    torch.testing.assert_close(A, A_ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(B, B_ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(model.stepper()(x, u), model(x, u))


@pytest.mark.parametrize('model', [DiffDriveLag(dt=0.1), Pendulum(mass=1.3), Cartpole(),
                                   LinearDynamics(torch.eye(3), torch.ones(3, 2))])
def test_rollout_fn_matches_stepping(model):
    """A model's roll-out (the pendulum's own recursion) = ``T`` calls of its step, values and
    gradients w.r.t. the initial state, the controls and the parameters; an unnormalised pendulum
    state is stepped as it is."""
    model = model.to(D)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, model.n_x, generator=g, dtype=D).requires_grad_()
    u = torch.randn(4, 7, model.n_u, generator=g, dtype=D).requires_grad_()
    leaves = [x, u, *model.parameters()]
    fused = model.rollout_fn()(x, u)
    stepped = rollout(model.stepper(), x, u)
    torch.testing.assert_close(fused, stepped, atol=1e-12, rtol=1e-12)
    w = torch.randn(stepped.shape, generator=g, dtype=D)
    grads = [torch.autograd.grad((states * w).sum(), leaves) for states in (fused, stepped)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize('model', [
    Pendulum(mass=1.3, length=0.8),
    DiffDriveLag(dt=0.1, gain_v=0.8, gain_omega=0.7, tau_v=0.25, tau_omega=0.2),
])
def test_closed_form_hessians_match_autodiff(model):
    model = model.to(D)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, model.n_x, generator=g, dtype=D)   # pendulum (cos, sin) not normalised: as stepped
    u = torch.randn(6, model.n_u, generator=g, dtype=D)
    lam = torch.randn(6, model.n_x, generator=g, dtype=D)
    torch.testing.assert_close(model.weighted_hessian(x, u, lam),
                               Dynamics.weighted_hessian(model, x, u, lam), atol=1e-12, rtol=1e-10)


def test_diff_drive_lag_contract():
    """The discrete model of docs/CONTRACTS.md: exact ZOH lag, midpoint pose, readable parameters."""
    dt, gv, gw, tv, tw = 0.1, 0.8, 0.7, 0.25, 0.2
    m = DiffDriveLag(dt=dt, gain_v=gv, gain_omega=gw, tau_v=tv, tau_omega=tw).to(D)
    assert m.parameter_values() == pytest.approx(dict(gain_v=gv, gain_omega=gw, tau_v=tv, tau_omega=tw))
    gv, gw, tv, tw = m.parameter_values().values()             # float32-rounded at construction
    names = {n for n, _ in m.named_parameters()}
    assert names == {'log_gain_v', 'log_gain_omega', 'log_tau_v', 'log_tau_omega'}
    x = torch.tensor([1.0, -2.0, 0.3, 0.5, -0.4], dtype=D)
    u = torch.tensor([0.9, 0.6], dtype=D)
    v1 = 0.5 + (1 - np.exp(-dt / tv)) * (gv * 0.9 - 0.5)
    w1 = -0.4 + (1 - np.exp(-dt / tw)) * (gw * 0.6 + 0.4)
    vm, wm = (0.5 + v1) / 2, (-0.4 + w1) / 2
    expect = [1.0 + dt * vm * np.cos(0.3 + dt * wm / 2), -2.0 + dt * vm * np.sin(0.3 + dt * wm / 2),
              0.3 + dt * wm, v1, w1]
    np.testing.assert_allclose(m(x, u).detach().numpy(), expect, rtol=1e-12)
    m.gain_v = 0.5
    assert float(m.gain_v.detach()) == pytest.approx(0.5)
    with pytest.raises(ValueError, match='gain_v'):
        m.gain_v = -1.0
    assert m.parameter_values()['tau_v'] == pytest.approx(tv)


def test_box_qp_matches_enumeration():
    torch.manual_seed(1)
    B, m = 64, 3
    M = torch.randn(B, m, m, dtype=D)
    H = M @ M.mT + 0.1 * torch.eye(m, dtype=D)
    g = 3 * torch.randn(B, m, dtype=D)
    lo, hi = -torch.rand(B, m, dtype=D), torch.rand(B, m, dtype=D)
    k, clamped = solve_box_qp(H, g, lo, hi, torch.zeros(B, m, dtype=D))
    grad = (H @ k.unsqueeze(-1)).squeeze(-1) + g
    assert ((k >= lo - 1e-12) & (k <= hi + 1e-12)).all()
    assert (grad[~clamped].abs() < 1e-9).all()                   # stationary on the free set
    assert ((k[clamped] - lo[clamped]).abs().lt(1e-12) | (k[clamped] - hi[clamped]).abs().lt(1e-12)).all()
    # global optimum: no feasible random point is better
    z = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(B, 2000, m, dtype=D)
    f = lambda y: (0.5 * (y @ H.mT) * y).sum(-1) + (g.unsqueeze(-2) * y).sum(-1)  # noqa: E731
    assert (f(k.unsqueeze(1)) <= f(z) + 1e-12).all()


def _random_lqr(B, T, n, m, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.eye(n, dtype=D) + 0.2 * torch.randn(n, n, generator=g, dtype=D)
    Bm = torch.randn(n, m, generator=g, dtype=D)
    c = 0.1 * torch.randn(n, generator=g, dtype=D)
    M = torch.randn(T, n + m, n + m, generator=g, dtype=D)
    C = M @ M.mT / (n + m) + 0.1 * torch.eye(n + m, dtype=D)
    q = torch.randn(T, n + m, generator=g, dtype=D)
    Mf = torch.randn(n, n, generator=g, dtype=D)
    x0 = 2 * torch.randn(B, n, generator=g, dtype=D)
    return A, Bm, c, C, q, Mf @ Mf.mT / n, x0


def _osqp_lqr(A, Bm, c, C, q, CT, x0, lo, hi):
    """The stacked QP in (x_1..x_T, u_0..u_{T-1}) solved by OSQP (float64, polished)."""
    T, n, m = C.shape[0], A.shape[0], Bm.shape[1]
    A, Bm, c, C, q, CT, x0 = (t.numpy() for t in (A, Bm, c, C, q, CT, x0))
    nx, nu = T * n, T * m
    P = np.zeros((nx + nu, nx + nu))
    lin = np.zeros(nx + nu)
    for t in range(T):
        iu = slice(nx + t * m, nx + (t + 1) * m)
        P[iu, iu] += C[t][n:, n:]
        lin[iu] += q[t][n:]
        if t == 0:
            lin[iu] += C[0][n:, :n] @ x0
        else:
            ix = slice((t - 1) * n, t * n)
            P[ix, ix] += C[t][:n, :n]
            P[ix, iu] += C[t][:n, n:]
            P[iu, ix] += C[t][n:, :n]
            lin[ix] += q[t][:n]
    ix = slice((T - 1) * n, T * n)
    P[ix, ix] += CT
    # dynamics: x_{t+1} - A x_t - B u_t = c
    Aeq = np.zeros((nx, nx + nu))
    beq = np.zeros(nx)
    for t in range(T):
        r = slice(t * n, (t + 1) * n)
        Aeq[r, r] = np.eye(n)
        Aeq[r, nx + t * m: nx + (t + 1) * m] = -Bm
        if t == 0:
            beq[r] = A @ x0 + c
        else:
            Aeq[r, (t - 1) * n: t * n] = -A
            beq[r] = c
    Abox = np.hstack((np.zeros((nu, nx)), np.eye(nu)))
    solver = osqp.OSQP()
    solver.setup(sp.csc_matrix(P), lin, sp.csc_matrix(np.vstack((Aeq, Abox))),
                 np.concatenate((beq, np.full(nu, lo))), np.concatenate((beq, np.full(nu, hi))),
                 eps_abs=1e-12, eps_rel=1e-12, max_iter=200000, polishing=True,
                 verbose=False)
    res = solver.solve(raise_error=True)
    return res.x[:nx].reshape(T, n), res.x[nx:].reshape(T, m)


@pytest.mark.parametrize('solver', ['riccati', 'condensed'])
@pytest.mark.parametrize('bounded', [False, True])
def test_box_lqr_matches_osqp(bounded, solver):
    B, T, n, m = 3, 12, 4, 3
    A, Bm, c, C, q, CT, x0 = _random_lqr(B, T, n, m, seed=3)
    lo, hi = (-0.4, 0.3) if bounded else (-np.inf, np.inf)
    mpc = MPC(LinearDynamics(A, Bm, c), QuadraticCost(C, q, n_x=n, C_final=CT), T,
              u_lower=lo if bounded else None, u_upper=hi if bounded else None,
              tolerance=1e-12, max_iterations=30, backward='none', solver=solver)
    sol = mpc(x0)
    assert sol.converged.all()
    if not bounded:                                                 # one exact Newton step
        mpc.max_iterations = 1
        torch.testing.assert_close(mpc(x0).controls, sol.controls, atol=1e-9, rtol=0)
    else:
        assert sol.clamped.any()                                    # bounds are active
    for b in range(B):
        xs, us = _osqp_lqr(A, Bm, c, C, q, CT, x0[b], lo, hi)
        np.testing.assert_allclose(sol.controls[b].numpy(), us, atol=1e-6)
        np.testing.assert_allclose(sol.states[b, 1:].numpy(), xs, atol=1e-6)
    torch.testing.assert_close(sol.costs, mpc.cost.total(sol.states, sol.controls), atol=1e-9, rtol=1e-12)
    again = mpc(x0, u_init=sol.controls)                            # warm start at the optimum
    assert again.converged.all() and (again.iterations == 1).all()
    torch.testing.assert_close(again.controls, sol.controls, atol=1e-9, rtol=0)


def test_unconstrained_lqr_closed_form():
    """Time-invariant LQR: the first control equals -K x0 from the finite-horizon Riccati recursion."""
    T, n, m = 15, 3, 2
    A, Bm, _, _, _, _, x0 = _random_lqr(2, T, n, m, seed=5)
    Q, R = torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=D)), 0.3 * torch.eye(m, dtype=D)
    C = torch.block_diag(Q, R)
    mpc = MPC(LinearDynamics(A, Bm), QuadraticCost(C, torch.zeros(n + m, dtype=D), n_x=n, C_final=Q), T,
              backward='none', solver='riccati')
    sol = mpc(x0)
    P = Q.clone()
    for _ in range(T):
        K = torch.linalg.solve(R + Bm.T @ P @ Bm, Bm.T @ P @ A)
        P = Q + A.T @ P @ (A - Bm @ K)
    torch.testing.assert_close(sol.controls[:, 0], -x0 @ K.T, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(sol.gains[:, 0], -K.expand(2, m, n), atol=1e-10, rtol=1e-10)


def _diff_drive_problem(dtype=D):
    model = DiffDriveLag(dt=0.1).to(dtype)
    cost = TrackingCost([10., 10., 1., 0.1, 0.1], [0.1, 0.1], terminal_scale=5., rate_weight=[0.5, 0.5],
                        angle_indices=model.angle_indices).to(dtype)
    return model, cost


@pytest.mark.parametrize('solver', ['riccati', 'condensed'])
def test_diff_drive_reaches_goal_with_bounds_and_warm_start(solver):
    model, cost = _diff_drive_problem()
    T = 30
    mpc = MPC(model, cost, T, u_lower=[-0.5, -1.5], u_upper=[1.0, 1.5], tolerance=1e-8, backward='none',
              solver=solver)
    x = torch.zeros(2, 5, dtype=D)
    goal = torch.tensor([[1.5, 0.5, 0.0, 0, 0], [-0.5, 1.0, 3.0, 0, 0]], dtype=D)
    sol = mpc(x, target=goal)
    assert sol.converged.all()
    assert sol.states.shape == (2, T + 1, 5) and sol.controls.shape == (2, T, 2) and sol.costs.shape == (2,)
    assert (sol.controls <= torch.tensor([1.0, 1.5], dtype=D) + 1e-12).all()
    assert (sol.controls >= torch.tensor([-0.5, -1.5], dtype=D) - 1e-12).all()
    torch.testing.assert_close(sol.states, rollout(model, x, sol.controls))
    # each sample's solution is independent of the batch it is solved in
    single = mpc(x[1:], target=goal[1:])
    torch.testing.assert_close(single.controls[0], sol.controls[1], atol=1e-7, rtol=0)
    # receding horizon: apply u_0, shift, warm start -> converges in fewer iterations
    cold_iters = []
    warm_iters = []
    for _ in range(3):
        x = sol.states[:, 1]
        warm = mpc(x, target=goal, u_init=shift_one_step(sol.controls), u_prev=sol.controls[:, 0])
        cold = mpc(x, target=goal, u_prev=sol.controls[:, 0])
        torch.testing.assert_close(warm.costs, cold.costs, atol=1e-6, rtol=1e-6)
        warm_iters.append(warm.iterations.float().mean())
        cold_iters.append(cold.iterations.float().mean())
        sol = warm
    assert sum(warm_iters) < sum(cold_iters)
    final = torch.linalg.norm(sol.states[:, -1, :2] - goal[:, :2], dim=-1)
    assert (final < 0.1).all()


def test_diff_drive_cost_from_node_parameters():
    cost = TrackingCost.diff_drive(position=4.0, heading=2.0, v=0.5, omega=0.25, v_cmd=0.1, omega_cmd=0.2,
                                   rate=0.3, terminal_scale=5.0)
    weights = cost.state_weight.diagonal().detach()
    torch.testing.assert_close(weights, torch.tensor([4.0, 4.0, 2.0, 0.5, 0.25]))
    torch.testing.assert_close(cost.control_weight.diagonal().detach(), torch.tensor([0.1, 0.2]))
    torch.testing.assert_close(cost.rate_weight.diagonal().detach(), torch.tensor([0.3, 0.3]))
    assert float(cost.terminal_scale) == pytest.approx(5.0) and cost.has_angles
    assert TrackingCost.diff_drive(rate=0.0).rate_weight is None


@pytest.mark.parametrize('rate, full', [(0.3, False), (0.0, False), (0.3, True)])
def test_tracking_cost_blocks_kept_in_inference_mode_are_those_formed_per_call(rate, full):
    """A solve's scope keeps the weight-only blocks of a TrackingCost between calls: the totals and
    expansions equal, bit for bit, those formed on every call (autograd mode), for batches 1 and 3,
    with and without ``u_prev``, diagonal and full weights, and follow weights changed between
    solves, copies and dtype changes."""
    cost = TrackingCost([4.0, 4.0, 2.0, 0.5, 0.25], [0.1, 0.2], terminal_scale=5.0,
                        rate_weight=[rate, rate] if rate else None, angle_indices=(2,), full=full).double()
    gen = torch.Generator().manual_seed(3)

    def compare(cost, dtype=D):
        for batch in (1, 3, 1):
            x = torch.randn(batch, 7, 5, dtype=dtype, generator=gen)
            u = torch.randn(batch, 6, 2, dtype=dtype, generator=gen)
            goal = torch.randn(batch, 5, dtype=dtype, generator=gen)
            for u_prev in (None, torch.randn(batch, 2, dtype=dtype, generator=gen)):
                reference = (cost.total(x, u, goal, u_prev), *cost.expand(x, u, goal, u_prev))
                with torch.inference_mode(), solve_scope():
                    for _ in range(2):                   # formed, then kept
                        kept = (cost.total(x, u, goal, u_prev), *cost.expand(x, u, goal, u_prev))
                        for a, b in zip(reference, kept):
                            assert (a is None and b is None) or torch.equal(a.detach(), b)

    compare(cost)
    cost.state_weight.set_([1.0, 2.0, 3.0, 4.0, 5.0])
    cost.control_weight.set_([0.7, 0.9])
    with torch.no_grad():
        cost.sqrt_terminal_scale.fill_(1.5)
    compare(cost)
    compare(pickle.loads(pickle.dumps(cost)))
    compare(copy.deepcopy(cost))
    compare(cost.float(), torch.float32)


def test_heading_error_is_wrapped():
    model, cost = _diff_drive_problem()
    x = torch.zeros(1, 3, 5, dtype=D)
    x[..., 2] = torch.tensor([3.1, -3.1, 0.0], dtype=D)
    goal = torch.tensor([[0.0, 0.0, -3.1, 0, 0]], dtype=D)
    e = cost.errors(x, goal)
    torch.testing.assert_close(e[0, :, 2], torch.tensor([6.2 - 2 * np.pi, 0.0, 3.1], dtype=D))


def test_reference_trajectory_and_float32():
    model, cost = _diff_drive_problem(torch.float32)
    T = 20
    ref = torch.zeros(1, T + 1, 5)
    ref[0, :, 0] = torch.linspace(0, 1.0, T + 1)
    mpc = MPC(model, cost, T, u_lower=[-0.5, -1.5], u_upper=[1.0, 1.5], tolerance=1e-4, backward='none')
    sol = mpc(torch.zeros(1, 5), target=ref)
    assert sol.states.dtype == torch.float32 and sol.converged.all()
    assert sol.states[0, -1, 0] > 0.7 and sol.states[0, :, 1].abs().max() < 1e-3


def test_errors_name_the_problem():
    model, cost = _diff_drive_problem()
    with pytest.raises(ValueError, match='backward'):
        MPC(model, cost, 10, backward='magic')
    mpc = MPC(model, cost, 10)
    with pytest.raises(ValueError, match='n_x=5'):
        mpc(torch.zeros(1, 4, dtype=D))
    with pytest.raises(ValueError, match='u_init'):
        mpc(torch.zeros(1, 5, dtype=D), u_init=torch.zeros(1, 9, 2, dtype=D))


class _TrackingResidual(torch.nn.Module):
    """``sqrt(w) * (x - goal)`` and ``sqrt(r) * u`` as one residual (mirrors a diagonal TrackingCost)."""

    def __init__(self, w, r):
        super().__init__()
        self.w, self.r = torch.tensor(w, dtype=D).sqrt(), torch.tensor(r, dtype=D).sqrt()

    def forward(self, x, u, target):
        e = x - target
        e = torch.cat((e[..., :2], torch.remainder(e[..., 2:3] + np.pi, 2 * np.pi) - np.pi, e[..., 3:]), -1)
        return torch.cat((self.w * e, self.r * u), -1)


def test_residual_cost_reproduces_tracking_cost():
    model, _ = _diff_drive_problem()
    w, r = [10., 10., 1., 0.1, 0.1], [0.1, 0.1]
    tracking = TrackingCost(w, r, terminal_scale=1.0, angle_indices=(2,)).to(D)
    stage = _TrackingResidual(w, r)
    residual = ResidualCost(stage, lambda x, g: stage(x, x[..., :2] * 0, g)[..., :5])
    x0 = torch.tensor([[0.0, 0.0, 3.0, 0.0, 0.0]], dtype=D)
    goal = torch.tensor([[1.0, 0.5, -3.0, 0, 0]], dtype=D)
    xs = torch.randn(1, 11, 5, dtype=D)
    us = torch.randn(1, 10, 2, dtype=D)
    torch.testing.assert_close(residual.total(xs, us, goal), tracking.total(xs, us, goal))
    a, b = residual.expand(xs, us, goal), tracking.expand(xs, us, goal)
    for name in ('lxx', 'lx', 'luu', 'lu'):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), msg=name)
    sols = [MPC(model, c, 8, u_lower=-1.0, u_upper=1.0, tolerance=1e-11, backward='none')(x0, target=goal)
            for c in (residual, tracking)]
    torch.testing.assert_close(sols[0].controls, sols[1].controls, atol=1e-6, rtol=0)


def test_a_deadline_stops_iterating_with_the_best_iterate():
    """A deadline already past: one iteration (the same as max_iterations 1), not converged,
    a cost no higher than the start's; no deadline: iterates to convergence."""
    import time
    model, cost = _diff_drive_problem()
    x = torch.zeros(1, 5, dtype=D)
    goal = torch.tensor([[1.5, 0.5, 0.0, 0, 0]], dtype=D)
    kwargs = dict(u_lower=[-0.5, -1.5], u_upper=[1.0, 1.5], backward='none')
    mpc = MPC(model, cost, 30, max_iterations=50, tolerance=0.0, **kwargs)
    late = mpc(x, target=goal, deadline=time.perf_counter())
    one = MPC(model, cost, 30, max_iterations=1, tolerance=0.0, **kwargs)(x, target=goal)
    assert int(late.iterations[0]) == 1 and not bool(late.converged[0])
    torch.testing.assert_close(late.controls, one.controls, atol=0, rtol=0)
    start_cost = cost.total(rollout(model, x, torch.zeros(1, 30, 2, dtype=D)),
                            torch.zeros(1, 30, 2, dtype=D), goal, None)
    assert float(late.costs[0]) <= float(start_cost[0])
    full = mpc(x, target=goal)
    assert int(full.iterations[0]) > 1 and float(full.costs[0]) <= float(late.costs[0])
