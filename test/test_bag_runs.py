"""Folders of runs, as the demo lays them out: ``runs/demo_<date>-<time>/`` holding the bags
``before/``, ``after_dynamics/``, ``after/``, their plots and ``learned/`` (see
diffopt_ros/nodes/demo.py). ``bag info``, ``bag repair`` and ``learn`` find the runs inside;
repair never writes a metadata.yaml over a folder without bag files."""
import re
import shutil

import pytest

from diffopt_ros.bag import BagError, find_runs, repair_run
from diffopt_ros.bag.cli import main as bag_main
from diffopt_ros.experiments.simulated_runs import excitation_run
from diffopt_ros.learn.datasets import load_runs, save_bag
from diffopt_ros.sim import RobotParams

DEMO_RUNS = ('after', 'after_dynamics', 'before')   # sorted


def make_demo_folder(root, name='demo_20261128-220513', seconds=2.0):
    """What ``diffopt-ros demo`` leaves: three bags, their plots and the learned files."""
    demo = root / name
    demo.mkdir(parents=True)
    for seed, run in enumerate(('before', 'after_dynamics', 'after')):
        save_bag(excitation_run(RobotParams(), seconds=seconds, seed=seed, name=run), demo, run)
        (demo / f'{run}.png').write_bytes(b'\x89PNG\r\n\x1a\n')
    for task, node, file in (('dynamics', 'mpc_node', 'mpc.yaml'), ('slam', 'slam_node', 'slam.yaml')):
        (demo / 'learned' / task).mkdir(parents=True)
        (demo / 'learned' / task / file).write_text(f'{node}:\n  ros__parameters: {{}}\n')
        (demo / 'learned' / task / 'metrics.csv').write_text('epoch,train_loss\n0,1.0\n')
    return demo


@pytest.fixture(scope='module')
def demo_template(tmp_path_factory):
    return make_demo_folder(tmp_path_factory.mktemp('template'))


@pytest.fixture
def demo(demo_template, tmp_path):
    return shutil.copytree(demo_template, tmp_path / 'runs' / demo_template.name)


def test_find_runs_in_a_demo_folder_and_deeper(demo):
    assert [p.name for p in find_runs(demo)] == list(DEMO_RUNS)
    # runs/ holding several demo folders: every run, two levels down
    second = shutil.copytree(demo, demo.parent / 'demo_20261129-080000')
    found = find_runs(demo.parent)
    assert [p.relative_to(demo.parent).as_posix() for p in found] == [
        f'{d.name}/{r}' for d in (demo, second) for r in DEMO_RUNS]
    assert find_runs(demo / 'before') == [demo / 'before']


def test_bag_info_lists_every_run_of_a_demo_folder(demo, capsys):
    assert bag_main(['info', str(demo)]) == 0
    out = capsys.readouterr().out
    assert f'{demo}: a folder of 3 runs: after, after_dynamics, before' in out
    for run in DEMO_RUNS:
        assert f'run:       {demo / run}\n' in out
    assert out.count('nav_msgs/msg/Odometry') == 6      # /odom and /ground_truth/odom per run
    assert 'metadata.yaml: missing' not in out


def test_opening_a_folder_of_runs_as_one_run_names_its_runs(demo):
    from diffopt_ros.bag import Run

    with pytest.raises(BagError, match=r'a folder of 3 runs \(after, after_dynamics, before\)'):
        Run(demo)


def test_bag_info_names_the_broken_run_and_still_lists_the_others(demo, capsys):
    (demo / 'after' / 'metadata.yaml').unlink()
    assert bag_main(['info', str(demo)]) == 1
    captured = capsys.readouterr()
    assert f'{demo / "after" / "metadata.yaml"}: missing' in captured.err
    assert f'run:       {demo / "before"}' in captured.out
    assert f'run:       {demo / "after_dynamics"}' in captured.out


def test_bag_repair_of_a_demo_folder_repairs_each_run_and_writes_nothing_above(demo, capsys):
    (demo / 'after' / 'metadata.yaml').unlink()
    # killed before its first file closed: the file is still in the writer's folder
    (demo / 'after_dynamics' / 'metadata.yaml').unlink()
    (demo / 'after_dynamics' / 'after_dynamics_0').mkdir()
    (demo / 'after_dynamics' / 'after_dynamics_0.mcap').rename(
        demo / 'after_dynamics' / 'after_dynamics_0' / 'after_dynamics_0.mcap')
    assert [p.name for p in find_runs(demo)] == list(DEMO_RUNS)
    assert bag_main(['repair', str(demo)]) == 0
    out = capsys.readouterr().out
    assert out.count('metadata.yaml rewritten: 1 files') == 3
    assert re.search(r'after_dynamics_0\.mcap +moved +242 messages', out), out
    assert not (demo / 'metadata.yaml').exists()
    assert (demo / 'after' / 'metadata.yaml').is_file()
    assert [r.name for r in load_runs([demo])] == list(DEMO_RUNS)
    with pytest.raises(BagError, match='a folder of 3 runs, not one run'):
        repair_run(demo)
    assert not (demo / 'metadata.yaml').exists()


@pytest.mark.parametrize('content', [(), ('notes.txt',), ('metadata.yaml',)])
def test_bag_repair_refuses_a_folder_without_bag_files(tmp_path, capsys, content):
    folder = tmp_path / 'nothing'
    folder.mkdir()
    for name in content:
        (folder / name).write_text('rosbag2_bagfile_information: {relative_file_paths: []}\n'
                                   if name == 'metadata.yaml' else 'a note\n')
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert bag_main(['repair', str(folder)]) == 2      # no run: an input error
    err = capsys.readouterr().err
    assert str(folder) in err and ('no bag files' in err or 'no rosbag2 runs' in err), err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before   # nothing written
    with pytest.raises(BagError, match='no bag files'):
        repair_run(folder)


def test_repair_writes_no_metadata_when_no_file_is_readable(tmp_path, capsys):
    run = tmp_path / 'r'
    (run / 'r_0').mkdir(parents=True)
    (run / 'r_0' / 'r_0.mcap').write_bytes(b'\x89MCAP0\r\n')   # killed right after opening
    report = repair_run(run)
    assert report.metadata is None and [f.status for f in report.files] == ['empty']
    assert not (run / 'metadata.yaml').exists()
    (run / 'r_0.mcap.truncated').rename(tmp_path / 'kept.mcap.truncated')
    (run / 's_0').mkdir()
    (run / 's_0' / 's_0.mcap').write_bytes(b'\x89MCAP0\r\n')
    assert bag_main(['repair', str(run)]) == 1
    assert 'metadata.yaml not written' in capsys.readouterr().err
    assert not (run / 'metadata.yaml').exists()


def test_a_stray_empty_metadata_above_runs_does_not_hide_them(demo):
    """What ``bag repair runs/demo_X`` wrote before it refused folders without bag files."""
    (demo / 'metadata.yaml').write_text(
        'rosbag2_bagfile_information: {relative_file_paths: [], topics_with_message_count: []}\n')
    assert [r.name for r in load_runs([demo])] == list(DEMO_RUNS)
