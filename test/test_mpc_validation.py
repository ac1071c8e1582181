"""MPC refuses malformed inputs with errors that name the argument and the shapes or dtypes involved."""
import math

import pytest
import torch

from diffopt_ros.mpc import MPC, DiffDriveLag, Dynamics, LinearDynamics, Pendulum, QuadraticCost, TrackingCost

F64 = torch.float64


def _lti(n_x=2, n_u=2, T=3, **kwargs):
    dyn = LinearDynamics(torch.eye(n_x, dtype=F64), torch.ones(n_x, n_u, dtype=F64))
    cost = QuadraticCost(torch.eye(n_x + n_u, dtype=F64), torch.zeros(n_x + n_u, dtype=F64), n_x=n_x)
    return MPC(dyn, cost, T, backward='none', **kwargs)


def test_lower_bound_above_upper_bound_is_refused():
    with pytest.raises(ValueError, match=r'u_lower > u_upper.*u_lower = 1\.0, u_upper = -1\.0'):
        _lti(u_lower=1.0, u_upper=-1.0)(torch.zeros(1, 2, dtype=F64))
    lower = torch.tensor([-1.0, 0.5], dtype=F64)
    with pytest.raises(ValueError, match=r'u_lower > u_upper at \(b, t, i\) = \(0, 0, 1\)'):
        _lti()(torch.zeros(1, 2, dtype=F64), u_lower=lower, u_upper=torch.tensor([1.0, 0.2], dtype=F64))


def test_dtype_mismatches_name_both_dtypes():
    mpc = _lti()
    with pytest.raises(ValueError, match=r'x_init has dtype torch.float32 but the dynamics LinearDynamics '
                                         r'holds torch.float64'):
        mpc(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r'x_init must be a floating-point tensor, got dtype torch.int64'):
        mpc(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r'target has dtype torch.float32, expected torch.float64'):
        mpc(torch.zeros(1, 2, dtype=F64), target=torch.zeros(1, 2))
    tracking = MPC(DiffDriveLag().double(), TrackingCost([1.0] * 5, [0.1, 0.1]), 5, backward='none')
    with pytest.raises(ValueError, match=r'the cost TrackingCost holds torch.float32'):
        tracking(torch.zeros(1, 5, dtype=F64))
    cost = QuadraticCost(torch.eye(4), torch.zeros(4), n_x=2)          # float32 tensors, float64 model
    mpc = MPC(LinearDynamics(torch.eye(2, dtype=F64), torch.eye(2, dtype=F64)), cost, 3, backward='none')
    with pytest.raises(ValueError, match=r'x_init has dtype torch.float64 but the cost QuadraticCost holds '
                                         r'torch.float32'):
        mpc(torch.zeros(1, 2, dtype=F64))
    assert mpc.double()(torch.zeros(1, 2, dtype=F64)).converged.all()     # .double() converts the cost


