"""Box-LQRs with a positive semi-definite (singular) control Hessian, against independent QP solvers.

Two identical inputs and no control cost make every control Hessian singular: the minimiser is not
unique, only the optimal cost is. Each random problem is solved by OSQP (an ADMM QP solver) and by
scipy's bounded-variable least squares (the state cost is ``0.5 |L^T x|^2``, so the condensed QP is a
least-squares problem), and by ``MPC`` with both subproblem solvers; the certificate of the returned
controls (``MPCSolution.kkt_residual``) must be at round-off and the reported cost must be the cost of
the returned controls.
"""
import numpy as np
import osqp
import pytest
import scipy.linalg
import scipy.optimize
import scipy.sparse
import torch

from diffopt_ros.mpc import MPC, LinearDynamics, QuadraticCost


def _condensed(A, Bm, L_stage, L_final, x0, T):
    """Least-squares form ``0.5 |R U - b|^2`` of the problem's cost over the controls ``U (T m,)``."""
    n, m = Bm.shape
    S = np.zeros((T * n, T * m))
    free = np.zeros(T * n)
    x = x0.copy()
    for t in range(T):
        x = A @ x
        free[t * n:(t + 1) * n] = x
        for s in range(t + 1):
            S[t * n:(t + 1) * n, s * m:(s + 1) * m] = np.linalg.matrix_power(A, t - s) @ Bm
    weights = [L_stage.T] * (T - 1) + [L_final.T]
    W = scipy.linalg.block_diag(*weights)
    const = 0.5 * np.sum((L_stage.T @ x0) ** 2)
    return W @ S, -(W @ free), const


def _oracles(R, b, const, lower, upper):
    """Optimal cost by OSQP and by BVLS."""
    H, g = R.T @ R, -R.T @ b
    N = H.shape[0]
    solver = osqp.OSQP()
    solver.setup(scipy.sparse.csc_matrix(H), g, scipy.sparse.identity(N, format='csc'), np.full(N, lower),
                 np.full(N, upper), verbose=False, eps_abs=1e-12, eps_rel=1e-12, max_iter=200000,
                 polishing=True)
    U = solver.solve(raise_error=False).x
    j_osqp = 0.5 * U @ H @ U + g @ U + 0.5 * b @ b + const
    res = scipy.optimize.lsq_linear(R, b, bounds=(lower, upper), method='bvls', tol=1e-14)
    j_bvls = 0.5 * np.sum((R @ res.x - b) ** 2) + const
    return j_osqp, j_bvls


def _random_problem(rng):
    n, m0, T = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(2, 7))
    A = rng.normal(size=(n, n)) * 0.6
    Bb = rng.normal(size=(n, m0))
    Bm = np.concatenate([Bb, Bb[:, :1]], 1)                        # a duplicated input
    L = rng.normal(size=(n, n)) * rng.uniform(0, 1.5)
    if rng.uniform() < 0.5:
        L[0] = 0.0                                                 # state 0 not weighted
    L_final = np.linalg.cholesky(L @ L.T + np.eye(n) * rng.uniform(0.01, 1))
    x0 = rng.normal(size=n) * 2
    return A, Bm, L, L_final, x0, T, -rng.uniform(0.05, 1), rng.uniform(0.05, 1)


@pytest.mark.parametrize('solver', ['condensed', 'riccati', 'auto'])
def test_singular_box_lqr_matches_two_qp_solvers(solver):
    rng = np.random.default_rng(7)
    for _ in range(80):
        A, Bm, L, L_final, x0, T, lower, upper = _random_problem(rng)
        n, m = Bm.shape
        R, b, const = _condensed(A, Bm, L, L_final, x0, T)
        j_osqp, j_bvls = _oracles(R, b, const, lower, upper)
        scale = 1.0 + abs(j_bvls)
        assert abs(j_osqp - j_bvls) <= 1e-7 * scale                 # the oracles agree
        C = np.zeros((n + m, n + m))
        C[:n, :n] = L @ L.T
        dyn = LinearDynamics(torch.tensor(A), torch.tensor(Bm))
        cost = QuadraticCost(torch.tensor(C), torch.zeros(n + m, dtype=torch.float64), n_x=n,
                             C_final=torch.tensor(L_final @ L_final.T))
        sol = MPC(dyn, cost, T, u_lower=lower, u_upper=upper, backward='none', solver=solver)(
            torch.tensor(x0)[None])
        true_cost = float(cost.total(sol.states, sol.controls))
        assert bool(sol.converged)
        assert float(sol.kkt_residual) <= 1e-9
        assert abs(true_cost - j_bvls) <= 1e-7 * scale, (true_cost, j_bvls)
        assert abs(float(sol.costs) - true_cost) <= 1e-9 * scale     # the reported cost is the controls'


def test_issue_example_is_optimal_and_certified():
    f64 = torch.float64
    dyn = LinearDynamics(torch.tensor([[1.0]], dtype=f64), torch.tensor([[1.0, 1.0]], dtype=f64))
    C = torch.diag(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    cost = QuadraticCost(C, torch.zeros(3, dtype=torch.float64), n_x=1, C_final=C[:1, :1])
    for solver in ('auto', 'condensed', 'riccati'):
        sol = MPC(dyn, cost, 5, u_lower=-0.3, u_upper=0.3, backward='none', solver=solver)(
            torch.tensor([[1.0]], dtype=torch.float64))
        assert bool(sol.converged) and float(sol.kkt_residual) <= 1e-12
        assert float(sol.costs) == pytest.approx(0.58, abs=1e-12)
        assert float(cost.total(sol.states, sol.controls)) == pytest.approx(0.58, abs=1e-12)


def test_unbounded_singular_problem_is_not_reported_converged():
    """A linear control cost with a singular Hessian and no bounds has no minimiser."""
    dyn = LinearDynamics(torch.eye(1, dtype=torch.float64), torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    C = torch.diag(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    c = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)          # u1 - u2 does not move the state
    cost = QuadraticCost(C, c, n_x=1, C_final=C[:1, :1])
    for solver in ('condensed', 'riccati'):
        sol = MPC(dyn, cost, 4, backward='none', solver=solver)(torch.tensor([[1.0]], dtype=torch.float64))
        assert not bool(sol.converged)
        assert not float(sol.kkt_residual) <= 1e-3


def test_certificate_is_reported_for_nonlinear_solves():
    from diffopt_ros.mpc import Pendulum
    model = Pendulum().double()
    C = torch.diag(torch.tensor([1.0, 1.0, 0.1, 0.01], dtype=torch.float64))
    cost = QuadraticCost(C, torch.tensor([-1.0, 0.0, 0.0, 0.0], dtype=torch.float64), n_x=3)
    x0 = torch.tensor([[np.cos(2.5), np.sin(2.5), 0.0], [np.cos(-1.0), np.sin(-1.0), 0.3]],
                      dtype=torch.float64)
    for solver in ('condensed', 'riccati'):
        sol = MPC(model, cost, 10, u_lower=-2.0, u_upper=2.0, backward='none', solver=solver,
                  tolerance=1e-9)(x0)
        assert sol.converged.all()
        assert (sol.kkt_residual <= 1e-6).all(), sol.kkt_residual
