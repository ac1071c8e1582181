"""One result convention: MPCSolution and nlls.SolveResult report converged / iterations / status alike."""
import time

import torch

from diffopt_ros.lie import SE2
from diffopt_ros.mpc import MPC, DiffDriveLag, TrackingCost
from diffopt_ros.nlls import Objective, Optimizer, Prior, Variable
from diffopt_ros.status import Status

F64 = torch.float64


def _mpc_solve(deadline=None, **kwargs):
    model = DiffDriveLag(dt=0.1).to(F64)
    cost = TrackingCost([10., 10., 1., 0.1, 0.1], [0.1, 0.1], angle_indices=(2,)).to(F64)
    mpc = MPC(model, cost, 10, u_lower=-1.0, u_upper=1.0, backward='none', **kwargs)
    return mpc(torch.zeros(2, 5, dtype=F64), target=torch.tensor([[2.0, 1.0, 0, 0, 0]] * 2, dtype=F64),
               deadline=deadline)


def _nlls_solve(**kwargs):
    pose = Variable(SE2, torch.tensor([[0.0, 0.0, 0.0]] * 2, dtype=F64).unsqueeze(1), name='x')
    target = torch.tensor([[4.0, -3.0, 2.5]], dtype=F64)
    return Optimizer(Objective([Prior(pose, [0], target)]), **kwargs).solve()


def _same_shape(result, status):
    assert result.converged.dtype == torch.bool and result.converged.shape == (2,)
    assert result.iterations.dtype == torch.long and result.iterations.shape == (2,)
    assert isinstance(result.status, list) and all(isinstance(s, Status) for s in result.status)
    assert result.status == [status] * 2
    assert result.converged.tolist() == [status == 'converged'] * 2


def test_converged():
    _same_shape(_mpc_solve(), Status.CONVERGED)
    _same_shape(_nlls_solve(), Status.CONVERGED)


def test_iteration_cap():
    _same_shape(_mpc_solve(max_iterations=1, tolerance=1e-12), Status.MAX_ITERATIONS)
    _same_shape(_nlls_solve(max_iterations=1, rel_tol=0.0, abs_tol=0.0), Status.MAX_ITERATIONS)


def test_time_budget():
    _same_shape(_mpc_solve(deadline=time.perf_counter() - 1.0, tolerance=1e-12), Status.TIME_LIMIT)
    _same_shape(_nlls_solve(max_time=0.0, rel_tol=0.0, abs_tol=0.0), Status.TIME_LIMIT)
