"""recorder_node: as a separate process (SIGINT/SIGTERM close a complete bag, SIGKILL leaves a
repairable one) and in-process (sim-time stamps, late topics, never overwriting a run)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import LaserScan

from diffopt_ros.bag import Run, repair_run
from diffopt_ros.nodes import ros_convert
from diffopt_ros.nodes.params import ParameterError
from diffopt_ros.nodes.recorder_node import RecorderNode

from ros_wait import spin_for, spin_until

RECORDER = Path(sys.executable).parent / 'recorder_node'


@pytest.fixture
def ros():
    """A private rclpy context with an executor."""
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    yield context, executor
    executor.shutdown()
    rclpy.try_shutdown(context=context)


def _spin_until(executor, condition, timeout, what, proc=None):
    """:func:`spin_until`, failing with ``what`` (and the recorder's output once it ended)."""
    if not spin_until(executor, condition, timeout, step=0.05, proc=proc):
        output = proc.communicate(timeout=20)[0] if proc is not None and proc.poll() is not None else ''
        raise AssertionError(f'timed out after {timeout} s waiting for {what}\n{output}')


class Publisher:
    """The robot side of the test: odometry (reliable), scans (best effort), commands."""

    def __init__(self, context, executor, prefix):
        self.node = Node(f'pub_{prefix.strip("/")}', context=context)
        executor.add_node(self.node)
        self.prefix = prefix
        self.odom = self.node.create_publisher(Odometry, f'{prefix}/odom', 10)
        self.scan = self.node.create_publisher(LaserScan, f'{prefix}/scan', qos_profile_sensor_data)
        self.cmd = self.node.create_publisher(Twist, f'{prefix}/cmd', 10)
        self.recorded = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)

    def _on_diag(self, msg):
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if values.get('run_dir', '').endswith(self.prefix.strip('/')):
                self.recorded = {k[len('count'):]: int(v) for k, v in values.items()
                                 if k.startswith('count')}

    def matched(self):
        return all(p.get_subscription_count() > 0 for p in (self.odom, self.scan, self.cmd))

    def publish(self, i):
        self.odom.publish(ros_convert.state_to_odometry(
            [float(i), 0.0, 0.0, 0.0, 0.0], ros_convert.sec_to_stamp(i * 0.01)))
        scan = LaserScan(angle_min=-3.14, angle_increment=0.0175, range_max=10.0)
        scan.ranges = [float(i)] * 360
        self.scan.publish(scan)
        self.cmd.publish(ros_convert.twist(float(i), 0.0))


