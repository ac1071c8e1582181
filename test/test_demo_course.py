"""The demo's course file (diffopt_ros.demo.course): loads, and bad keys are named."""
import pytest

from diffopt_ros import paths
from diffopt_ros.demo.course import DemoError, load_course


def test_course_file_loads_and_bad_keys_are_named(tmp_path):
    course = load_course(paths.config_path('demo.yaml'))
    assert course.world == 'loop' and course.speed > 0 and course.goals.shape == (4, 2)
    assert course.overrides['mpc_node']['control_rate'] > 0
    bad = tmp_path / 'course.yaml'
    bad.write_text('course:\n  sped: 0.3\n')
    with pytest.raises(DemoError, match=r"course.yaml: unknown key\(s\) \['sped'\]"):
        load_course(bad)
    bad.write_text('learn:\n  slma: false\n')
    with pytest.raises(DemoError, match='slma'):
        load_course(bad)
    bad.write_text('course:\n  speed: -1\n')
    with pytest.raises(DemoError, match='speed'):
        load_course(bad)
    bad.write_text('overrides:\n  mpc: {horizon: 3}\n')
    with pytest.raises(DemoError, match='mpc'):
        load_course(bad)
    # override values are checked against the node's schema (an int for a float is converted)
    bad.write_text('overrides:\n  mpc_node: {horizon: twenty}\n')
    with pytest.raises(DemoError, match=r'course.yaml: overrides.mpc_node: mpc_node parameter '
                                             'horizon: expected an integer'):
        load_course(bad)
    bad.write_text('overrides:\n  sim_node: {wait_for_cmd: 1, stepp_rate: 5.0}\n')
    with pytest.raises(DemoError, match="no parameter 'stepp_rate'; did you mean 'step_rate'"):
        load_course(bad)
    bad.write_text('overrides:\n  sim_node: {wait_for_cmd: 1}\n')
    assert load_course(bad).overrides['sim_node'] == {'wait_for_cmd': 1.0}
