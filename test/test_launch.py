"""Launch files: every executable and config file they name exists; their node set-up is right.

``launch``/``launch_ros`` cannot be installed from PyPI, so the files are checked three ways: a
static (ast) check of the names they use, a run of their node-building function against a
minimal recording stand-in of the launch API, and, where ``launch`` exists, a real import.
"""
import ast
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / 'launch').glob('*.launch.py'))
EXPECTED = {'sim_demo.launch.py': {'sim_node', 'slam_node', 'mpc_node', 'recorder_node'},
            'robot.launch.py': {'slam_node', 'mpc_node', 'recorder_node'},
            'gazebo.launch.py': {'slam_node', 'mpc_node', 'recorder_node'}}
STANDARD_ARGS = {'use_sim_time', 'params_file', 'namespace'}


def _console_scripts() -> dict[str, str]:
    """``{name: 'module:function'}`` of setup.py's console_scripts (read with ast)."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'entry_points':
            scripts = ast.literal_eval(node.value)['console_scripts']
            return {line.split('=')[0].strip(): line.split('=')[1].strip() for line in scripts}
    raise AssertionError('setup.py has no entry_points')


def test_the_three_launch_files_exist():
    assert {path.name for path in LAUNCH_FILES} == set(EXPECTED)


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_static_names_exist(path):
    """Executables are console scripts whose module exists; .yaml names are under config/."""
    tree = ast.parse(path.read_text(), filename=str(path))
    scripts = _console_scripts()
    executables, configs = set(), set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, 'id', getattr(node.func, 'attr', ''))
        if name == 'node' and node.args:  # NodeFactory.node(executable, config_file, ...)
            executables.add(ast.literal_eval(node.args[0]))
            configs.add(ast.literal_eval(node.args[1]))
        elif name == 'recorder':  # NodeFactory.recorder(): recorder_node with recorder.yaml
            executables.add('recorder_node')
            configs.add('recorder.yaml')
    assert executables == EXPECTED[path.name]
    for executable in executables:
        assert executable in scripts, f'{path.name}: {executable} is not a console script'
        module = scripts[executable].split(':')[0]
        assert importlib.util.find_spec(module) is not None, f'{executable}: no module {module}'
    for config in configs:
        assert (ROOT / 'config' / config).is_file(), f'{path.name}: config/{config} missing'


class _Recorded:
    """Stand-in for a launch class: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _Configuration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def _fake_launch_modules(share: Path) -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in (
        'launch', 'launch.actions', 'launch.substitutions', 'launch_ros', 'launch_ros.actions',
        'ament_index_python', 'ament_index_python.packages')}
    modules['launch'].LaunchDescription = _Recorded
    modules['launch.actions'].DeclareLaunchArgument = type('DeclareLaunchArgument', (_Recorded,), {})
    modules['launch.actions'].OpaqueFunction = type('OpaqueFunction', (_Recorded,), {})
    modules['launch.substitutions'].LaunchConfiguration = _Configuration
    modules['launch_ros.actions'].Node = type('Node', (_Recorded,), {})
    modules['ament_index_python.packages'].get_package_share_directory = lambda pkg: str(share)
    return modules


COMMON = 'diffopt_ros.nodes.launch_common'


def _forget_launch_common(monkeypatch):
    """Drop the cached shared launch helper for this test; when the test ends, sys.modules
    has again what it had before (so a helper bound to the stand-in below never outlives
    the test: a later test with real ``launch`` imports its own)."""
    monkeypatch.setitem(sys.modules, COMMON, None)
    del sys.modules[COMMON]


def _load_with_fake_launch(path, monkeypatch):
    for name, module in _fake_launch_modules(ROOT).items():
        monkeypatch.setitem(sys.modules, name, module)
    # the shared helper must import the stand-in, not a copy cached by an earlier test
    _forget_launch_common(monkeypatch)
    spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nodes(module, **overrides):
    """The Node actions the launch file makes with its default arguments (plus ``overrides``)."""
    description = module.generate_launch_description()
    entities = description.args[0]
    context = {e.args[0]: e.kwargs['default_value'] for e in entities
               if type(e).__name__ == 'DeclareLaunchArgument'}
    context.update(overrides)
    (opaque,) = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
    return {n.kwargs['executable']: n.kwargs for n in opaque.kwargs['function'](context)}


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_nodes_get_config_files_sim_time_and_learned_params(path, monkeypatch, tmp_path):
    module = _load_with_fake_launch(path, monkeypatch)
    declared = {e.args[0] for e in module.generate_launch_description().args[0]
                if type(e).__name__ == 'DeclareLaunchArgument'}
    assert STANDARD_ARGS <= declared, f'{path.name}: missing {STANDARD_ARGS - declared}'
    extra = tmp_path / 'extra.yaml'
    extra.write_text('/**:\n  ros__parameters: {}\n')
    nodes = _nodes(module, namespace='robot1', use_sim_time='true', params_file=str(extra),
                   mpc_learned_params='learned/mpc.yaml')
    ours = {name: kw for name, kw in nodes.items() if kw['package'] == 'diffopt_ros'}
    assert set(ours) == EXPECTED[path.name]
    for name, kwargs in ours.items():
        files = [p for p in kwargs['parameters'] if isinstance(p, str)]
        assert files[0] == str(ROOT / 'config' / f'{name.replace("_node", "")}.yaml')
        assert files[-1] == str(extra)  # the user's file comes after the defaults
        assert all(Path(f).is_file() for f in files), files
        assert kwargs['parameters'][-1]['use_sim_time'] is True
        assert kwargs['namespace'] == 'robot1' and kwargs['name'] == name
    assert ours['mpc_node']['parameters'][-1]['learned_params_file'] == 'learned/mpc.yaml'
    assert ('odom', 'slam/odom') in ours['mpc_node']['remappings']
    if 'recorder_node' in EXPECTED[path.name]:
        assert 'recorder_node' not in _nodes(module, record='false')


