"""Params files given to the installed node executables (``--ros-args --params-file``), run as
separate processes the way a user starts them: a value of the wrong type stops the node before
ROS starts (exit status 2, the message names file, line, node and key, no traceback); a YAML
syntax error gives file:line and exit status 2; unknown keys and a misspelt node entry are
warned about and the node runs."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
EXECUTABLES = ('mpc_node', 'slam_node', 'sim_node', 'recorder_node')
pytestmark = pytest.mark.skipif(not all((BIN / name).exists() for name in EXECUTABLES),
                                reason='node console scripts not installed next to python')


def _run(node: str, path: Path, *extra: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / node), '--ros-args', '--params-file', str(path), *extra],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('node, key, value', [
    ('mpc_node', 'dt', 'fast'), ('mpc_node', 'horizon', 'abc'),
    ('mpc_node', 'bounds.v_max', '"0.3"'), ('slam_node', 'keyframe.distance', 'far'),
    ('sim_node', 'step_rate', 'fast'), ('recorder_node', 'split_seconds', 'ten'),
])
def test_a_string_where_a_number_belongs_stops_the_node(tmp_path, node, key, value):
    path = tmp_path / 'bad.yaml'
    path.write_text(f'{node}:\n  ros__parameters:\n    {key}: {value}\n')
    proc = _run(node, path, '-p', f'output_dir:={tmp_path}' if node == 'recorder_node'
                else 'use_sim_time:=false')
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f'{path}:3: {node} parameter {key}: expected a' in out
    assert 'Traceback' not in out
    assert not list(tmp_path.glob('run_*'))      # the recorder did not start a run


def test_a_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / 'broken.yaml'
    path.write_text('mpc_node:\n  ros__parameters:\n    horizon: 20\n    dt: [0.1\n')
    proc = _run('mpc_node', path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f'{path}:5: not valid YAML' in out and 'Traceback' not in out and 'RCLError' not in out


def test_arguments_rcl_refuses_end_without_a_traceback(tmp_path):
    """What the schema checks do not catch, rcl's own refusal, is exit 2 with its message."""
    proc = subprocess.run([str(BIN / 'mpc_node'), '--ros-args', '-r', 'no_separator'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'invalid ROS arguments' in proc.stderr and 'Traceback' not in proc.stderr


def test_an_out_of_range_value_names_the_file(tmp_path):
    path = tmp_path / 'range.yaml'
    path.write_text('mpc_node:\n  ros__parameters:\n    model:\n      gain_v: -3.0\n')
    proc = _run('mpc_node', path)
    assert proc.returncode == 2
    assert f'{path}:4: mpc_node parameter model.gain_v: -3.0 is below the minimum' in proc.stderr


def test_unknown_keys_and_a_misspelt_node_entry_warn_and_the_node_runs(tmp_path, stop_process):
    path = tmp_path / 'typos.yaml'
    path.write_text('sim_node:\n  ros__parameters:\n    stepp_rate: 50.0\n    paused: true\n'
                    'sim_nod:\n  ros__parameters:\n    seed: 3\n')
    proc = subprocess.Popen([str(BIN / 'sim_node'), '--ros-args', '--params-file', str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    lines = []
    try:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if not line or 'world loop' in line:      # the node is up
                break
        assert proc.poll() is None, ''.join(lines)
    finally:
        lines.append(stop_process(proc))
    out = ''.join(lines)
    assert proc.returncode == 0, out
    assert (f'params file {path}:3 sets unknown parameter stepp_rate of node /sim_node; did you '
            "mean 'step_rate'?") in out
    assert f"params file {path}:5: entry '/sim_nod' does not match node /sim_node" in out


@pytest.mark.parametrize('node', EXECUTABLES)
def test_config_files_apply_in_a_namespace(node):
    """ROS itself (rcl) applies config/<node>.yaml to the node in a namespace, as a launch file's
    ``namespace:=robot1`` starts it (an entry ``mpc_node:`` would apply to /mpc_node only)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    from diffopt_ros.params import schema_for

    path = Path(__file__).resolve().parents[1] / 'config' / f'{node.removesuffix("_node")}.yaml'
    for namespace in ('/robot1', '/'):
        context = Context()
        rclpy.init(args=['x', '--ros-args', '-r', f'__ns:={namespace}', '--params-file', str(path)],
                   context=context)
        try:
            ros = Node(node, context=context)
            overrides = {name: p.value for name, p in ros._parameter_overrides.items()}
            ros.destroy_node()
        finally:
            rclpy.shutdown(context=context)
        assert set(overrides) == set(schema_for(node).names), namespace


@pytest.mark.parametrize('args, node, body, message', [
    (['sim', '--params'], 'sim_node', 'robot:\n      gain_v: fast',
     "{path}:4: sim_node parameter robot.gain_v: expected a float, got the string 'fast'"),
    (['sim', '--params'], 'sim_node', 'robot.gain_v: -3.0',
     '{path}:3: sim_node parameter robot.gain_v: -3.0 is below the minimum 0.0'),
    (['learn', 'dynamics', 'no_runs', '--params-file'], 'mpc_node', 'horizon: twenty',
     "{path}:3: mpc_node parameter horizon: expected an integer, got the string 'twenty'"),
    (['learn', 'cost', 'no_runs', '--learned-file'], 'mpc_node', 'model.gian_v: 0.9',
     "{path}:3: mpc_node has no parameter 'model.gian_v'; did you mean 'model.gain_v'?"),
    (['learn', 'slam', 'no_runs', '--params-file'], 'slam_node', 'horzion: 3',
     "{path}:3: slam_node has no parameter 'horzion'"),
], ids=['sim-type', 'sim-range', 'learn-dynamics-type', 'learn-cost-learned-typo',
        'learn-slam-typo'])
def test_cli_params_files_errors_name_file_line_and_key(tmp_path, args, node, body, message):
    """``diffopt-ros sim --params``, ``learn --params-file`` / ``--learned-file``: the schema's
    checks, before any work (a wrong type, a typo, a value out of range), exit status 2."""
    path = tmp_path / 'params.yaml'
    path.write_text(f'{node}:\n  ros__parameters:\n    {body}\n')
    proc = subprocess.run([sys.executable, '-m', 'diffopt_ros.cli', *args, str(path),
                           *(['--out', str(tmp_path / 'out')] if args[0] == 'learn' else [])],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert message.format(path=path) in out
    assert 'Traceback' not in out
    assert not (tmp_path / 'out').exists()
