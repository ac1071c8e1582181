"""Offline learning of the controller: system identification, imitation through the MPC, bags,
learned YAML, errors and two-process data parallelism (simulated data, known true parameters)."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffopt_ros.bag import BagWriter, EmptyBagError, MissingTopicError
from diffopt_ros.experiments.simulated_runs import excitation_run, expert_runs
from diffopt_ros.learn import cli
from diffopt_ros.learn.api import learn_cost, learn_dynamics
from diffopt_ros.learn.controller import mpc_params
from diffopt_ros.learn.datasets import RunData, Series, load_run, save_bag, split_runs
from diffopt_ros.learn.distributed import global_batches
from diffopt_ros.learn.export import MPC_MODEL_KEYS, MPC_WEIGHT_KEYS, ExportError, write_params_yaml
from diffopt_ros.learn.windows import control_windows
from diffopt_ros.mpc.receding import MpcSettings
from diffopt_ros.params_file import read_params_file
from diffopt_ros.sim import RobotParams

TRUE = {'model.gain_v': 0.8, 'model.gain_omega': 0.7, 'model.tau_v': 0.25, 'model.tau_omega': 0.2}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def excitation():
    """Two 15 s runs of the demo's true robot (config/sim.yaml) under random commands."""
    return [excitation_run(RobotParams(), seconds=15.0, seed=s, name=f'run{s}') for s in range(2)]


def _close(params, truth, rel):
    return {k: (params[k], v) for k, v in truth.items() if abs(params[k] - v) > rel * abs(v)}


def test_sysid_recovers_gains_and_lags_and_writes_node_yaml(excitation, tmp_path):
    result = learn_dynamics(excitation, tmp_path, method='sysid', progress=False)   # with plots
    assert not _close(result.params, TRUE, 0.05), result.params
    assert result.metrics['train_loss'] < 1e-3 * result.metrics['train_loss_before']
    document = yaml.safe_load(result.yaml_path.read_text())
    assert list(document) == ['mpc_node']
    values = document['mpc_node']['ros__parameters']
    assert set(values) == set(MPC_MODEL_KEYS)
    assert all(type(v) is float for v in values.values())
    # What mpc_node does with learned_params_file: its section overrides config/mpc.yaml.
    settings = MpcSettings.from_params(mpc_params(learned_file=result.yaml_path))
    assert settings.gain_v == pytest.approx(values['model.gain_v'])
    for name in ('metrics.csv', 'loss.png', 'prediction.png', 'checkpoint.pt'):
        assert (tmp_path / name).stat().st_size > 0


def test_one_step_prediction_and_resume(excitation, tmp_path):
    first = learn_dynamics(excitation[:1], tmp_path, steps=1, epochs=4, progress=False, plots=False)
    resumed = learn_dynamics(excitation[:1], tmp_path, steps=1, epochs=12, progress=False,
                             plots=False, resume=tmp_path / 'checkpoint.pt')
    straight = learn_dynamics(excitation[:1], tmp_path / 'straight', steps=1, epochs=12,
                              progress=False, plots=False)
    assert [row['epoch'] for row in resumed.history] == list(range(13))
    assert [row['train_loss'] for row in resumed.history[:5]] == \
        [row['train_loss'] for row in first.history]
    for key, value in straight.params.items():
        assert resumed.params[key] == pytest.approx(value, rel=1e-9)
    assert not _close(straight.params, TRUE, 0.05)


@pytest.fixture(scope='module')
def demos():
    """Demonstrations by the node's MPC that knows the true robot and has its own cost weights
    (heading 3, v_cmd 0.5; wider command bounds and a shorter horizon than config/mpc.yaml to
    keep the test small): ``(expert parameters, runs)``."""
    params = mpc_params()
    params.update({'horizon': 10, 'bounds.v_max': 1.2, 'bounds.v_min': -0.5,
                   'bounds.omega_max': 3.0, 'weights.heading': 3.0, 'weights.v_cmd': 0.5, **TRUE})
    return params, expert_runs(RobotParams(), params, episodes=3, seconds=5.0)


def _params_file(path, params):
    path.write_text(yaml.safe_dump({'mpc_node': {'ros__parameters': params}}))
    return path


