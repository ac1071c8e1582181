"""World files a user writes: a missing start, a start inside an obstacle, wrong types and
mistyped world names are errors naming the file, line and key (or the worlds there are)."""
import pytest

from diffopt_ros.sim import World, WorldError

WALLS = 'walls:\n  - {box: [0, 0, 10, 10]}\n'


def _load(tmp_path, text):
    path = tmp_path / 'w.yaml'
    path.write_text(text)
    return path, World.from_yaml(path)


@pytest.mark.parametrize('text, line, expected', [
    (WALLS, 1, 'start: missing; give the start pose as start: [x, y, yaw]'),
    (WALLS + 'start:\n', 3, 'start: missing'),
    (WALLS + 'obstacles:\n  - [5, 5, 1]\nstart: [5.5, 5, 0]\n', 5,
     'start: [5.5, 5] is inside obstacles[0] [5.0, 5.0, 1.0]'),
    (WALLS + 'landmarks:\n  - [2, 2]\nstart: [2.05, 2, 0]\n', 5,
     'start: [2.05, 2] is inside landmarks[0] [2.0, 2.0]'),
    (WALLS + 'start: [0, 5, 0]\n', 3, 'start: [0, 5] is on a wall'),
    (WALLS + 'start: [1, 1, fast]\n', 3, "start: expected 3 finite numbers [x, y, yaw], got [1, 1, 'fast']"),
    (WALLS + 'start: [1, 1, 0]\nlandmark_radius: big\n', 4, 'landmark_radius: expected a positive'),
    (WALLS + 'start: [1, 1, 0]\nobstacles: {x: 1}\n', 4, 'obstacles: expected a list, got dict'),
    (WALLS + 'start: [1, 1, 0]\nname: [a]\n', 4, 'name: expected a string'),
])
def test_world_errors_name_file_line_and_key(tmp_path, text, line, expected):
    with pytest.raises(WorldError) as info:
        _load(tmp_path, text)
    message = str(info.value)
    assert message.startswith(f'{tmp_path / "w.yaml"}:{line}: '), message
    assert expected in message, message


def test_a_robot_that_does_not_fit_at_the_start_is_named_with_the_file(tmp_path):
    path, world = _load(tmp_path, WALLS + 'obstacles:\n  - [5, 5, 1]\nstart: [6.1, 5, 0]\n')
    world.check_start(0.05)
    with pytest.raises(WorldError, match=rf'{path}:5: start: \[6.1, 5\] is 0.100 m from '
                                         r'obstacles\[0\] .*closer than the robot radius 0.2 m'):
        world.check_start(0.2)


def test_a_mistyped_world_name_lists_the_worlds():
    with pytest.raises(WorldError,
                       match=r'lop: no such world file, .*\(available: clutter, corridors, loop\)'):
        World.load('lop')
