"""The node parameter schemas (diffopt_ros.params) and the params-file checks built on them:
typing as rcl types, file:line errors, unknown-key and misspelt-node warnings, and agreement of
every place that states a parameter or a default (settings objects, learned keys, config files,
docs tables, README, docs/CONTRACTS.md) with the schemas."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from diffopt_ros import params_file
from diffopt_ros.params import NODE_MODULES, SchemaError, schema_for
from diffopt_ros.params.docs import generated_files
from diffopt_ros.params_file import ParamsFileError, check_ros_args, read_params_file

ROOT = Path(__file__).resolve().parents[1]
NODES = tuple(NODE_MODULES)


def _file(tmp_path, text: str, name: str = 'p.yaml') -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _section(node: str, body: str) -> str:
    return f'{node}:\n  ros__parameters:\n' + ''.join(f'    {line}\n' for line in body.split('\n'))


# ------------------------------------------------------------------ typing like rcl
@pytest.mark.parametrize('text, quoted, expected', [
    ('1e-4', False, 1e-4),          # PyYAML would give the string '1e-4'
    ('0.3', True, '0.3'),           # quoted: a string for ROS
    ('0.3', False, 0.3),
    ('20', False, 20),
    ('0x10', False, 16),
    ('yes', False, True), ('Off', False, False), ('true', True, 'true'),
    ('.inf', False, math.inf), ('-.inf', False, -math.inf),
    ('fast', False, 'fast'), ('1_000', False, '1_000'),
])
def test_scalars_are_typed_as_rcl_types_them(text, quoted, expected):
    assert params_file.scalar(text, quoted) == expected
    assert type(params_file.scalar(text, quoted)) is type(expected)


def test_sections_namespaces_patterns_and_lines(tmp_path):
    path = _file(tmp_path, '/**:\n  ros__parameters:\n    use_sim_time: true\n'
                           'robot1:\n  mpc_node:\n    ros__parameters:\n      weights:\n'
                           '        position: 5.0\n      horizon: 30\n')
    sections = params_file.load_params_yaml(path)
    assert [s.name for s in sections] == ['/**', '/robot1/mpc_node']
    values, lines = params_file.node_values(sections, '/robot1/mpc_node')
    assert values == {'use_sim_time': True, 'weights.position': 5.0, 'horizon': 30}
    assert lines == {'use_sim_time': 3, 'weights.position': 8, 'horizon': 9}
    assert params_file.node_values(sections, '/mpc_node')[0] == {'use_sim_time': True}
    assert params_file.Section('/**/mpc_node', 1).matches('/mpc_node')
    assert params_file.Section('/*/mpc_node', 1).matches('/a/mpc_node')
    assert not params_file.Section('/*/mpc_node', 1).matches('/a/b/mpc_node')


@pytest.mark.parametrize('text, where', [
    ('mpc_node:\n  ros__parameters:\n    dt: [1\n', 'p.yaml:4: not valid YAML'),
    ('mpc_node:\n  ros__parameters:\n    dt: 0.1\n    dt: 0.2\n', "p.yaml:4: 'dt' given twice"),
    ('mpc_node:\n  ros__parameters:\n    dt:\n', 'p.yaml:3: dt: no value'),
    ('mpc_node:\n  horizon: 20\n', "p.yaml:2: 'mpc_node/horizon': expected \"ros__parameters:\""),
    ('mpc_node:\n  ros__parameters:\n    start: [0.0, 1]\n', 'p.yaml:3: start: a list mixes'),
    ('- 1\n', 'p.yaml:1: expected a mapping'),
    ('mpc_node:\n  ros__parameters:\n    dt: &step 0.1\n    tolerance: *step\n',
     'p.yaml:4: a YAML alias (*step)'),
])
def test_malformed_files_name_file_and_line(tmp_path, text, where):
    with pytest.raises(ParamsFileError) as info:
        params_file.load_params_yaml(_file(tmp_path, text))
    assert str(info.value).startswith(str(tmp_path / where.split(':')[0]) + where[len('p.yaml'):])


# ------------------------------------------------------------------ the schema itself
def test_schema_type_and_range_checks():
    mpc = schema_for('mpc_node')
    with pytest.raises(SchemaError, match=r"parameter dt: expected a float, got the string 'fast'"):
        mpc.check({'dt': 'fast'})
    with pytest.raises(SchemaError, match='horizon: expected an integer'):
        mpc.check({'horizon': 2.5})
    with pytest.raises(SchemaError, match=r'write 1\.0'):
        mpc.check({'model.gain_v': 1}, ints_as_floats=False)
    assert mpc.check({'model.gain_v': 1}) == {'model.gain_v': 1.0}
    assert type(mpc.check({'model.gain_v': 1})['model.gain_v']) is float
    with pytest.raises(SchemaError, match='expected a bool'):
        mpc.check({'autostart': 1})
    with pytest.raises(SchemaError, match='expected an integer, got the bool True'):
        mpc.check({'horizon': True})
    numpy_values = mpc.check({'horizon': np.int64(30), 'dt': np.float32(0.25)})
    assert numpy_values == {'horizon': 30, 'dt': 0.25}
    assert type(numpy_values['horizon']) is int and type(numpy_values['dt']) is float
    with pytest.raises(SchemaError, match='below the minimum'):
        mpc.check({'model.gain_v': -3.0})
    with pytest.raises(SchemaError, match="no parameter 'horzion'; did you mean 'horizon'"):
        mpc.check({'horzion': 20})
    with pytest.raises(SchemaError, match='must be below bounds.v_max'):
        mpc.settings({'bounds.v_min': 1.0})
    assert mpc.check({'use_sim_time': True, 'qos_overrides./x.publisher.depth': 3}) == {}
    sim = schema_for('sim_node')
    with pytest.raises(SchemaError, match='expected 3 values'):
        sim.check({'start_pose': [0.0, 1.0]})
    with pytest.raises(SchemaError, match='expected a list of float'):
        sim.check({'start_pose': 1.0})
    with pytest.raises(SchemaError, match="'fast'"):
        sim.check({'start_pose': [0.0, 'fast', 1.0]})


@pytest.mark.parametrize('node', NODES)
def test_every_default_passes_its_own_checks(node):
    schema = schema_for(node)
    assert schema.settings() == schema.defaults()
    assert schema.check(schema.defaults(), ints_as_floats=False) == schema.defaults()


def test_settings_objects_and_learned_keys_come_from_the_schemas():
    from diffopt_ros.learn.export import NODE_KEYS, ExportError, params_document
    from diffopt_ros.mpc.receding import SETTINGS_PARAMS, MpcSettings
    from diffopt_ros.sim.config import robot_params, sensor_params
    from diffopt_ros.sim.robot import RobotParams
    from diffopt_ros.sim.sensors import SensorParams
    from diffopt_ros.slam.config import SlamConfig, config_from_params

    mpc, sim, slam = (schema_for(n) for n in ('mpc_node', 'sim_node', 'slam_node'))
    settings = MpcSettings()
    assert {p: getattr(settings, f) for f, p in SETTINGS_PARAMS.items()} == \
        {p: mpc[p].default for p in SETTINGS_PARAMS.values()}
    assert MpcSettings.from_params(mpc.defaults()) == settings
    with pytest.raises(ValueError, match='horizon'):
        MpcSettings.from_params({'horizon': 'twenty'})
    assert robot_params(sim.defaults()) == RobotParams()
    assert sensor_params(sim.defaults()) == SensorParams()
    assert config_from_params(slam.defaults()) == SlamConfig()
    assert NODE_KEYS == {'mpc_node': mpc.learnable(), 'slam_node': slam.learnable()}
    assert set(mpc.learnable('model')) == {f'model.{k}' for k in ('gain_v', 'gain_omega', 'tau_v',
                                                                  'tau_omega')}
    # the names learning reads off the controller are the learnable parameters, with defaults
    from types import SimpleNamespace

    from diffopt_ros.learn.controller import cost_params, model_params, node_mpc
    from diffopt_ros.mpc import TrackingCost

    # the cost keeps float32 square roots of its weights (torch's default dtype): rel 1e-6
    weights = {k: mpc[k].default for k in mpc.learnable('weights')}
    assert cost_params(node_mpc(mpc.defaults())) == pytest.approx(weights, rel=1e-6)
    assert cost_params(SimpleNamespace(cost=TrackingCost.diff_drive())) == \
        pytest.approx(weights, rel=1e-6)
    assert model_params(node_mpc(mpc.defaults())) == \
        pytest.approx({k: mpc[k].default for k in mpc.learnable('model')}, rel=1e-6)
    with pytest.raises(ExportError, match='model.gain_v: -3.0 is below the minimum'):
        params_document('mpc_node', {'model.gain_v': -3.0})
    with pytest.raises(ExportError, match='not a learnable parameter'):
        params_document('mpc_node', {'horizon': 3})


# ------------------------------------------------------------------ offline readers (CLIs)
@pytest.mark.parametrize('node, body, message', [
    ('mpc_node', 'horizon: twenty', "p.yaml:3: mpc_node parameter horizon: expected an integer, "
                                    "got the string 'twenty'"),
    ('mpc_node', 'horzion: 20', "p.yaml:3: mpc_node has no parameter 'horzion'; did you mean "
                                "'horizon'?"),
    ('mpc_node', 'model:\n  gian_v: 0.9', "p.yaml:4: mpc_node has no parameter 'model.gian_v'"),
    ('sim_node', 'robot.gain_v: fast', 'p.yaml:3: sim_node parameter robot.gain_v: expected a '
                                       "float, got the string 'fast'"),
    ('sim_node', 'robot.gain_v: -3.0', 'p.yaml:3: sim_node parameter robot.gain_v: -3.0 is below'),
    ('slam_node', 'weights.odom_xy: "100.0"', 'p.yaml:3: slam_node parameter weights.odom_xy: '
                                              "expected a float, got the string '100.0'"),
])
def test_offline_reader_errors_name_file_line_node_and_key(tmp_path, node, body, message):
    path = _file(tmp_path, _section(node, body))
    with pytest.raises(ParamsFileError) as info:
        read_params_file(path, node)
    assert str(info.value).startswith(f'{tmp_path}/{message}')


def test_offline_reader_converts_integers_and_misspelt_node(tmp_path):
    path = _file(tmp_path, _section('mpc_node', 'model.gain_v: 1\ntolerance: 1e-4'))
    assert read_params_file(path, 'mpc_node') == {'model.gain_v': 1.0, 'tolerance': 1e-4}
    with pytest.raises(ParamsFileError, match='is "mcp_node" a misspelling of "mpc_node"'):
        read_params_file(_file(tmp_path, _section('mcp_node', 'dt: 0.1')), 'mpc_node')


# ------------------------------------------------------------------ node command lines
@pytest.mark.parametrize('node, body', [
    ('mpc_node', 'dt: fast'), ('mpc_node', 'horizon: abc'), ('mpc_node', 'bounds.v_max: "0.3"'),
    ('slam_node', 'keyframe.distance: far'), ('sim_node', 'step_rate: fast'),
    ('recorder_node', 'split_seconds: ten'),
])
def test_a_string_where_a_number_belongs_is_an_error(tmp_path, node, body):
    path = _file(tmp_path, _section(node, body))
    with pytest.raises(ParamsFileError) as info:
        check_ros_args([node, '--ros-args', '--params-file', str(path)], node)
    key = body.split(':')[0]
    assert str(info.value).startswith(f'{path}:3: {node} parameter {key}: expected')


def test_ros_args_warnings_remaps_and_overrides(tmp_path):
    path = _file(tmp_path, _section('mpc_node', 'horzion: 20\nuse_sim_time: true')
                 + _section('mcp_node', 'dt: 0.2') + _section('slam_node', 'robust.scale: 2.0'))
    warnings = check_ros_args(['mpc_node', '--ros-args', '--params-file', str(path)], 'mpc_node')
    assert warnings[0].startswith(f"params file {path}:5: entry '/mcp_node' does not match node "
                                  '/mpc_node')
    assert warnings[1] == (f'params file {path}:3 sets unknown parameter horzion of node '
                           "/mpc_node; did you mean 'horizon'?")
    assert len(warnings) == 2
    # an entry for every node (/**, a launch file's params_file) may hold other nodes' parameters
    shared = _file(tmp_path, _section('/**', 'world: loop\nuse_sim_time: true\nhorzion: 20'),
                   'shared.yaml')
    assert check_ros_args(['x', '--ros-args', '--params-file', str(shared)], 'mpc_node') == \
        [f"params file {shared}:5 sets unknown parameter horzion of node /mpc_node; did you mean "
         "'horizon'?"]
    other = _file(tmp_path, _section('controller', 'dt: 0.1'), 'other.yaml')
    warnings = check_ros_args(['x', '--ros-args', '--params-file', str(other)], 'mpc_node')
    assert warnings == [f'params file {other} sets nothing for node /mpc_node (its entries: '
                        '/controller)']
    # a remapped name and namespace select the entry; -p values are typed and checked too
    named = _file(tmp_path, _section('/robot1/mpc', 'dt: fast'), 'named.yaml')
    with pytest.raises(ParamsFileError, match='named.yaml:3: mpc_node parameter dt'):
        check_ros_args(['x', '--ros-args', '-r', '__node:=mpc', '-r', '__ns:=/robot1',
                        '--params-file', str(named)], 'mpc_node')
    assert check_ros_args(['x', '--ros-args', '--params-file', str(named)], 'mpc_node')
    with pytest.raises(ParamsFileError, match="-p dt:=fast: mpc_node parameter dt"):
        check_ros_args(['x', '--ros-args', '-p', 'dt:=fast'], 'mpc_node')
    with pytest.raises(ParamsFileError, match='below the minimum'):
        check_ros_args(['x', '--ros-args', '-p', 'horizon:=1'], 'mpc_node')
    assert check_ros_args(['x', '--ros-args', '-p', 'dt:=0.2', '-p', 'start_pose:=[1.0, 2.0, 0.0]',
                           '-p', 'other_node:dt:=fast'], 'mpc_node') == \
        ['-p start_pose:=[1.0, 2.0, 0.0]: unknown parameter start_pose of node /mpc_node']
    with pytest.raises(ParamsFileError, match='cannot read params file'):
        check_ros_args(['x', '--ros-args', '--params-file', str(tmp_path / 'missing.yaml')],
                       'mpc_node')


# ------------------------------------------------------------------ documented defaults
@pytest.mark.parametrize('node', NODES)
def test_config_files_state_exactly_the_schema_defaults(node):
    """config/<node>.yaml sets every parameter, typed as the node needs it, to its default."""
    path = ROOT / 'config' / f'{node.removesuffix("_node")}.yaml'
    assert check_ros_args([node, '--ros-args', '--params-file', str(path)], node) == []
    # its entry applies in a namespace too (launch files' namespace:=robot1)
    assert check_ros_args([node, '--ros-args', '-r', '__ns:=/robot1', '--params-file', str(path)],
                          node) == []
    values = read_params_file(path, node)
    schema = schema_for(node)
    assert set(values) == set(schema.names)
    assert {k: v for k, v in values.items() if v != schema[k].default} == {}


def test_demo_overrides_fit_the_schemas():
    overrides = yaml.safe_load((ROOT / 'config' / 'demo.yaml').read_text())['overrides']
    for node, values in overrides.items():
        schema_for(node).check(values)


def test_generated_docs_and_readme_tables_are_up_to_date():
    """``python -m diffopt_ros.params.docs`` regenerates them after a schema change."""
    for path, text in generated_files(ROOT).items():
        assert path.read_text(encoding='utf-8') == text, \
            f'{path} is stale: run python -m diffopt_ros.params.docs'


def test_contracts_state_the_schema_defaults():
    text = (ROOT / 'docs' / 'CONTRACTS.md').read_text()
    sim, mpc, slam = (schema_for(n) for n in ('sim_node', 'mpc_node', 'slam_node'))
    line = re.search(r'- Simulator defaults .*?\n(?=- )', text, re.S).group(0)
    stated = dict(re.findall(r'(\w+) (-?\d+(?:\.\d+)?)', line.split(':', 1)[1]))
    for name, value in stated.items():
        names = [f'robot.{name}'] if name != 'drag' else ['robot.drag_v', 'robot.drag_omega']
        assert all(sim[n].default == float(value) for n in names), name
    assert len(stated) == 7
    nominal = re.search(r'MPC nominal model .*?: gains (\d+\.\d+), tau_v = tau_omega = (\d+\.\d+)',
                        text)
    assert mpc['model.gain_v'].default == mpc['model.gain_omega'].default == float(nominal[1])
    assert mpc['model.tau_v'].default == mpc['model.tau_omega'].default == float(nominal[2])
    blocks = [yaml.safe_load(b) for b in re.findall(r'```yaml\n(.*?)```', text, re.S)]
    documented = {node: body['ros__parameters'] for block in blocks for node, body in block.items()}
    assert set(documented['mpc_node']) <= set(mpc.learnable())
    assert documented['slam_node'] == {k: slam[k].default for k in slam.learnable()}
