"""The demo's course (diffopt_ros.demo.course): the file loads, bad keys are named; the world's
map file reads back as the world's grid, in the frame asked for."""
import math

import numpy as np
import pytest

from diffopt_ros import paths
from diffopt_ros.demo.course import DemoError, load_course, write_world_map
from diffopt_ros.maps import load_map, world_grid
from diffopt_ros.sim import World


def test_course_file_loads():
    course = load_course(paths.config_path('demo.yaml'))
    assert course.world == 'clutter' and course.goals.shape == (4, 2) and course.goal_timeout > 0
    assert course.overrides['mpc_node']['control_rate'] > 0
    # the MPC's settings as the demo runs them: an override, else the node's default
    assert course.mpc_value('reference_speed') == course.overrides['mpc_node']['reference_speed']
    assert course.mpc_value('goal_tolerance') == 0.15


@pytest.mark.parametrize('text, message', [
    ('course:\n  sped: 0.3\n', r"course.yaml: unknown key\(s\) \['sped'\]"),
    ('learn:\n  slma: false\n', 'slma'),
    ('course:\n  goal_timeout: -1\n', 'goal_timeout'),
    ('course:\n  speed: 0.7\n', 'speed'),                # goals only: no timed legs, no speed
    ('course:\n  goals: [[1, .nan]]\n', 'goals'),
    ('overrides:\n  mpc: {horizon: 3}\n', 'mpc'),
    # override values are checked against the node's schema
    ('overrides:\n  mpc_node: {horizon: twenty}\n',
     'course.yaml: overrides.mpc_node: mpc_node parameter horizon: expected an integer'),
    ('overrides:\n  sim_node: {wait_for_cmd: 1, stepp_rate: 5.0}\n',
     "no parameter 'stepp_rate'; did you mean 'step_rate'"),
])
def test_bad_course_files_are_named(tmp_path, text, message):
    bad = tmp_path / 'course.yaml'
    bad.write_text(text)
    with pytest.raises(DemoError, match=message):
        load_course(bad)


def test_override_values_are_converted(tmp_path):
    course = tmp_path / 'course.yaml'
    course.write_text('overrides:\n  sim_node: {wait_for_cmd: 1}\n')    # an int for a float
    assert load_course(course).overrides['sim_node'] == {'wait_for_cmd': 1.0}


def test_world_map_file_is_the_world_grid_in_the_estimate_frame(tmp_path):
    world = World.load('clutter')
    grid = world_grid(world, 0.05)
    in_map = load_map(write_world_map(world, tmp_path / 'map'))
    np.testing.assert_array_equal(in_map.data, grid.data)
    assert in_map.resolution == grid.resolution and in_map.origin == pytest.approx(grid.origin)
    # /odom's frame starts at the robot's start pose: the same cells, origin shifted
    in_odom = load_map(write_world_map(world, tmp_path / 'odom_map', [1.0, 1.0, 0.0]))
    np.testing.assert_array_equal(in_odom.data, grid.data)
    assert in_odom.origin == pytest.approx((grid.origin[0] - 1.0, grid.origin[1] - 1.0))
    with pytest.raises(DemoError, match='rotated'):
        write_world_map(world, tmp_path / 'rotated', [1.0, 1.0, math.pi / 2])