def _start_recorder(tmp_path, prefix):
    params = tmp_path / 'recorder.yaml'
    params.write_text(yaml.safe_dump({'recorder_node': {'ros__parameters': {
        'topics': [f'{prefix}/odom', f'{prefix}/scan', f'{prefix}/cmd'],
        'output_dir': str(tmp_path / 'runs'), 'run_name': prefix.strip('/'),
        'split_seconds': 1.0, 'flush_seconds': 0.2, 'discovery_period': 0.2,
        'diagnostics_period': 0.2}}}))
    proc = subprocess.Popen([str(RECORDER), '--ros-args', '--params-file', str(params)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, tmp_path / 'runs' / prefix.strip('/')


def _start_recorder_and_publisher(ros, tmp_path, prefix):
    """The recorder process and a ``Publisher`` it has subscribed to (discovery done)."""
    context, executor = ros
    proc, run_dir = _start_recorder(tmp_path, prefix)
    try:
        pub = Publisher(context, executor, prefix)
        _spin_until(executor, pub.matched, 30, 'the recorder to subscribe (discovery)', proc)
    except BaseException:
        proc.kill()
        proc.communicate(timeout=20)
        raise
    return proc, run_dir, pub


@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_close_a_complete_bag(ros, tmp_path, sig, stop_process):
    _, executor = ros
    prefix = f'/rec_{sig.name.lower()}_{os.getpid()}'
    proc, run_dir, pub = _start_recorder_and_publisher(ros, tmp_path, prefix)
    try:
        n = 60
        for i in range(n):
            pub.publish(i)
            executor.spin_once(timeout_sec=0.01)
        _spin_until(executor, lambda: pub.recorded.get(f'{prefix}/odom') == n
                    and pub.recorded.get(f'{prefix}/cmd') == n, 20, 'the recorder to receive',
                    proc)
        pub.recorded = {}
        _spin_until(executor, lambda: pub.recorded, 5, 'a last status', proc)
        received = dict(pub.recorded)
    finally:
        out = stop_process(proc, sig)
    assert proc.returncode == 0, out
    with Run(run_dir) as run:
        counts = {name: topic.count for name, topic in run.topics.items()}
        assert counts.keys() == received.keys(), out
        assert all(counts[t] >= received[t] for t in counts), out  # all received is in the bag
        assert counts[f'{prefix}/scan'] >= 0.9 * n  # best effort: matched, (almost) all arrive
        _, x = run.odometry(f'{prefix}/odom')
        np.testing.assert_array_equal(x[:, 0], np.arange(n))
        _, u = run.twist(f'{prefix}/cmd')
        np.testing.assert_array_equal(u[:, 0], np.arange(n))
    assert len(run.files) >= 1 and not [p for p in run_dir.iterdir() if p.is_dir()]


@pytest.mark.slow
def test_sigkill_leaves_a_bag_that_repair_makes_readable(ros, tmp_path):
    _, executor = ros
    prefix = f'/rec_kill_{os.getpid()}'
    proc, run_dir, pub = _start_recorder_and_publisher(ros, tmp_path, prefix)
    try:
        sent_at = []

        def publish():
            pub.publish(len(sent_at))
            sent_at.append(time.monotonic())
        spin_for(executor, 4.0, step=0.02, every=publish, period=0.0)
    finally:
        proc.kill()
        killed_at = time.monotonic()
        proc.communicate(timeout=20)
    # closed files (split every second) are readable as they are
    with Run(run_dir) as run:
        _, before = run.odometry(f'{prefix}/odom')
    np.testing.assert_array_equal(before[:, 0], np.arange(len(before)))
    report = repair_run(run_dir)
    with Run(run_dir) as run:
        _, x = run.odometry(f'{prefix}/odom')
    np.testing.assert_array_equal(x[:, 0], np.arange(len(x)))  # in order, no holes
    old_enough = int(np.sum(np.array(sent_at) < killed_at - 2.0))  # "all but the last seconds"
    assert len(x) >= old_enough, (len(x), old_enough, len(sent_at), report.files)
    assert len(x) >= len(before) and report.counts[f'{prefix}/odom'] == len(x)


def test_in_process_sim_time_stamps_late_topics_and_no_overwrite(ros, tmp_path):
    context, executor = ros
    prefix = f'/rec_inproc_{os.getpid()}'
    overrides = [Parameter('use_sim_time', value=True),
                 Parameter('topics', value=[f'{prefix}/odom', f'{prefix}/late']),
                 Parameter('output_dir', value=str(tmp_path)),
                 Parameter('run_name', value='sim'),
                 Parameter('discovery_period', value=0.1),
                 Parameter('diagnostics_period', value=60.0)]
    recorder = RecorderNode(context=context, parameter_overrides=overrides)
    executor.add_node(recorder)
    node = Node('sim_pub', context=context)
    executor.add_node(node)
    clock = node.create_publisher(Clock, '/clock', 10)
    odom = node.create_publisher(Odometry, f'{prefix}/odom', 10)
    _spin_until(executor, lambda: odom.get_subscription_count() > 0, 20, 'odom subscription')
    odom.publish(Odometry())  # before the first /clock: held, written at the first sim time
    _spin_until(executor, lambda: len(recorder._held) == 1, 10, 'the pre-clock message')
    clock.publish(Clock(clock=ros_convert.sec_to_stamp(42.5)))
    _spin_until(executor, lambda: recorder.get_clock().now().nanoseconds > 0, 10, 'sim time')
    odom.publish(ros_convert.state_to_odometry([1.0, 2.0, 0.0, 0.0, 0.0],
                                               ros_convert.sec_to_stamp(40.0)))
    late = node.create_publisher(Twist, f'{prefix}/late', 10)  # appears after the start
    _spin_until(executor, lambda: late.get_subscription_count() > 0, 20, 'late subscription')
    late.publish(ros_convert.twist(0.3, 0.1))
    _spin_until(executor, lambda: recorder.counts.get(f'{prefix}/late') == 1
                and recorder.counts.get(f'{prefix}/odom') == 2, 10, 'recording')
    lag, lag_topic = recorder.receipt_lag  # recorded at 42.5 s, stamped 40.0 s
    assert lag == pytest.approx(2.5) and lag_topic == f'{prefix}/odom'
    with pytest.raises(ParameterError, match='exists already'):
        RecorderNode('recorder_twin', context=context, parameter_overrides=overrides[2:4] + [
            Parameter('unique_name', value=False)])
    twin = RecorderNode('recorder_twin', context=context, parameter_overrides=overrides[2:4])
    assert twin.run_dir.name == 'sim_1'
    twin.destroy_node()
    recorder.destroy_node()
    node.destroy_node()
    with Run(tmp_path / 'sim') as run:
        t, x = run.odometry(f'{prefix}/odom')
        t_header, _ = run.odometry(f'{prefix}/odom', stamp='header')
        t_u, u = run.twist(f'{prefix}/late')
    assert t.tolist() == [42.5, 42.5] and t_u.tolist() == [42.5]  # sim clock at receipt
    assert t_header.tolist() == [0.0, 40.0]   # the held message first
    np.testing.assert_array_equal(x[1, :2], [1.0, 2.0])
    np.testing.assert_allclose(u, [[0.3, 0.1]])


def test_invalid_parameters_are_refused(ros, tmp_path):
    context, _ = ros
    with pytest.raises(ParameterError, match='run_name'):
        RecorderNode(context=context, parameter_overrides=[
            Parameter('output_dir', value=str(tmp_path)), Parameter('run_name', value='a/b')])
    with pytest.raises(ParameterError, match='flush_seconds'):
        RecorderNode(context=context, parameter_overrides=[
            Parameter('output_dir', value=str(tmp_path)), Parameter('flush_seconds', value=0.0)])
    assert not any(tmp_path.iterdir())  # a refused node records nothing