def test_end_to_end_imitation_through_mpc_recovers_gains_and_lags(demos, tmp_path):
    expert, runs = demos      # learning starts from the nominal model (gains 1, lags 0.05 s)
    nominal = {k: v for k, v in mpc_params().items() if k.startswith('model.')}
    start = _params_file(tmp_path / 'start.yaml', {**expert, **nominal})
    result = learn_dynamics(runs, tmp_path, method='e2e', backward='implicit', dt=0.05,
                            params_file=start, epochs=35, val_fraction=0, progress=False,
                            plots=False)
    assert not _close(result.params, TRUE, 0.05), result.params
    assert result.metrics['train_loss'] < 0.01 * result.metrics['train_loss_before']


def test_cost_weights_from_demonstrations(demos, tmp_path):
    expert, runs = demos      # true model, the default weights of config/mpc.yaml to start from
    defaults = {k: v for k, v in mpc_params().items() if k.startswith('weights.')}
    start = _params_file(tmp_path / 'start.yaml', {**expert, **defaults})
    result = learn_cost(runs, tmp_path, dt=0.05, params_file=start, epochs=20, lr=0.1,
                        val_fraction=0, progress=False, plots=False)
    assert result.metrics['train_loss'] < 0.05 * result.metrics['train_loss_before']
    for key in ('weights.heading', 'weights.v_cmd'):   # most of the way to the expert's
        assert abs(result.params[key] - expert[key]) < 0.5 * abs(defaults[key] - expert[key])
    assert result.params['weights.position'] == pytest.approx(defaults['weights.position'])
    values = read_params_file(result.yaml_path, 'mpc_node')
    assert set(values) == set(MPC_MODEL_KEYS + MPC_WEIGHT_KEYS)


def test_windows_hold_commands_and_split_by_run(excitation):
    run = excitation[0]
    windows = control_windows([run], dt=0.1, horizon=4)     # states every 0.02 s
    # Each command is held over its whole step: the grid starts at the first command.
    t0 = windows.t0.numpy()
    k = np.searchsorted(run.commands.t, t0 + 1e-6, side='right') - 1
    assert np.allclose(windows.u[:, 0].numpy(), run.commands.values[k])
    error = windows.x0.numpy() - run.ground_truth.values[::5][:len(t0)]
    error[:, 2] = np.angle(np.exp(1j * error[:, 2]))     # window yaw is continuous, not wrapped
    assert np.abs(error).max() < 1e-9
    train, val = split_runs(excitation + [excitation[0]], val_fraction=0.34)
    assert len(train) == 2 and len(val) == 1
    assert split_runs(excitation[:1], 0.5) == (excitation[:1], [])


def test_global_batches_do_not_depend_on_process_count():
    batches = global_batches(10, 4, seed=3, epoch=2)
    assert [len(b) for b in batches] == [4, 3, 3]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert torch.equal(torch.cat(global_batches(10, 0, 3, 2)), torch.arange(10))


def test_bags_mcap_and_sqlite3_give_the_same_windows(excitation, tmp_path):
    run = excitation[0]
    mcap = load_run(save_bag(run, tmp_path, 'a'))
    sqlite = load_run(save_bag(run, tmp_path, 'b', storage='sqlite3'))
    reference = control_windows([run], 0.05, 5)
    for loaded in (mcap, sqlite):
        windows = control_windows([loaded], 0.05, 5)
        n = len(reference)          # stamps in ns may add the last grid point
        assert len(windows) in (n, n + 1)
        assert torch.allclose(windows.x_next[:n], reference.x_next, atol=1e-9)
        assert torch.equal(windows.u[:n], reference.u)


def test_cli_errors_name_file_and_topic(excitation, tmp_path, capsys):
    run = excitation[0]
    no_cmd = save_bag(RunData('no_cmd', odom=run.odom, ground_truth=run.ground_truth), tmp_path)
    assert cli.main(['dynamics', str(no_cmd), '--out', str(tmp_path / 'o'), '--no-progress']) == 2
    err = capsys.readouterr().err
    assert '/cmd_vel' in err and str(no_cmd) in err
    with pytest.raises(MissingTopicError, match='/cmd_vel'):
        load_run(no_cmd, require=('/cmd_vel',))
    empty = BagWriter.create(tmp_path, 'empty', unique=False)
    empty.add_topic('/cmd_vel', 'geometry_msgs/msg/Twist')
    empty.close()
    with pytest.raises(EmptyBagError):
        load_run(empty.run_dir)
    assert cli.main(['dynamics', str(empty.run_dir), '--no-progress']) == 2
    assert 'no messages' in capsys.readouterr().err
    with pytest.raises(ExportError, match='model.mass'):
        write_params_yaml(tmp_path / 'x.yaml', 'mpc_node', {'model.mass': 1.0})
    with pytest.raises(ExportError, match='not finite'):
        write_params_yaml(tmp_path / 'x.yaml', 'mpc_node', {'model.gain_v': math.nan})


