"""Bag core: write/read round trip of every message type, independent readers (mcap, evo),
conversions to arrays, errors that name file and topic, never overwriting a run."""
import math
import shutil
import warnings

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped, Twist, TwistStamped
from nav_msgs.msg import OccupancyGrid, Odometry, Path
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import LaserScan

from diffopt_ros.bag import (
    BagError,
    BagWriter,
    CorruptBagError,
    EmptyBagError,
    MissingTopicError,
    Run,
    RunExistsError,
)
from diffopt_ros.bag.writer import default_run_name
from diffopt_ros.nodes import ros_convert

N = 12  # messages per topic
T0 = 1_700_000_000_000_000_000  # bag time of the first message (ns)
STEP = 50_000_000  # 20 Hz


def _stamp(i):
    return Time(sec=100 + i // 10, nanosec=(i % 10) * 100_000_000)


def _odom(i):
    yaw = -3.0 + 0.55 * i  # crosses +-pi
    msg = ros_convert.state_to_odometry([0.1 * i, -0.2 * i, yaw, 0.3 + 0.01 * i, -0.05 * i],
                                        _stamp(i), 'map', 'base_link',
                                        pose_covariance=np.eye(6) * (i + 1))
    msg.pose.pose.position.z = 0.5
    return msg


def _pose_cov(i):
    msg = PoseWithCovarianceStamped()
    msg.header.stamp, msg.header.frame_id = _stamp(i), 'map'
    msg.pose.pose = ros_convert.xy_yaw_to_pose([0.1 * i + 0.3, -0.2 * i, 0.1 * i], _stamp(i), 'map').pose
    msg.pose.covariance = [float(k) for k in range(36)]
    return msg


def _scan(i):
    msg = LaserScan()
    msg.header.stamp, msg.header.frame_id = _stamp(i), 'base_scan'
    msg.angle_min, msg.angle_increment = -math.pi, 2 * math.pi / 360
    msg.angle_max = msg.angle_min + 359 * msg.angle_increment
    msg.range_min, msg.range_max = 0.1, 12.0
    ranges = np.linspace(0.5, 5.0, 360, dtype=np.float32) + i
    ranges[::7] = np.inf
    msg.ranges = ranges.tolist()
    msg.intensities = [float(k % 3) for k in range(360)]
    return msg


def _grid(i):
    msg = OccupancyGrid()
    msg.header.stamp, msg.header.frame_id = _stamp(i), 'map'
    msg.info.resolution, msg.info.width, msg.info.height = 0.05, 4, 3
    msg.info.origin.position.x = -1.0
    msg.data = [-1, 0, 100, 50, 1, 2, 3, 4, 5, 6, 7, i]
    return msg


def _diag(i):
    status = DiagnosticStatus(level=DiagnosticStatus.WARN, name='mpc', hardware_id='x',
                              message=f'step {i}',
                              values=[KeyValue(key='solve_ms', value=f'{i * 0.5}')])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = _stamp(i)
    return msg


MESSAGES = {  # topic -> (ROS type, factory)
    '/odom': ('nav_msgs/msg/Odometry', _odom),
    '/cmd_vel': ('geometry_msgs/msg/Twist', lambda i: ros_convert.twist(0.1 * i, -0.3 + 0.05 * i)),
    '/cmd_vel_stamped': ('geometry_msgs/msg/TwistStamped',
                         lambda i: TwistStamped(header=_odom(i).header, twist=ros_convert.twist(i, -i))),
    '/goal_pose': ('geometry_msgs/msg/PoseStamped',
                   lambda i: ros_convert.xy_yaw_to_pose([i, 2.0, 0.3], _stamp(i), 'map')),
    '/slam/pose': ('geometry_msgs/msg/PoseWithCovarianceStamped', _pose_cov),
    '/plan': ('nav_msgs/msg/Path',
              lambda i: ros_convert.poses_to_path(np.arange(3 * (i % 4)).reshape(-1, 3) * 0.1,
                                                  _stamp(i), 'map')),
    '/scan': ('sensor_msgs/msg/LaserScan', _scan),
    '/map': ('nav_msgs/msg/OccupancyGrid', _grid),
    '/diagnostics': ('diagnostic_msgs/msg/DiagnosticArray', _diag),
    '/clock': ('rosgraph_msgs/msg/Clock', lambda i: Clock(clock=_stamp(i))),
}
CLASSES = {'/odom': Odometry, '/cmd_vel': Twist, '/cmd_vel_stamped': TwistStamped,
           '/goal_pose': PoseStamped, '/slam/pose': PoseWithCovarianceStamped, '/plan': Path,
           '/scan': LaserScan, '/map': OccupancyGrid, '/diagnostics': DiagnosticArray,
           '/clock': Clock}


def _expected(topic, i):
    """The message as the wire carries it (float32 fields rounded)."""
    cls = CLASSES[topic]
    return deserialize_message(serialize_message(MESSAGES[topic][1](i)), cls)


class FakeClock:
    """Wall clock for the writer's split/flush decisions, advanced by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _record(run_dir, split_seconds=1.0):
    clock = FakeClock()
    writer = BagWriter(run_dir, split_seconds=split_seconds, flush_seconds=0.3, clock=clock)
    for topic, (msgtype, _) in MESSAGES.items():
        writer.add_topic(topic, msgtype)
    for i in range(N):
        for topic, (_, make) in MESSAGES.items():
            writer.write(topic, serialize_message(make(i)), T0 + i * STEP + len(topic))
        clock.now += 0.25
    return writer, writer.close()


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp('runs') / 'demo'
    _, files = _record(path)
    assert len(files) == 3  # 12 x 0.25 s split every 1 s
    return path


def assert_same(ros, bag, where='msg'):
    """An rclpy message equals a rosbags-deserialized one, field by field."""
    if hasattr(ros, 'get_fields_and_field_types'):
        for name in ros.get_fields_and_field_types():
            assert_same(getattr(ros, name), getattr(bag, name), f'{where}.{name}')
    elif isinstance(ros, (list, tuple)) and ros and hasattr(ros[0], 'get_fields_and_field_types'):
        assert len(ros) == len(bag), where
        for k, (a, b) in enumerate(zip(ros, bag)):
            assert_same(a, b, f'{where}[{k}]')
    elif isinstance(ros, bytes):
        assert list(ros) == [bag] if isinstance(bag, int) else list(bag), where
    elif isinstance(ros, str):
        assert ros == bag, where
    else:
        np.testing.assert_array_equal(np.asarray(ros), np.asarray(bag), err_msg=where)


def test_round_trip_of_every_message_type_typed_and_with_rclpy(run_dir):
    with Run(run_dir) as run:
        assert {t: s.msgtype for t, s in run.topics.items()} == {
            t: m for t, (m, _) in MESSAGES.items()}
        assert all(s.count == N for s in run.topics.values())
        for topic in MESSAGES:
            got = list(run.messages(topic))
            assert [t for t, _ in got] == [T0 + i * STEP + len(topic) for i in range(N)]
            for i, (_, msg) in enumerate(got):
                assert_same(_expected(topic, i), msg, f'{topic}[{i}]')
    with Reader(run_dir) as reader:  # rosbags' plain reader + rclpy deserialization
        seen = {}
        for conn, _, raw in reader.messages():
            i = seen.get(conn.topic, 0)
            assert deserialize_message(raw, CLASSES[conn.topic]) == _expected(conn.topic, i)
            seen[conn.topic] = i + 1
        assert seen == {t: N for t in MESSAGES}


def test_mcap_ros2_decoder_reads_every_file(run_dir):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    decoded = {}
    for path in sorted(run_dir.glob('*.mcap')):
        with path.open('rb') as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            assert reader.get_header().profile == 'ros2'
            for _, channel, message, msg in reader.iter_decoded_messages():
                decoded.setdefault(channel.topic, []).append((message.log_time, msg))
    assert {t: len(v) for t, v in decoded.items()} == {t: N for t in MESSAGES}
    odoms = [m for _, m in sorted(decoded['/odom'], key=lambda x: x[0])]
    assert [o.pose.pose.position.x for o in odoms] == [0.1 * i for i in range(N)]
    scan = sorted(decoded['/scan'], key=lambda x: x[0])[3][1]
    np.testing.assert_array_equal(np.asarray(scan.ranges, np.float32),
                                  np.asarray(_scan(3).ranges, np.float32))


def test_evo_reads_trajectories_and_computes_ape(run_dir):
    from evo.core import metrics, sync
    from evo.tools import file_interface

    with Reader(run_dir) as reader:
        ref = file_interface.read_bag_trajectory(reader, '/odom')
        est = file_interface.read_bag_trajectory(reader, '/slam/pose')
    assert ref.num_poses == est.num_poses == N
    ref, est = sync.associate_trajectories(ref, est, max_diff=0.01)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    # /slam/pose is /odom shifted by 0.3 m in x and 0.5 m in z (odom has z = 0.5)
    assert ape.get_statistic(metrics.StatisticsType.rmse) == pytest.approx(math.hypot(0.3, 0.5))


def test_conversions_to_arrays(run_dir):
    with Run(run_dir) as run:
        t, x = run.odometry('/odom')
        assert x.shape == (N, 5) and t.shape == (N,)
        np.testing.assert_allclose(t - t[0], np.arange(N) * STEP * 1e-9, atol=1e-6)
        expected = np.array([ros_convert.odometry_to_state(_odom(i)) for i in range(N)])
        np.testing.assert_allclose(x, expected, atol=1e-12)
        th, _ = run.odometry('/odom', stamp='header')
        np.testing.assert_allclose(th, [100 + i // 10 + (i % 10) * 0.1 for i in range(N)])
        _, u = run.twist('/cmd_vel')
        np.testing.assert_allclose(u, [[0.1 * i, -0.3 + 0.05 * i] for i in range(N)])
        _, us = run.twist('/cmd_vel_stamped')
        np.testing.assert_allclose(us, [[i, -i] for i in range(N)])
        _, p = run.poses('/slam/pose')
        np.testing.assert_allclose(p, [[0.1 * i + 0.3, -0.2 * i, 0.1 * i] for i in range(N)],
                                   atol=1e-12)
        _, g = run.poses('/goal_pose')
        np.testing.assert_allclose(g[:, :2], [[i, 2.0] for i in range(N)])
        _, paths = run.paths('/plan')
        assert [len(q) for q in paths] == [i % 4 for i in range(N)]
        scans = run.scans('/scan')
        assert scans.ranges.shape == (N, 360) and scans.angles.shape == (360,)
        assert np.isinf(scans.ranges[:, ::7]).all()
        assert scans.angles[0] == pytest.approx(-math.pi) and scans.range_max == pytest.approx(12.0)
        assert run.duration == pytest.approx((N - 1) * STEP * 1e-9, abs=1e-7)


def test_errors_name_run_and_topic(run_dir):
    with Run(run_dir) as run:
        with pytest.raises(MissingTopicError, match=r'demo: no topic /nope; the run has: /clock'):
            run.odometry('/nope')
        with pytest.raises(MissingTopicError, match=r'/cmd_vel is geometry_msgs/msg/Twist'):
            run.odometry('/cmd_vel')
        with pytest.raises(MissingTopicError, match='no header stamps'):
            run.twist('/cmd_vel', stamp='header')


def test_missing_metadata_and_truncated_file_are_named(run_dir, tmp_path):
    broken = tmp_path / 'broken'
    shutil.copytree(run_dir, broken)
    (broken / 'metadata.yaml').unlink()
    with pytest.raises(CorruptBagError, match=r'metadata.yaml: missing .*bag repair'):
        Run(broken)
    shutil.copy(run_dir / 'metadata.yaml', broken)
    second = broken / 'demo_1.mcap'
    second.write_bytes(second.read_bytes()[:-500])
    with pytest.raises(CorruptBagError, match=r'demo_1\.mcap: cannot be read'):
        Run(broken)
    with pytest.raises(BagError, match='no such run'):
        Run(tmp_path / 'nothing')


def test_undecodable_message_names_file_and_topic(tmp_path):
    writer = BagWriter(tmp_path / 'bad')
    writer.add_topic('/odom', 'nav_msgs/msg/Odometry')
    writer.write('/odom', serialize_message(_odom(0)), T0)
    writer.write('/odom', b'\x00\x01\x00\x00garbage', T0 + 1)
    writer.close()
    with Run(tmp_path / 'bad') as run, pytest.raises(
            CorruptBagError, match=r'bad_0\.mcap: topic /odom \(nav_msgs/msg/Odometry\): message '
                                   f'at bag time {T0 + 1} ns'):
        run.odometry('/odom')


def test_empty_run_and_empty_topic(tmp_path):
    writer = BagWriter(tmp_path / 'empty')
    writer.add_topic('/odom', 'nav_msgs/msg/Odometry')
    writer.close()
    with pytest.raises(EmptyBagError, match='empty: the run holds no messages'):
        Run(tmp_path / 'empty')
    writer = BagWriter(tmp_path / 'quiet')
    writer.add_topic('/odom', 'nav_msgs/msg/Odometry')
    writer.add_topic('/cmd_vel', 'geometry_msgs/msg/Twist')
    writer.write('/odom', serialize_message(_odom(0)), T0)
    writer.close()
    with Run(tmp_path / 'quiet') as run, pytest.raises(
            EmptyBagError, match='quiet: topic /cmd_vel has no messages'):
        run.twist('/cmd_vel')


def test_non_finite_rows_are_dropped_with_a_warning(tmp_path):
    writer = BagWriter(tmp_path / 'nan')
    writer.add_topic('/odom', 'nav_msgs/msg/Odometry')
    for i in range(3):
        msg = _odom(i)
        msg.twist.twist.linear.x = math.nan if i == 1 else 0.0
        writer.write('/odom', serialize_message(msg), T0 + i)
    writer.close()
    with Run(tmp_path / 'nan') as run, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        t, _ = run.odometry('/odom')
    assert len(t) == 2 and 'topic /odom: dropped 1 of 3' in str(caught[0].message)


def test_sqlite3_runs_are_read_too(tmp_path):
    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(tmp_path / 'sq', version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection('/odom', 'nav_msgs/msg/Odometry', typestore=store)
        for i in range(5):
            writer.write(conn, T0 + i * STEP, serialize_message(_odom(i)))
    with Run(tmp_path / 'sq') as run:
        _, x = run.odometry('/odom')
    np.testing.assert_allclose(x[:, :2], [[0.1 * i, -0.2 * i] for i in range(5)])


def test_runs_are_never_overwritten(tmp_path):
    BagWriter(tmp_path / 'r').close()
    with pytest.raises(RunExistsError, match='never overwritten'):
        BagWriter(tmp_path / 'r')
    with pytest.raises(RunExistsError):
        BagWriter.create(tmp_path, 'r', unique=False)
    assert BagWriter.create(tmp_path, 'r').run_dir.name == 'r_1'
    assert BagWriter.create(tmp_path, 'r').run_dir.name == 'r_2'
    assert default_run_name(0.0).startswith('run_19')


def test_unknown_topic_and_type_are_refused(tmp_path):
    writer = BagWriter(tmp_path / 'x')
    with pytest.raises(BagError, match='topic /a: message type my_msgs/msg/Nope is unknown'):
        writer.add_topic('/a', 'my_msgs/msg/Nope')
    with pytest.raises(MissingTopicError, match='topic /b was not added'):
        writer.write('/b', b'', 1)
    writer.add_topic('/a', 'geometry_msgs/msg/Twist')
    with pytest.raises(BagError, match='registered as geometry_msgs/msg/Twist'):
        writer.add_topic('/a', 'nav_msgs/msg/Odometry')


def test_custom_message_types_are_recorded_from_installed_msg_files(tmp_path, monkeypatch):
    prefix = tmp_path / 'install'
    (prefix / 'share' / 'my_msgs' / 'msg').mkdir(parents=True)
    (prefix / 'share' / 'my_msgs' / 'msg' / 'Plan.msg').write_text(
        '# a custom message using standard ones\nstd_msgs/Header header\n'
        'geometry_msgs/Point[] points\nfloat64 cost\nstring<=8 label\n')
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(prefix))
    writer = BagWriter(tmp_path / 'custom')
    topic = writer.add_topic('/plan_costs', 'my_msgs/msg/Plan')
    assert 'MSG: geometry_msgs/Point' in topic.msgdef and topic.rihs01.startswith('RIHS01_')
    store = writer.typestore
    Plan, Point = store.types['my_msgs/msg/Plan'], store.types['geometry_msgs/msg/Point']
    Header, Stamp = store.types['std_msgs/msg/Header'], store.types['builtin_interfaces/msg/Time']
    msg = Plan(header=Header(stamp=Stamp(sec=3, nanosec=4), frame_id='map'),
               points=[Point(x=1.0, y=2.0, z=0.0), Point(x=3.0, y=4.0, z=0.0)], cost=7.5,
               label='lap')
    writer.write('/plan_costs', store.serialize_cdr(msg, 'my_msgs/msg/Plan'), T0)
    writer.close()
    with Run(tmp_path / 'custom') as run:
        (_, got), = run.messages('/plan_costs')
    assert got.cost == 7.5 and got.label == 'lap' and [p.y for p in got.points] == [2.0, 4.0]
    with pytest.raises(BagError, match=r'my_msgs/msg/Nope: no my_msgs/msg/Nope\.msg under'):
        writer = BagWriter(tmp_path / 'nope')
        writer.add_topic('/x', 'my_msgs/msg/Nope')


def test_a_failed_write_stops_the_run_cleanly(tmp_path, monkeypatch):
    """Disk full while a file is open: the write raises a BagError saying recording stopped,
    the open file is given up, the finished file and metadata.yaml stay readable, no temporary
    folder or metadata.yaml.tmp is left, later writes are refused, close() works."""
    import errno

    from diffopt_ros.bag import writer as writer_module
    now = [0.0]
    writer = BagWriter(tmp_path / 'full', split_seconds=1.0, clock=lambda: now[0])
    writer.add_topic('/cmd_vel', 'geometry_msgs/msg/Twist')
    data = serialize_message(Twist())
    for k in range(3):
        writer.write('/cmd_vel', data, k)
    now[0] = 2.0
    writer.write('/cmd_vel', data, 3)          # then the split: file 0 (4 messages) is finished
    assert writer.files == ['full_0.mcap']

    def full(self, topic, data, t_ns):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(writer_module.SegmentWriter, 'write', full)
    with pytest.raises(BagError, match='recording stopped: No space left on device'):
        writer.write('/cmd_vel', data, 4)
    assert writer.stopped == 'No space left on device'
    with pytest.raises(BagError, match='recording stopped'):
        writer.write('/cmd_vel', data, 5)
    with pytest.raises(BagError, match='recording stopped'):
        writer.tick()
    writer.close()
    run = tmp_path / 'full'
    assert sorted(p.name for p in run.iterdir()) == ['full_0.mcap', 'metadata.yaml']
    with Reader(run) as reader:
        assert reader.message_count == 4
        assert len(list(reader.messages())) == 4


def test_a_folder_of_runs_that_is_a_file_is_named(tmp_path):
    (tmp_path / 'file').write_text('')
    with pytest.raises(BagError, match='is a file, not a folder of runs'):
        BagWriter.create(tmp_path / 'file', 'r')
    (tmp_path / 'runs').mkdir()
    (tmp_path / 'runs' / 'r').write_text('')
    with pytest.raises(RunExistsError, match='a file \\(not a run\\) of that name exists'):
        BagWriter.create(tmp_path / 'runs', 'r', unique=False)