def test_shape_mismatches_name_the_argument_and_shapes():
    mpc = _lti()
    x = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ValueError, match=r'x_init has 3 entries per state \(shape \(2, 3\)\).*n_x=2'):
        mpc(torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r'x_init must be \(B, n_x\), got shape \(2,\)'):
        mpc(torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match=r'target must be a goal .*got shape \(3, 2\)'):
        mpc(x, target=torch.zeros(3, 2, dtype=F64))                      # batch 3 for 2 states
    with pytest.raises(ValueError, match=r'target .*\(B, T\+1, n_x\) = \(2, 4, 2\).*got shape \(2, 3, 2\)'):
        mpc(x, target=torch.zeros(2, 3, 2, dtype=F64))                   # reference of length T
    with pytest.raises(ValueError, match=r'u_init must be \(B, T, n_u\) = \(2, 3, 2\), got shape '
                                         r'\(2, 2, 2\)'):
        mpc(x, u_init=torch.zeros(2, 2, 2, dtype=F64))
    with pytest.raises(ValueError, match=r'u_prev must be \(B, n_u\) = \(2, 2\), got shape \(2, 3\)'):
        mpc(x, u_prev=torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r'u_lower has shape \(3,\); expected a float, \(n_u,\) = \(2,\)'):
        mpc(x, u_lower=torch.zeros(3, dtype=F64), u_upper=1.0)
    with pytest.raises(ValueError, match=r'u_upper has shape \(2, 5, 2\)'):
        mpc(x, u_lower=-1.0, u_upper=torch.ones(2, 5, 2, dtype=F64))
    wrong_cost = QuadraticCost(torch.eye(5, dtype=F64), torch.zeros(5, dtype=F64), n_x=3)
    with pytest.raises(ValueError, match=r'cost QuadraticCost has n_x=3, n_u=2, the dynamics LinearDynamics '
                                         r'n_x=2, n_u=2'):
        MPC(mpc.dynamics, wrong_cost, 3, backward='none')(x)
    per_sample = QuadraticCost(torch.eye(4, dtype=F64).expand(5, 3, 4, 4), torch.zeros(5, 3, 4, dtype=F64),
                               n_x=2)
    with pytest.raises(ValueError, match=r'QuadraticCost: C has shape \(5, 3, 4, 4\), a problem of B=2 '
                                         r'samples and T=3 steps'):
        MPC(mpc.dynamics, per_sample, 3, backward='none')(x)
    per_step = QuadraticCost(torch.eye(4, dtype=F64).expand(4, 4, 4), torch.zeros(4, dtype=F64), n_x=2)
    with pytest.raises(ValueError, match=r'C has shape \(4, 4, 4\), a problem of B=2 samples and T=3'):
        MPC(mpc.dynamics, per_step, 3, backward='none')(x)


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match=r'x_init has an empty batch, shape \(0, 2\)'):
        _lti()(torch.zeros(0, 2, dtype=F64))


@pytest.mark.parametrize('backward', ['none', 'implicit', 'unroll'])
def test_nan_inputs_are_named(backward):
    mpc = _lti(u_lower=-1.0, u_upper=1.0)
    mpc.backward = backward
    x = torch.zeros(1, 2, dtype=F64)
    nan = torch.tensor([[math.nan, 0.0]], dtype=F64)
    with pytest.raises(ValueError, match=r'x_init \(shape \(1, 2\)\) contains NaN'):
        mpc(nan)
    tracking = MPC(mpc.dynamics, TrackingCost([1.0, 1.0], [0.1, 0.1]).double(), 3, backward=backward)
    with pytest.raises(ValueError, match=r'target \(shape \(1, 2\)\) contains NaN'):
        tracking(x, target=nan)
    with pytest.raises(ValueError, match=r'u_lower \(shape \(1, 3, 2\)\) contains NaN'):
        mpc(x, u_lower=torch.tensor([math.nan, -1.0], dtype=F64), u_upper=1.0)
    with torch.no_grad():
        tracking.cost.state_weight.sqrt_diag[0] = math.nan
    with pytest.raises(ValueError, match=r'cost TrackingCost.state_weight.sqrt_diag \(shape \(2,\)\) '
                                         r'contains NaN'):
        tracking(x + 1.0, target=x)
    C = torch.eye(4, dtype=F64)
    C[0, 1] = math.nan
    bad = QuadraticCost(C, torch.zeros(4, dtype=F64), n_x=2)
    with pytest.raises(ValueError, match=r'QuadraticCost: C \(shape \(4, 4\)\) contains NaN'):
        MPC(mpc.dynamics, bad, 3, backward=backward)(x + 1.0)


def test_indefinite_cost_is_refused():
    dyn = LinearDynamics(torch.eye(2, dtype=F64), torch.eye(2, dtype=F64))
    cost = QuadraticCost(-torch.eye(4, dtype=F64), torch.zeros(4, dtype=F64), n_x=2)
    with pytest.raises(ValueError, match=r'QuadraticCost: C is not positive semi-definite \(smallest '
                                         r'eigenvalue -1\)'):
        MPC(dyn, cost, 3, backward='none')(torch.ones(1, 2, dtype=F64))
    C = torch.eye(4, dtype=F64).repeat(2, 3, 1, 1)
    C[1, 2, 3, 3] = -0.5
    cost = QuadraticCost(C, torch.zeros(4, dtype=F64), n_x=2)
    with pytest.raises(ValueError, match=r'C\[1, 2\] is not positive semi-definite'):
        MPC(dyn, cost, 3, backward='none')(torch.ones(2, 2, dtype=F64))
    final = QuadraticCost(torch.eye(4, dtype=F64), torch.zeros(4, dtype=F64), n_x=2,
                          C_final=-torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match=r'C_final is not positive semi-definite'):
        MPC(dyn, final, 3, backward='none')(torch.ones(1, 2, dtype=F64))


