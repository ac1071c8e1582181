"""Package layout: CLI, data lookup, import rule (rclpy only in nodes/)."""
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from diffopt_ros import cli, paths
from diffopt_ros.nodes import runner

ROOT = Path(__file__).resolve().parents[1]


def test_share_dir_is_found_from_source_checkout():
    assert (paths.share_dir() / 'config').is_dir()
    assert (paths.share_dir() / 'launch').is_dir()


def test_cli_help_lists_every_subcommand(capsys):
    assert cli.main(['--help']) == 0
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert name in out


def test_cli_unknown_subcommand_is_an_error(capsys):
    assert cli.main(['no-such-thing']) == 2
    assert 'unknown sub-command' in capsys.readouterr().err


def test_every_subcommand_has_help():
    for name in cli.SUBCOMMANDS:
        proc = subprocess.run([sys.executable, '-m', 'diffopt_ros.cli', name, '--help'],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (name, proc.stderr)
        assert 'usage' in proc.stdout.lower(), name


@pytest.mark.parametrize('name', ['sim_node', 'mpc_node', 'slam_node', 'recorder_node'])
def test_every_node_executable_has_help_listing_its_parameters(name, capsys):
    """``<node> --help`` prints usage and every parameter, and exits 0 without starting ROS."""
    module = importlib.import_module(f'diffopt_ros.nodes.{name}')
    assert module.main([name, '--help']) == 0
    out = capsys.readouterr().out
    assert out.startswith('usage:') and '--ros-args' in out
    assert all(f'  {spec.name} (' in out for spec in module.PARAMS)
    assert not runner.wants_help([name, '--ros-args', '-p', 'x:=--help'])


def test_core_never_imports_rclpy_messages_or_nodes():
    banned = ('rclpy', 'std_msgs', 'geometry_msgs', 'nav_msgs', 'sensor_msgs', 'diagnostic_msgs',
              'visualization_msgs', 'lifecycle_msgs', 'std_srvs', 'rosgraph_msgs')
    offenders = []
    for path in (ROOT / 'diffopt_ros').rglob('*.py'):
        if 'nodes' in path.relative_to(ROOT / 'diffopt_ros').parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f'{path}: {n}' for n in names
                          if n.split('.')[0] in banned or n.startswith('diffopt_ros.nodes')]
    assert not offenders, offenders