def _short_run(seconds, seed):
    run = excitation_run(RobotParams(), seconds=seconds, seed=seed, name=f'short{seed}')
    return RunData(run.name, ground_truth=run.ground_truth, commands=Series(run.commands.t,
                                                                             run.commands.values))


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    """gloo, CPU: 2 processes, each half of every mini-batch, give the parameters of 1 process."""
    bags = [save_bag(_short_run(3.0, s), tmp_path / 'runs') for s in range(3)]
    args = ['dynamics', *map(str, bags), '--optimizer', 'adam', '--lr', '0.05', '--epochs', '5',
            '--batch-size', '20', '--steps', '3', '--no-progress', '--no-plots']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    torchrun = Path(sys.executable).with_name('torchrun')
    subprocess.run([str(torchrun), '--standalone', '--nproc_per_node', '2', '-m',
                    'diffopt_ros.learn.cli', *args, '--out', str(tmp_path / 'two')],
                   check=True, env=env, cwd=ROOT, capture_output=True, timeout=120)
    assert cli.main([*args, '--out', str(tmp_path / 'one')]) == 0
    two = read_params_file(tmp_path / 'two' / 'mpc.yaml', 'mpc_node')
    one = read_params_file(tmp_path / 'one' / 'mpc.yaml', 'mpc_node')
    assert set(one) == set(MPC_MODEL_KEYS)
    assert one != {k: 1.0 if 'gain' in k else 0.05 for k in one}   # it learned something
    for key in one:
        assert two[key] == pytest.approx(one[key], abs=1e-6), key


def test_learning_solves_the_problem_the_node_solves():
    """Imitation learning and mpc_node's solver give the same command for the same state,
    reference, previous command (rate penalty) and warm start: what is learned is what runs."""
    from diffopt_ros.learn.controller import node_mpc
    from diffopt_ros.learn.objectives import ImitationObjective
    from diffopt_ros.mpc.receding import RecedingHorizonSolver, goal_reference

    params = mpc_params()
    assert params['weights.rate'] > 0
    state = np.array([0.2, -0.1, 0.3, 0.25, 0.1])
    reference = goal_reference(state, np.array([1.5, 0.8]), MpcSettings.from_params(params).horizon)
    last_command = np.array([0.6, -0.9])
    node = RecedingHorizonSolver(MpcSettings.from_params(params))
    planned = node.solve(state, reference, None, last_command).controls
    warm = np.roll(planned, -1, axis=0)
    expected = node.solve(state, reference, warm, last_command).controls[0]

    objective = ImitationObjective(node_mpc(params), n_items=1)
    objective.warm[0] = torch.as_tensor(warm)
    batch = {'x0': torch.as_tensor(state)[None], 'reference': torch.as_tensor(reference)[None],
             'u_prev': torch.as_tensor(last_command)[None], 'index': torch.tensor([0])}
    learned = objective.solve(batch).controls[0, 0].detach().numpy()
    np.testing.assert_allclose(learned, expected, rtol=0, atol=1e-9)


def test_synthetic_experts_command_what_the_node_commands():
    """The synthetic expert's recorded commands are what mpc_node's solver (at the same tight
    tolerance) commands from the recorded state, reference and previous command."""
    from dataclasses import replace

    from diffopt_ros.mpc.receding import RecedingHorizonSolver

    params = {**mpc_params(), **TRUE}
    settings = replace(MpcSettings.from_params(params), max_iterations=50, tolerance=1e-7)
    runs = expert_runs(RobotParams(), params, episodes=1, seconds=3.0, seed=5)
    windows = control_windows(runs, 0.05, 1, ref_horizon=settings.horizon,
                              ref_dt=settings.dt).with_reference()
    node = RecedingHorizonSolver(settings)
    for k in range(len(windows)):
        command = node.solve(windows.x0[k].numpy(), windows.reference[k].numpy(), None,
                             windows.u_prev[k].numpy()).controls[0]
        np.testing.assert_allclose(command, windows.u[k, 0].numpy(), rtol=0, atol=1e-5)
