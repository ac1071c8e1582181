"""One backward-mode dialect: MPC and nlls.Optimizer take the same ``backward=`` spelling."""
import pytest
import torch

from diffopt_ros.learn.api import TRAINING_MODES, learn_cost
from diffopt_ros.learn.controller import mpc_params, node_mpc
from diffopt_ros.lie import SE2
from diffopt_ros.modes import Backward, backward_mode
from diffopt_ros.mpc import BACKWARD_MODES as MPC_MODES
from diffopt_ros.mpc import MPC, LinearDynamics, QuadraticCost
from diffopt_ros.nlls import BACKWARD_MODES as NLLS_MODES
from diffopt_ros.nlls import Objective, Optimizer, Prior, Variable

F64 = torch.float64


def _mpc(**kwargs):
    dyn = LinearDynamics(torch.eye(1, dtype=F64), torch.eye(1, dtype=F64))
    cost = QuadraticCost(torch.eye(2, dtype=F64), torch.zeros(2, dtype=F64), n_x=1)
    return MPC(dyn, cost, 3, u_lower=-10.0, u_upper=10.0, **kwargs)


def _optimizer(**kwargs):
    pose = Variable(SE2, torch.tensor([[0.3, -0.2, 0.1]], dtype=F64), name='x')
    target = torch.tensor([[1.0, 2.0, 0.5]], dtype=F64, requires_grad=True)
    return Optimizer(Objective([Prior(pose, [0], target)]), **kwargs), target


def test_both_solvers_share_the_enum_and_accept_its_strings():
    assert set(MPC_MODES) | set(NLLS_MODES) <= set(Backward)
    assert set(MPC_MODES) & set(NLLS_MODES) == {Backward.IMPLICIT, Backward.UNROLL}
    for mode in ('implicit', Backward.IMPLICIT, 'unroll', Backward.UNROLL):
        assert _mpc(backward=mode).backward is Backward(mode)
        assert _optimizer(backward=mode)[0].backward is Backward(mode)
    assert Backward.DLM == 'dlm' and f'{Backward.TRUNCATED}' == 'truncated'


def test_same_spelling_gives_gradients_in_both():
    x0 = torch.tensor([[1.0]], dtype=F64, requires_grad=True)
    _mpc(backward=Backward.IMPLICIT)(x0).controls.sum().backward()
    assert x0.grad is not None and torch.isfinite(x0.grad).all()
    opt, target = _optimizer()
    opt.solve(backward=Backward.UNROLL)['x'].sum().backward()
    assert target.grad is not None and torch.isfinite(target.grad).all()


@pytest.mark.parametrize('make, bad, where', [
    (lambda m: _mpc(backward=m), 'dlm', 'MPC'),
    (lambda m: _optimizer(backward=m), 'none', 'Optimizer'),
    (lambda m: _optimizer()[0].solve(backward=m), 'magic', 'Optimizer.solve'),
    (lambda m: learn_cost([], '/nonexistent', backward=m), 'truncated', 'learn_cost'),
    (lambda m: node_mpc(mpc_params(), backward=m), 'dlm', 'node_mpc'),
])
def test_a_mode_a_solver_lacks_is_named_with_its_choices(make, bad, where):
    with pytest.raises(ValueError, match=rf"^{where}: backward must be one of .*'implicit'.*got '{bad}'"):
        make(bad)


def test_backward_mode_rejects_non_strings():
    with pytest.raises(ValueError, match='got \\[1\\]'):
        backward_mode([1], TRAINING_MODES, 'here')
