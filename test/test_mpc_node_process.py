"""mpc_node as a separate process: the installed console script with a params file."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped, Twist
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor

from diffopt_ros.nodes import ros_convert

from ros_wait import spin_until

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / 'mpc_node'


def _start(*params_files, extra=()):
    args = [str(EXE), '--ros-args']
    for path in params_files:
        args += ['--params-file', str(path)]
    return subprocess.Popen([*args, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=os.environ.copy())


@pytest.mark.slow
@pytest.mark.skipif(not EXE.exists(), reason='mpc_node console script not installed')
def test_process_with_params_file_commands_and_stops_cleanly(stop_process):
    proc = _start(ROOT / 'config' / 'mpc.yaml')
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node('mpc_process_probe', context=context)
    cmds = []
    node.create_subscription(Twist, 'cmd_vel', cmds.append, 10)
    odom_pub = node.create_publisher(Odometry, 'odom', 10)
    goal_pub = node.create_publisher(PoseStamped, 'goal_pose', 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        # start-up (torch import, warm-up) and discovery
        up = spin_until(executor, lambda: goal_pub.get_subscription_count() > 0
                        and odom_pub.get_subscription_count() > 0
                        and node.count_publishers('cmd_vel') > 0, timeout=20.0, step=0.05, proc=proc)
        assert proc.poll() is None, proc.stdout.read()
        assert up, 'mpc_node did not appear'
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not (cmds and cmds[-1].linear.x > 0.05):
            now = node.get_clock().now().to_msg()
            odom_pub.publish(ros_convert.state_to_odometry(np.zeros(5), now, 'odom'))
            goal_pub.publish(ros_convert.xy_yaw_to_pose([2.0, 0.0, 0.0], now, 'odom'))
            executor.spin_once(timeout_sec=0.02)
        assert cmds and cmds[-1].linear.x > 0.05, 'no forward command towards the goal'
    finally:
        out = stop_process(proc, timeout=15)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert proc.returncode == 0, out


@pytest.mark.skipif(not EXE.exists(), reason='mpc_node console script not installed')
def test_invalid_params_file_stops_with_a_clear_error(tmp_path):
    """More invalid values are checked in-process (test_mpc_node.py); here the exit path."""
    bad = tmp_path / 'bad.yaml'
    bad.write_text('mpc_node:\n  ros__parameters:\n    bounds.v_min: 0.9\n')
    proc = _start(ROOT / 'config' / 'mpc.yaml', bad)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert 'mpc_node' in out and 'bounds.v_min (0.9) must be below bounds.v_max' in out, out
