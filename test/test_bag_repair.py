"""Crash safety: what a killed writer leaves on disk is readable, repair salvages the rest."""
import shutil

import numpy as np
import pytest
from rclpy.serialization import serialize_message

from diffopt_ros.bag import BagError, BagWriter, CorruptBagError, Run, repair_run, salvage_mcap
from diffopt_ros.bag.cli import main as bag_main
from diffopt_ros.nodes import ros_convert

T0 = 5_000_000_000


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _odom(i):
    return serialize_message(ros_convert.state_to_odometry(
        [float(i), 0.0, 0.0, 0.0, 0.0], ros_convert.sec_to_stamp(i * 0.1)))


def _cmd(i):
    return serialize_message(ros_convert.twist(0.01 * i, 0.0))


def _crashed_run(tmp_path, n_flushed, n_unflushed, steps_per_file=20):
    """A run as a SIGKILL leaves it: the disk state of a writer that was never closed.

    Writes ``n_flushed`` steps (odom + cmd each), flushes, writes ``n_unflushed`` more, and
    copies the folder while the writer is still open.
    """
    clock = FakeClock()
    writer = BagWriter(tmp_path / 'live', split_seconds=1.0, flush_seconds=1e3, clock=clock)
    writer.add_topic('/odom', 'nav_msgs/msg/Odometry')
    writer.add_topic('/cmd_vel', 'geometry_msgs/msg/Twist')
    for i in range(n_flushed + n_unflushed):
        writer.write('/odom', _odom(i), T0 + i * 10**8)
        writer.write('/cmd_vel', _cmd(i), T0 + i * 10**8 + 1)
        clock.now += 1.0 / steps_per_file
        if i == n_flushed - 1:
            writer.flush()
    crashed = tmp_path / 'crashed'
    shutil.copytree(writer.run_dir, crashed)
    writer.close()
    return crashed


def _odom_x(run_dir):
    with Run(run_dir) as run:
        return run.odometry('/odom')[1][:, 0]


def test_closed_files_are_readable_before_repair_and_repair_salvages_the_open_one(tmp_path):
    crashed = _crashed_run(tmp_path, n_flushed=50, n_unflushed=5)
    # two files (about 20 steps each) were closed: readable at once through metadata.yaml
    before = _odom_x(crashed)
    assert 38 <= len(before) <= 42
    np.testing.assert_array_equal(before, np.arange(len(before)))
    report = repair_run(crashed)
    assert [(f.path, f.status) for f in report.files] == [
        ('live_0.mcap', 'ok'), ('live_1.mcap', 'ok'), ('live_2.mcap', 'salvaged')]
    assert report.counts == {'/odom': 50, '/cmd_vel': 50}  # every flushed step, no more
    np.testing.assert_array_equal(_odom_x(crashed), np.arange(50))
    assert (crashed / 'live_2.mcap.truncated').is_file()
    assert not (crashed / 'live_2').exists()
    again = repair_run(crashed)  # idempotent
    assert again.counts == report.counts and {f.status for f in again.files} == {'ok'}


def test_repair_rebuilds_missing_metadata_and_cli_reports_counts(tmp_path, capsys):
    crashed = _crashed_run(tmp_path, n_flushed=30, n_unflushed=0)
    (crashed / 'metadata.yaml').unlink()
    assert bag_main(['info', str(crashed)]) == 1
    assert 'metadata.yaml: missing' in capsys.readouterr().err
    assert bag_main(['repair', str(crashed)]) == 0
    out = capsys.readouterr().out
    assert 'salvaged' in out and '/odom' in out and '30' in out
    assert bag_main(['info', str(crashed)]) == 0
    out = capsys.readouterr().out
    assert 'nav_msgs/msg/Odometry' in out and 'messages:  60' in out


@pytest.mark.parametrize('cut', [0.3, 0.55, 0.8, 0.999])
def test_salvage_of_a_truncated_file_keeps_a_clean_prefix(tmp_path, cut):
    clock = FakeClock()
    writer = BagWriter(tmp_path / 'r', flush_seconds=0.05, clock=clock)
    writer.add_topic('/odom', 'nav_msgs/msg/Odometry')
    for i in range(40):
        writer.write('/odom', _odom(i), T0 + i)
        clock.now += 0.02  # a chunk every 3 messages
    writer.close()
    path = tmp_path / 'r' / 'r_0.mcap'
    full = salvage_mcap(path)
    assert full.complete and len(full.messages) == 40
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut)])
    part = salvage_mcap(path)
    assert not part.complete
    got = [t - T0 for _, t, _ in part.messages]
    assert got == list(range(len(got)))  # a prefix, in order, nothing invented
    assert len(got) >= int(cut * 40) - 4  # all but the chunk the cut went through
    report = repair_run(tmp_path / 'r')
    assert report.counts.get('/odom', 0) == len(got)


def test_repair_refuses_what_it_cannot_fix(tmp_path):
    with pytest.raises(BagError, match='no such run folder'):
        repair_run(tmp_path / 'none')
    (tmp_path / 'x').mkdir()
    (tmp_path / 'x' / 'x_0.mcap').write_bytes(b'not an mcap file at all')
    with pytest.raises(CorruptBagError, match=r'x_0\.mcap.truncated: not an MCAP file'):
        repair_run(tmp_path / 'x')


def test_a_file_closed_but_not_yet_moved_is_moved_into_the_run(tmp_path):
    writer = BagWriter(tmp_path / 'r')
    writer.add_topic('/odom', 'nav_msgs/msg/Odometry')
    for i in range(5):
        writer.write('/odom', _odom(i), T0 + i)
    writer.close()
    # a SIGKILL between rosbags' close and the move into the run folder leaves this:
    (tmp_path / 'r' / 'r_0').mkdir()
    (tmp_path / 'r' / 'r_0.mcap').rename(tmp_path / 'r' / 'r_0' / 'r_0.mcap')
    (tmp_path / 'r' / 'metadata.yaml').unlink()
    report = repair_run(tmp_path / 'r')
    assert [(f.path, f.status, f.counts) for f in report.files] == [
        ('r_0.mcap', 'moved', {'/odom': 5})]
    np.testing.assert_array_equal(_odom_x(tmp_path / 'r'), np.arange(5))
