"""Imitation learning through the MPC (small version of bench/mpc_imitation.py)."""
import warnings

from diffopt_ros.mpc.imitation import tasks, train


def test_pendulum_dynamics_are_recovered_from_expert_trajectories():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        result = train(tasks()['pendulum'], 5, 'dynamics', steps=30, lr=0.1)
    assert result['loss_train_final'] < 1e-2 * result['loss_train_initial']
    assert result['loss_test_final'] < 1e-1 * result['loss_test_initial']
    assert result['parameter_error'] < 0.05
