"""sim_node in-process (lock-step via ``paused`` + ``advance``, and free-running) and as a
separate process started from the installed console script with a params file."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import LaserScan
from std_srvs.srv import Trigger

from diffopt_ros.nodes import ros_convert
from diffopt_ros.nodes.params import ParameterError
from diffopt_ros.nodes.sim_node import SimNode
from diffopt_ros.paths import config_path
from diffopt_ros.sim import World

from ros_wait import spin_for, spin_until

START = np.array([1.5, 1.5, 0.0])   # start pose of the loop world


class Probe:
    """A node that records /odom, /ground_truth/odom, /scan, /clock and publishes /cmd_vel."""

    def __init__(self, context, use_sim_time=False):
        self.node = rclpy.create_node('probe', context=context, parameter_overrides=[
            Parameter('use_sim_time', value=use_sim_time)])
        self.got = {'odom': [], 'truth': [], 'scan': [], 'clock': []}
        sub = self.node.create_subscription
        sub(Odometry, '/odom', self.got['odom'].append, 1000)
        sub(Odometry, '/ground_truth/odom', self.got['truth'].append, 1000)
        # sensor-data QoS (best effort) with a history deep enough for a lock-step burst
        scan_qos = QoSProfile(depth=100, reliability=qos_profile_sensor_data.reliability)
        sub(LaserScan, '/scan', self.got['scan'].append, scan_qos)
        sub(Clock, '/clock', self.got['clock'].append, 1000)
        self.cmd = self.node.create_publisher(Twist, '/cmd_vel', 10)


def make_sim(context, **values):
    values.setdefault('paused', True)
    return SimNode(context=context, parameter_overrides=[Parameter(k, value=v)
                                                          for k, v in values.items()])


def lag_distance(t, gain=0.8, command=0.5, tau=0.25):
    return gain * command * (t - tau * (1 - math.exp(-t / tau)))


def test_node_in_process_lock_step(context):
    sim = make_sim(context, world='loop', cmd_timeout=1.5)
    probe = Probe(context, use_sim_time=True)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(sim)
    executor.add_node(probe.node)
    try:
        assert spin_until(executor, lambda: sim.count_subscribers('/odom') > 0
                          and sim.count_publishers('/cmd_vel') > 0)
        assert sim.sim_time == 0.0                     # paused: nothing stepped by itself
        probe.cmd.publish(ros_convert.twist(0.5, 0.0))
        assert spin_until(executor, lambda: sim._command_ns is not None)
        sim.advance(100)                               # 1 s at 100 Hz
        assert spin_until(executor, lambda: len(probe.got['odom']) >= 50
                          and len(probe.got['scan']) >= 10 and len(probe.got['clock']) >= 100)

        truth, odom, scan = probe.got['truth'][-1], probe.got['odom'][-1], probe.got['scan'][-1]
        assert (odom.header.frame_id, odom.child_frame_id) == ('odom', 'base_link')
        assert (truth.header.frame_id, truth.child_frame_id) == ('map', 'base_link')
        assert scan.header.frame_id == 'base_scan'
        # stamps: odometry at 50 Hz, scans at 10 Hz, clock every step, all in sim time
        stamps = [ros_convert.stamp_to_sec(m.header.stamp) for m in probe.got['odom']]
        np.testing.assert_allclose(np.diff(stamps), 0.02, atol=1e-9)
        assert stamps[-1] == pytest.approx(0.98)
        scan_stamps = [ros_convert.stamp_to_sec(m.header.stamp) for m in probe.got['scan']]
        np.testing.assert_allclose(scan_stamps, np.arange(10) * 0.1, atol=1e-9)
        assert ros_convert.stamp_to_sec(probe.got['clock'][-1].clock) == pytest.approx(0.99)
        # a sim-time node's clock follows /clock
        assert probe.node.get_clock().now().nanoseconds == pytest.approx(0.99e9, abs=1)

        # values: the true robot (gain 0.8, tau 0.25) from the analytic lag response
        t = stamps[-1]
        state = ros_convert.odometry_to_state(truth)
        np.testing.assert_allclose(state, [START[0] + lag_distance(t), START[1], 0.0,
                                           0.4 * (1 - math.exp(-t / 0.25)), 0.0], atol=1e-6)
        odom_state = ros_convert.odometry_to_state(odom)
        assert odom_state[0] == pytest.approx(state[0] - START[0], abs=0.05)   # small drift
        assert odom_state[3] == pytest.approx(state[3], abs=1e-9)              # encoder speed
        cov = np.array(odom.pose.covariance).reshape(6, 6)
        assert cov[0, 0] > 0 and cov[5, 5] > 0 and np.allclose(cov, cov.T)
        # the scan: 360 beams over a full turn, ranges from the true pose at the scan's stamp
        ranges, angles = ros_convert.scan_to_ranges(scan)
        assert len(ranges) == 360 and scan.angle_min == pytest.approx(-math.pi)
        assert scan.angle_increment == pytest.approx(2 * math.pi / 360)
        x_scan = START[0] + lag_distance(0.9)
        expected = World.load('loop').raycast([x_scan, START[1]], angles, 12.0)
        finite = np.isfinite(expected)
        assert finite.sum() > 300
        np.testing.assert_allclose(ranges[finite], expected[finite], atol=0.06)   # 6 sigma

        # cmd_timeout (1.5 s sim): with /cmd_vel silent the robot stops
        sim.advance(200)
        assert sim.sim.true_state[3] < 0.01
        x_stopped = sim.sim.true_state[0]
        sim.advance(50)
        assert sim.sim.true_state[0] == pytest.approx(x_stopped, abs=1e-3)

        # ~/reset: back to the start, odometry zeroed, time keeps running
        client = probe.node.create_client(Trigger, '/sim_node/reset')
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(Trigger.Request())
        assert spin_until(executor, future.done)
        assert future.result().success and 'odometry zeroed' in future.result().message
        np.testing.assert_allclose(sim.sim.true_state, [*START, 0, 0], atol=1e-12)
        np.testing.assert_allclose(sim.sim.odometry, 0.0, atol=1e-12)
        assert sim.sim_time == pytest.approx(3.5)
    finally:
        executor.shutdown()
        sim.destroy_node()
        probe.node.destroy_node()


def test_parameters_are_validated_and_applied(context):
    sim = make_sim(context)
    try:
        result = sim.set_parameters([Parameter('robot.tau_v', value=-1.0)])[0]
        assert not result.successful and 'robot.tau_v' in result.reason
        result = sim.set_parameters([Parameter('lidar.range_min', value=50.0)])[0]
        assert not result.successful and 'lidar_range_min' in result.reason
        assert sim.sim.sensors.lidar_range_min == pytest.approx(0.12)
        result = sim.set_parameters([Parameter('world', value='corridors')])[0]
        assert not result.successful                      # read-only
        assert sim.set_parameters([Parameter('robot.gain_v', value=1.1)])[0].successful
        assert sim.sim.robot.gain_v == 1.1
        assert sim.set_parameters([Parameter('lidar.beams', value=90)])[0].successful
        assert sim.sim.scan().shape == (90,)
    finally:
        sim.destroy_node()
    with pytest.raises(ParameterError, match='no_such_world'):
        make_sim(context, world='no_such_world')
    with pytest.raises(ParameterError, match='radius'):
        make_sim(context, use_world_start=False, start_pose=[0.0, 0.0, 0.0])   # in a wall
    with pytest.raises(ParameterError, match='step_rate'):
        make_sim(context, step_rate=0.0)


def test_ackermann_car_steers_from_the_twist(context):
    """robot.kind ackermann: the node's robot is the car of its robot.* parameters; a Twist
    asking for more turn than the steering limit allows turns at v tan(max_steer) / wheelbase
    (the diff-drive robot would turn at gain_omega * omega_cmd, 1.05 rad/s)."""
    sim = make_sim(context, **{'robot.kind': 'ackermann', 'robot.wheelbase': 0.3,
                               'robot.max_steer': 0.4, 'cmd_timeout': 10.0})
    probe = Probe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(sim)
    executor.add_node(probe.node)
    try:
        assert sim.sim.robot.kind == 'ackermann' and sim.sim.robot.max_steer == 0.4
        assert not sim.set_parameters([Parameter('robot.kind', value='diff_drive')])[0].successful
        assert spin_until(executor, lambda: sim.count_publishers('/cmd_vel') > 0)
        probe.cmd.publish(ros_convert.twist(0.4, 1.5))
        assert spin_until(executor, lambda: sim._command_ns is not None)
        sim.advance(200)                               # 2 s: steering and speed settled
        x, y, yaw, v, omega = sim.sim.true_state
        assert v == pytest.approx(0.8 * 0.4, rel=1e-3)          # gain_v 0.8
        assert omega == pytest.approx(v * math.tan(0.4) / 0.3, rel=1e-4)
        assert yaw > 0.5
    finally:
        executor.shutdown()
        sim.destroy_node()
        probe.node.destroy_node()
    with pytest.raises(ParameterError, match='robot.kind'):
        make_sim(context, **{'robot.kind': 'tricycle'})


def test_node_runs_faster_than_real_time(context):
    sim = make_sim(context, paused=False, real_time_factor=0.0)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(sim)
    try:
        spin_for(executor, 1.0)
        assert sim.sim_time > 3.0                      # as fast as possible: >> 1 s per s
        assert sim.set_parameters([Parameter('real_time_factor', value=2.0)])[0].successful
        before = sim.sim_time
        spin_for(executor, 1.0)
        assert 1.0 < sim.sim_time - before < 2.2       # 2x real time (loose: shared CPUs)
        assert sim.set_parameters([Parameter('paused', value=True)])[0].successful
        executor.spin_once(timeout_sec=0.01)
        before = sim.sim_time
        spin_for(executor, 0.3)
        assert sim.sim_time == before                  # paused: time stands still
    finally:
        executor.shutdown()
        sim.destroy_node()


def test_wait_for_cmd_locks_steps_to_the_controller(context):
    sim = make_sim(context, paused=False, real_time_factor=0.0, wait_for_cmd=0.2)
    probe = Probe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(sim)
    executor.add_node(probe.node)

    try:
        assert spin_until(executor, lambda: sim.count_publishers('/cmd_vel') > 0)
        spin_for(executor, 0.3)
        assert sim.sim_time > 1.0                      # no command yet: runs freely
        for _ in range(3):
            probe.cmd.publish(ros_convert.twist(0.2, 0.0))
            received = sim._command_ns
            assert spin_until(executor, lambda old=received: sim._command_ns != old)
            spin_for(executor, 0.3)
            # held at most 0.2 s (sim) past the latest command
            assert sim.sim_time == pytest.approx(sim._command_ns * 1e-9 + 0.2, abs=0.011)
    finally:
        executor.shutdown()
        sim.destroy_node()
        probe.node.destroy_node()


def _sim_node_executable() -> str:
    exe = Path(sys.executable).parent / 'sim_node'
    if not exe.exists():
        pytest.skip(f'{exe} not installed (pip install -e .)')
    return str(exe)


@pytest.mark.slow
def test_node_as_a_separate_process(context, tmp_path, stop_process):
    params = tmp_path / 'sim_test.yaml'
    params.write_text(config_path('sim.yaml').read_text().replace(
        'real_time_factor: 1.0', 'real_time_factor: 4.0'))
    proc = subprocess.Popen([_sim_node_executable(), '--ros-args', '--params-file', str(params)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ))
    probe = Probe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe.node)
    try:
        assert spin_until(executor, lambda: probe.node.count_publishers('/odom') > 0
                          and probe.node.count_subscribers('/cmd_vel') > 0, timeout=20.0), \
            'sim_node did not show up'
        # drive forward for a while (sim time 4x)
        spin_for(executor, 3.0, step=0.05, every=lambda: probe.cmd.publish(ros_convert.twist(0.5, 0.0)),
                 period=0.0)
        assert spin_until(executor, lambda: probe.got['scan'] and probe.got['truth'])
        truth = ros_convert.odometry_to_state(probe.got['truth'][-1])
        assert truth[0] > START[0] + 1.0 and abs(truth[1] - START[1]) < 0.05
        assert probe.got['odom'][-1].header.frame_id == 'odom'
        assert probe.got['scan'][-1].header.frame_id == 'base_scan'
        stamp = ros_convert.stamp_to_sec(probe.got['truth'][-1].header.stamp)
        assert stamp > 4.0                               # faster than real time
    finally:
        executor.shutdown()
        probe.node.destroy_node()
        out = stop_process(proc, timeout=15)
    assert proc.returncode == 0, out
    assert 'world loop' in out


def test_bad_parameter_stops_the_process_with_a_reason():
    proc = subprocess.run([_sim_node_executable(), '--ros-args', '-p', 'robot.tau_v:=-1.0'],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 2
    assert 'robot.tau_v' in proc.stderr + proc.stdout
