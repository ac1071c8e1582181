"""Same solutions as mpc.pytorch (the reference implementation) on its pendulum and cart-pole."""
import pytest
import torch

from diffopt_ros.mpc import MPC, Cartpole, Pendulum, QuadraticCost, rollout

mpc_ref = pytest.importorskip('mpc.mpc')
pendulum_dx = pytest.importorskip('mpc.env_dx.pendulum')
cartpole_dx = pytest.importorskip('mpc.env_dx.cartpole')

D = torch.float64


def _reference(env, x0, T):
    """mpc.pytorch with its environment settings; its horizon counts states, ours steps.

    Returns states ``(B, T, n_x)`` and controls ``(B, T, n_u)`` (the last control only pays its own
    penalty: it is zero).
    """
    q, p = env.get_true_obj()
    B, n = x0.shape[0], env.n_state + env.n_ctrl
    solver = mpc_ref.MPC(env.n_state, env.n_ctrl, T, u_lower=env.lower, u_upper=env.upper, lqr_iter=100,
                         verbose=-1, exit_unconverged=False, detach_unconverged=False,
                         linesearch_decay=env.linesearch_decay, max_linesearch_iter=env.max_linesearch_iter,
                         grad_method=mpc_ref.GradMethods.AUTO_DIFF, eps=1e-8, n_batch=B)
    x, u, _ = solver(x0, mpc_ref.QuadCost(torch.diag(q.to(D)).expand(T, B, n, n), p.to(D).expand(T, B, n)),
                     env)
    return x.transpose(0, 1).detach(), u.transpose(0, 1).detach()


def _ours(model, env, x0, T, solver):
    """The same objective: T-1 steps with the stage cost on (x_t, u_t) and the state part on x_{T-1}."""
    q, p = env.get_true_obj()
    q, p, nx = q.to(D), p.to(D), env.n_state
    cost = QuadraticCost(torch.diag(q), p, n_x=nx, C_final=torch.diag(q[:nx]), c_final=p[:nx])
    mpc = MPC(model.to(D), cost, T - 1, u_lower=env.lower, u_upper=env.upper, tolerance=1e-10,
              cost_tolerance=0.0, max_iterations=200, backward='none', solver=solver)
    return mpc(x0), mpc


def _check(sol, mpc, x0, x_ref, u_ref):
    """Same trajectory; our objective at the reference's controls is never lower than at ours."""
    T = sol.controls.shape[1]
    assert sol.converged.all()
    u_peer = u_ref[:, :T]
    cost_peer = mpc.cost.total(rollout(mpc.dynamics, x0, u_peer), u_peer)
    assert (sol.costs <= cost_peer + 1e-12 * cost_peer.abs()).all()
    torch.testing.assert_close(sol.controls, u_peer, atol=2e-4, rtol=0)
    torch.testing.assert_close(sol.states, x_ref, atol=2e-4, rtol=0)


@pytest.mark.parametrize('solver', ['riccati', 'condensed'])
def test_pendulum_matches_mpc_pytorch(solver):
    env = pendulum_dx.PendulumDx()
    env.params = env.params.to(D)
    th = torch.tensor([-2.5, -1.0, 0.4, 1.7], dtype=D)
    x0 = torch.stack((th.cos(), th.sin(), torch.tensor([0.3, -0.5, 0.0, 0.8], dtype=D)), -1)
    T = 15
    x_ref, u_ref = _reference(env, x0, T)
    sol, mpc = _ours(Pendulum(), env, x0, T, solver)
    _check(sol, mpc, x0, x_ref, u_ref)


@pytest.mark.parametrize('solver', ['riccati', 'condensed'])
def test_cartpole_matches_mpc_pytorch(solver):
    env = cartpole_dx.CartpoleDx()
    env.params = env.params.to(D)
    th = torch.tensor([0.3, -0.6], dtype=D)
    pos, vel, th_dot = (torch.tensor(v, dtype=D) for v in ([0.2, -0.3], [0.0, 0.4], [0.1, -0.2]))
    x0 = torch.stack((pos, vel, th.cos(), th.sin(), th_dot), -1)
    T = 12
    x_ref, u_ref = _reference(env, x0, T)
    sol, mpc = _ours(Cartpole(), env, x0, T, solver)
    _check(sol, mpc, x0, x_ref, u_ref)