def test_sim_demo_anchors_slam_at_the_worlds_start(monkeypatch):
    """One map frame: slam_node's initial_pose is the start pose of the world sim_node runs."""
    from diffopt_ros.sim.world import World
    module = _load_with_fake_launch(ROOT / 'launch' / 'sim_demo.launch.py', monkeypatch)
    for world in ('loop', 'corridors'):
        nodes = _nodes(module, world=world)
        assert nodes['sim_node']['parameters'][-1]['world'] == world
        assert nodes['slam_node']['parameters'][-1]['initial_pose'] == World.load(world).start.tolist()


def test_sim_demo_robot_and_navigation_arguments(monkeypatch):
    """robot:=ackermann makes sim_node's robot a car and mpc_node's model bicycle, navigating;
    navigation:=true turns navigation on for the diff drive; by default neither."""
    module = _load_with_fake_launch(ROOT / 'launch' / 'sim_demo.launch.py', monkeypatch)

    def values(**args):
        nodes = _nodes(module, **args)
        return nodes['sim_node']['parameters'][-1], nodes['mpc_node']['parameters'][-1]

    sim, mpc = values()
    assert sim['robot.kind'] == 'diff_drive' and 'navigation.enabled' not in mpc
    sim, mpc = values(robot='ackermann')
    assert sim['robot.kind'] == 'ackermann'
    assert mpc['model'] == 'bicycle' and mpc['navigation.enabled'] is True
    sim, mpc = values(navigation='true')
    assert mpc['model'] == 'diff_drive_lag' and mpc['navigation.enabled'] is True


def test_robot_recorder_follows_the_input_remaps(monkeypatch):
    """The recorder's topic list is relative: in robot.launch.py it gets the same remaps as the
    nodes that read the robot's topics, so it records /wheel/odom, /base/scan, /base/cmd_vel."""
    module = _load_with_fake_launch(ROOT / 'launch' / 'robot.launch.py', monkeypatch)
    nodes = _nodes(module, odom_topic='/wheel/odom', scan_topic='/base/scan',
                   cmd_vel_topic='/base/cmd_vel')
    assert set(nodes['recorder_node']['remappings']) == {
        ('odom', '/wheel/odom'), ('scan', '/base/scan'), ('cmd_vel', '/base/cmd_vel')}


def test_gazebo_bridges_clock_and_robot_topics(monkeypatch):
    module = _load_with_fake_launch(ROOT / 'launch' / 'gazebo.launch.py', monkeypatch)
    bridge = _nodes(module, gz_odom_topic='/model/bot/odometry')['parameter_bridge']
    assert '/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock' in bridge['arguments']
    assert '/model/bot/odometry@nav_msgs/msg/Odometry[gz.msgs.Odometry' in bridge['arguments']
    assert ('/model/bot/odometry', 'odom') in bridge['remappings']


def test_the_stand_in_does_not_outlive_its_test(monkeypatch):
    """After a test with the launch stand-in, neither the stand-in nor a launch helper bound
    to it stays in sys.modules (the real-launch tests below import the real ones)."""
    before = {name: sys.modules.get(name) for name in ('launch', 'launch_ros', COMMON)}
    with monkeypatch.context() as patch:
        module = _load_with_fake_launch(ROOT / 'launch' / 'sim_demo.launch.py', patch)
        assert type(module.generate_launch_description()).__name__ == '_Recorded'
        assert sys.modules[COMMON].LaunchDescription is _Recorded
    after = {name: sys.modules.get(name) for name in before}
    assert after == before


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_real_launch_import(path, monkeypatch):
    """Where ROS 2 launch is installed, the file builds a real LaunchDescription."""
    _forget_launch_common(monkeypatch)   # whatever imported it before, with whatever launch
    try:
        import launch_ros  # noqa: F401

        import launch
    except ImportError:
        launch = None
    if not hasattr(launch, 'LaunchDescription'):  # not installed (or only this repo's launch/)
        if os.environ.get('DIFFOPT_ROS_REAL_LAUNCH') == '1':   # .ci/real_launch.sh installed it
            pytest.fail('DIFFOPT_ROS_REAL_LAUNCH=1 but launch/launch_ros cannot be imported')
        pytest.skip('launch/launch_ros are not on PyPI: checked statically and with a stand-in')
    spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.generate_launch_description(), launch.LaunchDescription)
