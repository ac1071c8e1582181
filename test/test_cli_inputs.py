"""The ``diffopt-ros`` commands run as a user runs them (a subprocess of ``python -m
diffopt_ros.cli``) on malformed and surprising input: folders of runs, folders without bags,
bad options, earlier results, broken world files. Each must end with the documented exit code,
a message naming the file (with line and key where there is one), and never a traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_bag_runs import make_demo_folder

ROOT = Path(__file__).resolve().parents[1]
WALLS = 'walls:\n  - {box: [0, 0, 10, 10]}\n'


def run(*args, cwd=None):
    """``diffopt-ros ARGS`` in a subprocess on this tree; returns (exit code, stdout + stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, '-m', 'diffopt_ros.cli', *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)
    output = proc.stdout + proc.stderr
    assert 'Traceback' not in output, output
    return proc.returncode, output


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    return make_demo_folder(tmp_path_factory.mktemp('runs'))


# ------------------------------------------------------------------ bags
def test_bag_info_on_the_demo_folder_lists_its_runs(demo):
    code, out = run('bag', 'info', demo)
    assert code == 0, out
    assert f'{demo}: a folder of 3 runs: after, after_dynamics, before' in out
    assert out.count('messages:') == 3


@pytest.mark.parametrize('content', ['empty', 'notes'])
def test_bag_repair_refuses_a_folder_without_bag_files(tmp_path, content):
    folder = tmp_path / content
    folder.mkdir()
    if content == 'notes':
        (folder / 'notes.txt').write_text('lap 3 was rainy\n')
    code, out = run('bag', 'repair', folder)
    assert code == 2 and str(folder) in out and 'no rosbag2 runs' in out, out
    assert not (folder / 'metadata.yaml').exists()


def test_bag_info_names_a_missing_metadata_and_a_missing_path(demo, tmp_path):
    import shutil

    crashed = shutil.copytree(demo / 'before', tmp_path / 'crashed')
    (crashed / 'metadata.yaml').unlink()
    code, out = run('bag', 'info', crashed)
    assert code == 1 and f'{crashed / "metadata.yaml"}: missing' in out and 'bag repair' in out
    code, out = run('bag', 'info', tmp_path / 'nope')
    assert code == 2 and f'{tmp_path / "nope"}: no such run' in out, out


def test_bag_info_names_a_truncated_file(demo, tmp_path):
    import shutil

    run_dir = shutil.copytree(demo / 'after', tmp_path / 'cut')
    mcap = next(run_dir.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[:-300])
    code, out = run('bag', 'info', run_dir)
    assert code == 1 and f'{mcap}: cannot be read' in out, out


# ------------------------------------------------------------------ learn
@pytest.mark.parametrize('option, value', [('--val-fraction', '1.5'), ('--epochs', '-1'),
                                           ('--lr', '0')])
def test_learn_refuses_bad_numbers(demo, tmp_path, option, value):
    code, out = run('learn', 'dynamics', demo, '--out', tmp_path / 'o', option, value)
    assert code == 2 and f'argument {option}' in out, out


def test_learn_reads_the_demo_folder_and_keeps_an_earlier_result(demo, tmp_path):
    out_dir = tmp_path / 'o'
    code, out = run('learn', 'dynamics', demo, '--out', out_dir, '--epochs', '2', '--no-plots')
    assert code == 0, out
    assert 'nan' not in out and 'validation' in out       # 3 runs: one validates
    assert (f'dynamics: 3 runs; training on {demo / "after"}, {demo / "after_dynamics"}; '
            f'validating on {demo / "before"}') in out, out
    before = (out_dir / 'mpc.yaml').read_bytes()
    code, out = run('learn', 'dynamics', demo, '--out', out_dir, '--epochs', '2', '--no-plots')
    assert code == 2 and f'{out_dir}: holds an earlier result' in out and '--force' in out, out
    assert (out_dir / 'mpc.yaml').read_bytes() == before


def test_learn_names_a_folder_without_runs(tmp_path):
    (tmp_path / 'notes.txt').write_text('nothing recorded\n')
    code, out = run('learn', 'dynamics', tmp_path, '--out', tmp_path / 'o')
    assert code == 2 and f'{tmp_path}: no rosbag2 runs' in out, out


# ------------------------------------------------------------------ world files
@pytest.mark.parametrize('text, line, expected', [
    (WALLS, 1, 'start: missing'),
    (WALLS + 'obstacles:\n  - [5, 5, 1]\nstart: [5.5, 5, 0]\n', 5, 'start: [5.5, 5] is inside obstacles[0]'),
    (WALLS + 'obstacles:\n  - [5, 5, 1]\nstart: [6.1, 5, 0]\n', 5,
     'start: [6.1, 5] is 0.100 m from obstacles[0] [5.0, 5.0, 1.0], closer than the robot radius'),
    (WALLS + 'start: [1, 1, 0]\nlandmark_radius: big\n', 4, 'landmark_radius: expected a positive'),
    (WALLS + 'start: [1, 1, 0]\nobstacles:\n  - [2, x, 0.3]\n', 5, 'obstacles[0]: expected 3 finite numbers'),
    (WALLS + 'start: [1, 1, 0]\nstrat: [1, 1, 0]\n', 4, "unknown key 'strat'"),
])
def test_sim_names_file_line_and_key_of_a_bad_world(tmp_path, text, line, expected):
    path = tmp_path / 'world.yaml'
    path.write_text(text)
    code, out = run('sim', '--world', path)
    assert code == 2, out
    assert f'{path}:{line}: ' in out and expected in out, out


def test_sim_rejects_a_binary_world_file(tmp_path):
    path = tmp_path / 'world.yaml'
    path.write_bytes(b'\x89PNG\r\n\x1a\n\x00\xff\xfe')
    code, out = run('sim', '--world', path)
    assert code == 2 and f'{path}: not a text (UTF-8) file' in out, out


def test_sim_lists_the_worlds_for_a_mistyped_name():
    code, out = run('sim', '--world', 'lop')
    assert code == 2 and 'lop: no such world file' in out, out
    assert '(available: clutter, corridors, loop)' in out, out


# ------------------------------------------------------------------ top level
def test_version_and_unknown_subcommand():
    code, out = run('--version')
    assert code == 0 and out.startswith('diffopt-ros ')
    code, out = run('bags', 'info')
    assert code == 2 and "unknown sub-command 'bags'" in out


def test_demo_lists_the_worlds_for_a_mistyped_name_and_writes_nothing(tmp_path):
    code, out = run('demo', '--world', 'lop', '--out', tmp_path / 'runs' / 'demo', cwd=tmp_path)
    assert code == 2, out
    assert 'loop' in out and 'corridors' in out
    assert not (tmp_path / 'runs').exists()
