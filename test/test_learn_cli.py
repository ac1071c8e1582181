"""``diffopt-ros learn`` options as a user gives them: epochs 0, bad numbers, no validation runs,
earlier results in --out, progress in a log, and what learn slam does before its first epoch."""
import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffopt_ros.experiments.simulated_runs import excitation_run, route_run
from diffopt_ros.learn import cli
from diffopt_ros.learn.api import learn_dynamics
from diffopt_ros.learn.controller import mpc_params
from diffopt_ros.learn.datasets import save_bag
from diffopt_ros.sim import RobotParams, World


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    return [save_bag(excitation_run(RobotParams(), seconds=3.0, seed=s, name=f'r{s}'), root)
            for s in range(2)]


def _learn(*args):
    return cli.main(['dynamics', *map(str, args), '--no-plots'])


def _model(path):
    values = yaml.safe_load(path.read_text())['mpc_node']['ros__parameters']
    return {k: v for k, v in values.items() if k.startswith('model.')}


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_epochs_zero_evaluates_the_starting_values(bags, tmp_path, capsys):
    assert _learn(bags[0], '--out', tmp_path / 'o', '--epochs', '0') == 0
    start = mpc_params()
    learned = _model(tmp_path / 'o' / 'mpc.yaml')
    # the model keeps log-values built in float32 before its float64 cast: a relative rounding
    # of |log x| * 2**-24 (< 3e-7 here); 30 epochs of training move them by percents
    assert learned == {k: pytest.approx(float(start[k]), rel=1e-6) for k in learned}
    rows = _rows(tmp_path / 'o' / 'metrics.csv')
    assert [row['epoch'] for row in rows] == ['0']
    assert 'in 0 epochs' in capsys.readouterr().out


@pytest.mark.parametrize('option, value', [
    ('--val-fraction', '1.5'), ('--val-fraction', '1'), ('--val-fraction', '-0.1'),
    ('--val-fraction', 'nan'), ('--epochs', '-1'), ('--epochs', 'ten'), ('--batch-size', '-2'),
    ('--lr', '0'), ('--stride', '0'), ('--steps', '0'), ('--dt', '-0.1'), ('--robust', '-1')])
def test_bad_numbers_are_refused_with_exit_2(bags, tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as info:
        _learn(bags[0], '--out', tmp_path / 'o', option, value)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f'argument {option}' in err and value in err, err
    assert not (tmp_path / 'o').exists()


def test_the_api_refuses_them_too(bags, tmp_path):
    with pytest.raises(ValueError, match=r'val_fraction must be in \[0, 1\), got 1.5'):
        learn_dynamics([bags[0]], tmp_path, val_fraction=1.5, progress=False)
    with pytest.raises(ValueError, match='epochs must be a whole number >= 0'):
        learn_dynamics([bags[0]], tmp_path, epochs=-3, progress=False)


def test_without_validation_runs_no_validation_column(bags, tmp_path, capsys):
    assert _learn(bags[0], '--out', tmp_path / 'o', '--epochs', '2') == 0
    captured = capsys.readouterr()
    assert 'nan' not in captured.out + captured.err
    assert 'val=' not in captured.err
    assert '(no validation runs)' in captured.out
    assert 'val_loss' not in _rows(tmp_path / 'o' / 'metrics.csv')[0]
    # with a validation run: the column and the summary are there
    assert _learn(*bags, '--out', tmp_path / 'v', '--epochs', '2', '--val-fraction', '0.5') == 0
    captured = capsys.readouterr()
    assert 'validation ' in captured.out and 'val=' in captured.err
    assert all(math.isfinite(float(r['val_loss'])) for r in _rows(tmp_path / 'v' / 'metrics.csv'))


def test_out_is_not_overwritten_without_force(bags, tmp_path, capsys):
    out = tmp_path / 'o'
    assert _learn(bags[0], '--out', out, '--epochs', '2') == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _learn(bags[0], '--out', out, '--epochs', '3') == 2
    err = capsys.readouterr().err
    assert f'{out}: holds an earlier result (mpc.yaml, checkpoint.pt, metrics.csv)' in err
    assert '--force' in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    # continuing the same run is not overwriting it
    assert _learn(bags[0], '--out', out, '--epochs', '4', '--resume', out / 'checkpoint.pt') == 0
    assert len(_rows(out / 'metrics.csv')) == 5
    assert _learn(bags[0], '--out', out, '--epochs', '1', '--force') == 0
    assert len(_rows(out / 'metrics.csv')) == 2
    copy = tmp_path / 'copy.yaml'
    copy.write_text('mine\n')
    assert _learn(bags[0], '--out', tmp_path / 'p', '--epochs', '1', '--yaml', copy) == 2
    assert f'{copy}: exists' in capsys.readouterr().err and copy.read_text() == 'mine\n'


def test_no_progress_and_logs_get_plain_lines(bags, tmp_path, capsys):
    assert _learn(bags[0], '--out', tmp_path / 'o', '--epochs', '3', '--no-progress') == 0
    err = capsys.readouterr().err
    assert '\r' not in err
    assert 'dynamics (system identification): 0/3 epochs (0 %)' in err
    assert 'dynamics (system identification): 3/3 epochs (100 %)' in err
    assert len(err.splitlines()) <= 4, err
    # a log (stderr is not a terminal under pytest) without --no-progress: the same lines
    assert _learn(bags[0], '--out', tmp_path / 'p', '--epochs', '3') == 0
    err = capsys.readouterr().err
    assert '\r' not in err and '3/3 epochs (100 %)' in err


def test_learn_slam_says_what_it_does_before_the_first_epoch(tmp_path, capsys):
    bag = save_bag(route_run(World.load('loop'), seconds=15.0, seed=3, name='lap'), tmp_path)
    assert cli.main(['slam', str(bag), '--out', str(tmp_path / 'o'), '--epochs', '1',
                     '--no-plots', '--no-progress']) == 0
    err = capsys.readouterr().err
    steps = ['SLAM weights: reading the runs', 'SLAM weights: replaying the front end (scan '
             'matching) of 1 run: 0/', 'SLAM weights: solving 1 whole run with the starting '
             'weights', 'SLAM weights (implicit): 0/1 epoch ', 'SLAM weights (implicit): 1/1 epoch ']
    at = [err.find(step) for step in steps]
    assert all(k >= 0 for k in at) and at == sorted(at), err


def test_public_api_resolves_and_the_cli_loads_without_torch():
    """``diffopt_ros.learn.__all__`` names what its modules define; importing the package and
    its CLI (``--help``, argument errors) loads no torch."""
    code = ("import sys, diffopt_ros.learn as learn\n"
            "from diffopt_ros.learn import cli\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "from diffopt_ros.learn import api, datasets, trainer\n"
            "assert learn.learn_dynamics is api.learn_dynamics and learn.train is trainer.train\n"
            "assert learn.RunData is datasets.RunData and set(learn.__all__) <= set(dir(learn))\n"
            "missing = [n for n in learn.__all__ if getattr(learn, n, None) is None]\n"
            "assert not missing, missing\n"
            "assert not hasattr(learn, 'not_exported')\n")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
