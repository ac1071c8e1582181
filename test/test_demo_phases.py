"""The demo's phases and command line (diffopt_ros.demo.phases)."""
from diffopt_ros.demo import phases


def test_new_folder_never_overwrites(tmp_path):
    first = phases._new_folder(tmp_path / 'run')
    second = phases._new_folder(tmp_path / 'run')
    assert first.name == 'run' and second.name == 'run_1'
