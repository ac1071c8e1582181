"""Per-sample, time-varying linear dynamics (mpc.pytorch's ``LinDx``): the same solutions as
mpc.pytorch, per-sample rows kept apart, and implicit gradients w.r.t. the matrices."""
import pytest
import torch

from diffopt_ros.mpc import MPC, LinearDynamics, QuadraticCost

mpc_ref = pytest.importorskip('mpc.mpc')
D = torch.float64
BATCH, KNOTS, N_X, N_U = 4, 7, 3, 2                # mpc.pytorch counts knots: our horizon is KNOTS - 1


def _problem(seed):
    g = torch.Generator().manual_seed(seed)
    n = N_X + N_U
    F = torch.cat((torch.eye(N_X, dtype=D) + 0.3 * torch.randn(KNOTS, BATCH, N_X, N_X, generator=g, dtype=D),
                   torch.randn(KNOTS, BATCH, N_X, N_U, generator=g, dtype=D)), -1)
    f = 0.1 * torch.randn(KNOTS, BATCH, N_X, generator=g, dtype=D)
    q = torch.rand(KNOTS, BATCH, n, generator=g, dtype=D) + 0.1
    C = torch.diag_embed(q)                                       # no state-control coupling
    c = 0.5 * torch.randn(KNOTS, BATCH, n, generator=g, dtype=D)
    c[-1, :, N_X:] = 0.0                                          # the last knot's control stays zero
    x0 = torch.randn(BATCH, N_X, generator=g, dtype=D)
    return F, f, C, c, x0


def _ours(F, f, C, c, T):
    dyn = LinearDynamics.from_lindx(F[:T].transpose(0, 1), f[:T].transpose(0, 1))
    cost = QuadraticCost(C[:T].transpose(0, 1), c[:T].transpose(0, 1), n_x=N_X, C_final=C[T][:, :N_X, :N_X],
                         c_final=c[T][:, :N_X])
    return dyn, cost


@pytest.mark.parametrize('solver', ['riccati', 'condensed'])
def test_time_varying_per_sample_lindx_matches_mpc_pytorch(solver):
    F, f, C, c, x0 = _problem(0)
    reference = mpc_ref.MPC(N_X, N_U, KNOTS, u_lower=-0.5, u_upper=0.5, lqr_iter=50, verbose=-1,
                            exit_unconverged=False, eps=1e-10, n_batch=BATCH)
    x_ref, u_ref, _ = reference(x0, mpc_ref.QuadCost(C, c), mpc_ref.LinDx(F, f))
    x_ref, u_ref = x_ref.transpose(0, 1), u_ref.transpose(0, 1)
    T = KNOTS - 1
    dyn, cost = _ours(F, f, C, c, T)
    sol = MPC(dyn, cost, T, u_lower=-0.5, u_upper=0.5, backward='none', solver=solver, tolerance=1e-12)(x0)
    assert sol.converged.all() and sol.clamped.any()
    torch.testing.assert_close(sol.controls, u_ref[:, :T], atol=1e-6, rtol=0)
    torch.testing.assert_close(sol.states, x_ref, atol=1e-6, rtol=0)
    # each sample alone (its own matrices, time-varying but not batched) gives the same solution
    for b in range(BATCH):
        alone_dyn = LinearDynamics(dyn.A[b], dyn.B[b], dyn.c[b])
        alone_cost = QuadraticCost(cost.C[b], cost.c[b], n_x=N_X, C_final=cost.C_final[b],
                                   c_final=cost.c_final[b])
        alone = MPC(alone_dyn, alone_cost, T, u_lower=-0.5, u_upper=0.5, backward='none', solver=solver,
                    tolerance=1e-12)(x0[b:b + 1])
        torch.testing.assert_close(alone.controls, sol.controls[b:b + 1], atol=1e-9, rtol=0)


def test_time_varying_matrices_get_implicit_gradients():
    F, f, C, c, x0 = _problem(1)
    T = KNOTS - 1
    F_ours = F[:T].transpose(0, 1).clone().requires_grad_()
    f_ours = f[:T].transpose(0, 1)
    cost = QuadraticCost(C[:T].transpose(0, 1), c[:T].transpose(0, 1), n_x=N_X, C_final=C[T][:, :N_X, :N_X],
                         c_final=c[T][:, :N_X])
    w = torch.randn(BATCH, T, N_U, dtype=D)

    def loss(F_value, backward):
        sol = MPC(LinearDynamics.from_lindx(F_value, f_ours), cost, T, u_lower=-0.5, u_upper=0.5,
                  backward=backward, solver='riccati', tolerance=1e-12)(x0)
        return (sol.controls * w).sum()

    loss(F_ours, 'implicit').backward()
    eps = 1e-6
    for index in [(0, 0, 0, 0), (1, 2, 1, 3), (3, 5, 2, 4), (2, 1, 0, 1)]:
        plus, minus = F_ours.detach().clone(), F_ours.detach().clone()
        plus[index] += eps
        minus[index] -= eps
        fd = (loss(plus, 'none') - loss(minus, 'none')) / (2 * eps)
        assert float(F_ours.grad[index]) == pytest.approx(float(fd), rel=1e-5, abs=1e-7)


def test_time_varying_shapes_are_checked():
    A = torch.eye(2, dtype=D).expand(3, 5, 2, 2)
    dyn = LinearDynamics(A, torch.ones(3, 5, 2, 1, dtype=D))
    cost = QuadraticCost(torch.eye(3, dtype=D), torch.zeros(3, dtype=D), n_x=2)
    with pytest.raises(ValueError, match=r'LinearDynamics: A has shape \(3, 5, 2, 2\), a problem of B=3 '
                                         r'samples and T=4 steps needs leading axes \(3, 4\)'):
        MPC(dyn, cost, 4, backward='none')(torch.zeros(3, 2, dtype=D))
    with pytest.raises(ValueError, match=r'time-varying over T=5 steps: states must be \(B, 5, n_x\)'):
        dyn(torch.zeros(3, 2, dtype=D), torch.zeros(3, 1, dtype=D))