def test_valid_inputs_still_solve():
    """The checks accept every documented form: bounds as floats, (n_u,), (T, n_u), (B, T, n_u)."""
    mpc = _lti(u_lower=-0.5, u_upper=0.5)
    x = torch.ones(2, 2, dtype=F64)
    for lower in (-0.5, [-0.5, -0.5], torch.full((3, 2), -0.5, dtype=F64),
                  torch.full((2, 3, 2), -0.5, dtype=F64)):
        sol = mpc(x, u_lower=lower)
        assert sol.converged.all()
    cost = QuadraticCost(torch.eye(4, dtype=F64), torch.zeros(4, dtype=F64), n_x=3)
    sol = MPC(Pendulum().double(), cost, 5, backward='none')(torch.tensor([[1.0, 0.0, 0.0]], dtype=F64),
                                                              target=torch.zeros(3, dtype=F64))
    assert sol.converged.all()


class _BatchFirst(Dynamics):
    """A double integrator written batch-first (``x[:, 0]``): works on (B, n_x) only."""

    n_x, n_u, dt = 2, 1, 0.1

    def forward(self, x, u):
        return torch.stack((x[:, 0] + 0.1 * x[:, 1], x[:, 1] + 0.1 * u[:, 0]), -1)


def test_batch_first_dynamics_are_explained():
    cost = QuadraticCost(torch.eye(3), torch.zeros(3), n_x=2)
    with pytest.raises(ValueError, match=r'_BatchFirst: the dynamics work on a batch \(B, n_x\) but not on a '
                                         r'single state \(n_x,\).*index the last axis \(x\[\.\.\., 0\]'):
        MPC(_BatchFirst(), cost, 4, backward='none')(torch.ones(2, 2))


def test_python_floats_stay_exact_until_the_dtype_is_known():
    assert Pendulum(gravity=9.81).double().gravity.item() == 9.81
    model = DiffDriveLag(dt=0.05, gain_v=0.9, tau_omega=0.07).double()
    assert model.gain_v.item() == 0.9 and model.tau_omega.item() == 0.07
    assert model.log_tau_omega.item() == math.log(0.07)            # the parameter itself, not float32's
    model.tau_v = 0.11
    assert model.tau_v.item() == 0.11
    single = Pendulum(gravity=9.81)
    assert single.gravity.dtype == torch.float32 and single.gravity.item() == torch.tensor(9.81).item()
    cost = TrackingCost([10.0, 0.1], [0.3], terminal_scale=5.0).double()
    torch.testing.assert_close(cost.state_weight.diagonal(), torch.tensor([10.0, 0.1], dtype=F64),
                               rtol=4e-16, atol=0.0)
    assert abs(cost.terminal_scale.item() - 5.0) <= 1e-15
    learned = Pendulum(gravity=9.81)
    with torch.no_grad():
        learned.log_gravity.add_(0.5)                          # changed: converted as it is
    assert learned.double().log_gravity.item() == pytest.approx(math.log(9.81) + 0.5, rel=1e-6)


def test_checked_bounds_follow_changes_of_their_source():
    """The checked bounds are kept between calls, but a list or tensor changed in place is re-read."""
    mpc = _lti()
    x = torch.full((1, 2), 5.0, dtype=F64)                     # pushes the controls to the lower bound
    lower = [-0.5, -0.5]
    assert torch.allclose(mpc(x, u_lower=lower, u_upper=1.0).controls[0, 0, 0], torch.tensor(-0.5, dtype=F64))
    lower[0] = -0.1
    assert torch.allclose(mpc(x, u_lower=lower, u_upper=1.0).controls[0, 0, 0], torch.tensor(-0.1, dtype=F64))
    upper = torch.ones(2, dtype=F64)
    mpc(x, u_lower=-0.5, u_upper=upper)
    upper[1] = -1.0                                             # now below the lower bound
    with pytest.raises(ValueError, match=r'u_lower > u_upper'):
        mpc(x, u_lower=-0.5, u_upper=upper)
