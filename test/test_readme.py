"""The README as a user reads it: its Python runs, its commands exist and run, its links resolve.

Commands that need a ROS workspace (`colcon`, `ros2 launch`) run in CI (`.ci/run`); `make demo`
and `make test` are what CI and `make` run themselves.
"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()
BIN = Path(sys.executable).parent
#: Commands run elsewhere: by CI (colcon, ros2 launch, make), or shell set-up lines.
ELSEWHERE = {'make', 'colcon', 'ros2', 'cd', 'git', '.', 'source'}


def _blocks(language):
    return re.findall(rf'```{language}\n(.*?)```', README, re.S)


def _commands():
    """Every command line of the README's bash blocks (continuations joined, comments cut)."""
    lines = []
    for block in _blocks('bash'):
        block = block.replace('\\\n', ' ')
        for line in block.splitlines():
            line = line.split('  #')[0].strip()
            for part in line.split('&&'):
                if part.strip():
                    lines.append(shlex.split(part.strip()))
    return lines


def test_readme_is_short():
    assert len(README.splitlines()) <= 250


@pytest.mark.parametrize('index', range(len(_blocks('python'))))
def test_python_examples_run(index, tmp_path):
    code = _blocks('python')[index]
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_links_resolve():
    for target in re.findall(r'\]\(([^)#]+)(?:#[^)]*)?\)', README):
        if '://' not in target:
            assert (ROOT / target).exists(), target


def test_every_command_exists():
    scripts = {'diffopt-ros', 'sim_node', 'mpc_node', 'slam_node', 'recorder_node'}
    makefile = (ROOT / 'Makefile').read_text()
    for argv in _commands():
        program = argv[0]
        if program == 'make':
            assert re.search(rf'^{argv[1]}:', makefile, re.M), argv
        elif program not in ELSEWHERE:
            assert program in scripts and (BIN / program).exists(), argv


@pytest.mark.ros   # runs mpc_node --help
def test_help_commands_run():
    ran = 0
    for argv in _commands():
        if argv[0] in ('diffopt-ros', 'mpc_node') and argv[-1] == '--help':
            proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True,
                                  text=True, timeout=120, cwd=ROOT)
            assert proc.returncode == 0, (argv, proc.stderr)
            ran += 1
    assert ran >= 2


@pytest.mark.slow
def test_record_learn_commands_run_as_written(tmp_path):
    """`bag info` and `learn dynamics` of the README on a recorded run named as there."""
    from diffopt_ros.experiments.simulated_runs import excitation_run
    from diffopt_ros.learn.datasets import save_bag
    from diffopt_ros.sim import RobotParams

    save_bag(excitation_run(RobotParams(), seconds=10.0, seed=1, name='lap1'), tmp_path / 'runs')
    wanted = [argv for argv in _commands() if argv[:2] in (['diffopt-ros', 'bag'],
                                                          ['diffopt-ros', 'learn'])]
    wanted = [argv for argv in wanted if argv[2] in ('info', 'dynamics') and '--method' not in argv]
    assert len(wanted) == 2
    for argv in wanted:
        proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                              timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
    assert (tmp_path / 'learned' / 'dynamics' / 'mpc.yaml').is_file()
