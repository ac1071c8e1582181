"""``diffopt-ros drive``: goals behind obstacles reached without collisions, scored, and reported."""
import json

import pytest
import torch

from diffopt_ros.cli import main as cli_main
from diffopt_ros.drive import drive
from diffopt_ros.sim import World

# a 6 m x 4 m room; a wall from the south across most of it and a post stand between start and goal
WORLD = {'name': 'small', 'start': [1.0, 1.0, 0.0],
         'walls': [{'box': [0, 0, 6, 4]}, [3, 0, 3, 2.8]],
         'obstacles': [[1.5, 2.8, 0.25]]}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize('robot', ['diff_drive', 'ackermann'])
def test_goal_behind_a_wall_is_reached_without_collision(robot):
    world = World.from_dict(WORLD)
    result = drive(world, [[5.0, 1.0]], robot=robot, seed=0)
    goal = result.goals[0]
    assert goal.reached and goal.collisions == 0, goal
    assert goal.min_clearance > 0.2, 'the robot radius is 0.2 m'
    assert goal.path_length > 5.0, 'the way round the wall, not through it'
    assert result.ticks > 0 and result.tick_p99_ms >= result.tick_p50_ms > 0


def test_an_obstacle_missing_from_the_map_is_avoided():
    from diffopt_ros.maps import world_grid

    mapped = World.from_dict({'start': [1.0, 1.0, 0.0], 'walls': [{'box': [0, 0, 8, 2]}]})
    world = World.from_dict({'walls': [{'box': [0, 0, 8, 2]}], 'obstacles': [[4.0, 0.75, 0.3]],
                             'start': [1.0, 1.0, 0.0]})
    result = drive(world, [[7.0, 1.0]], grid=world_grid(mapped, 0.05), slam=False)
    goal = result.goals[0]
    assert goal.reached and goal.collisions == 0, goal
    assert goal.min_clearance > 0.2


@pytest.mark.parametrize('shift', [-0.15, 0.15])
def test_the_stop_zone_keeps_a_robot_whose_map_is_off_out_of_a_doorway_s_edge(shift):
    """The map 0.15 m off in y (as a pose estimate that far off): the MPC tracks the map's
    doorway, 0.6 m wide, into the real one's edge. Without the stop zone it pushes against it
    until the goal times out; with it, it stands off (scan points are where they are relative to
    the robot whatever the pose error), until the goal is given up for want of progress."""
    from dataclasses import replace

    from diffopt_ros.maps import world_grid
    from diffopt_ros.navigation import NavSettings

    world = World.load('clutter')
    grid = world_grid(world, 0.05)
    grid = replace(grid, origin=(grid.origin[0], grid.origin[1] + shift))
    goals = {}
    for margin in (-1.0, NavSettings().stop_margin):
        goals[margin] = drive(world, [[9.5, 2.3]], start=(6.8, 2.4, 0.0), grid=grid, slam=False,
                              nav=NavSettings(stop_margin=margin), goal_timeout=8.0).goals[0]
    off, on = goals.values()
    assert off.collisions > 100, off
    assert on.collisions == 0 and on.min_clearance > 0.2, on
    # held there, the goal is given up once the robot has not moved for progress_timeout
    held = drive(world, [[9.5, 2.3]], start=(6.8, 2.4, 0.0), grid=grid, slam=False,
                 nav=NavSettings(progress_timeout=4.0), goal_timeout=30.0).goals[0]
    assert held.status == 'no progress' and held.time < 12.0 and held.collisions == 0, held


def test_the_stop_zone_lets_a_robot_whose_map_is_a_little_off_through_a_doorway():
    """The doorway leaves 0.1 m either side of the disc; the robot tracks the map's centre
    line, so with the map 0.05 m off its disc passes about the stop margin (0.05 m) from a real
    edge, slowed by the stop zone, and gets through. With the map 0.07 m off or more the margin
    lies on the edge, and the stop zone holds the robot there (the goal given up for want of
    progress)."""
    from dataclasses import replace

    from diffopt_ros.maps import world_grid

    world = World.load('clutter')
    grid = world_grid(world, 0.05)
    grid = replace(grid, origin=(grid.origin[0], grid.origin[1] + 0.05))
    goal = drive(world, [[9.5, 2.3]], start=(6.8, 2.4, 0.0), grid=grid, slam=False).goals[0]
    assert goal.reached and goal.collisions == 0 and goal.min_clearance > 0.2, goal


def test_cli_writes_json_and_reports_unreachable_goals(tmp_path, capsys):
    world_file = tmp_path / 'small.yaml'
    world_file.write_text(json.dumps(dict(WORLD, walls=WORLD['walls'] + [{'box': [4.5, 2.5, 5.5, 3.5]}])))
    out = tmp_path / 'result.json'
    code = cli_main(['drive', '--world', str(world_file), '--goal', '2,1', '--goal', '5,3',
                     '--json', str(out), '--ground-truth'])
    assert code == 1, 'a goal was not reached'
    data = json.loads(out.read_text())
    first, second = data['goals']
    assert first['reached'] and first['collisions'] == 0
    assert not second['reached'] and second['status'].startswith('unreachable')
    for key in ('rate_hz', 'tick_p50_ms', 'tick_p99_ms', 'solve_p50_ms', 'control_p50_ms', 'control_p99_ms'):
        assert data[key] > 0
    assert 'tick_cpu_ms' not in data and 'run' not in data     # per-tick lists stay out of the file
    printed = capsys.readouterr().out
    assert 'goal (2.00, 1.00): reached' in printed and 'unreachable' in printed


def test_cli_navigates_with_the_params_file_s_navigation_values(tmp_path, capsys):
    import yaml

    from diffopt_ros.paths import config_path

    world_file = tmp_path / 'small.yaml'
    world_file.write_text(json.dumps(WORLD))
    params = yaml.safe_load(config_path('mpc.yaml').read_text())
    # a robot 1.4 m across does not fit through the 1.2 m gap at the wall's end
    params['/**/mpc_node']['ros__parameters']['navigation.radius'] = 0.7
    params_file = tmp_path / 'wide.yaml'
    params_file.write_text(yaml.safe_dump(params))
    code = cli_main(['drive', '--world', str(world_file), '--goal', '5,1', '--ground-truth',
                     '--params-file', str(params_file)])
    assert code == 1 and 'goal (5.00, 1.00): unreachable' in capsys.readouterr().out


def test_record_writes_a_bag_that_learning_reads(tmp_path, capsys):
    from diffopt_ros.learn.datasets import load_runs

    world_file = tmp_path / 'small.yaml'
    world_file.write_text(json.dumps(WORLD))
    code = cli_main(['drive', '--world', str(world_file), '--goal', '2.5,1', '--ground-truth',
                     '--record', str(tmp_path / 'runs')])
    assert code == 0
    (run,) = load_runs([tmp_path / 'runs'], ['/cmd_vel', '/odom', '/ground_truth/odom', '/scan'])
    assert len(run.commands.t) > 20 and len(run.scans.t) > 10
    assert abs(run.ground_truth.values[-1, 0] - 2.5) < 0.2


def test_cli_rejects_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(['drive', '--world', 'clutter', '--goal', 'north'])
    assert exc.value.code == 2 and 'expected X,Y' in capsys.readouterr().err
    assert cli_main(['drive', '--world', str(tmp_path / 'none.yaml'), '--goal', '1,1']) == 2
    assert 'none.yaml' in capsys.readouterr().err
