"""End to end in the simulator: sim_node + mpc_node in one process on sim time reach goals.

The simulated robot's true dynamics (gain 0.8/0.7, lags 0.25/0.2 s) differ from the MPC's nominal
model (gains 1, lags 0.05 s): the closed loop must still get there. Short on purpose; the full
course is ``diffopt-ros demo``.
"""
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.parameter import Parameter

from diffopt_ros.nodes import ros_convert
from diffopt_ros.nodes.executors import ExecutorThread, in_process_executor
from diffopt_ros.nodes.mpc_node import MpcNode
from diffopt_ros.nodes.sim_node import SimNode

START = np.array([1.5, 1.5])                      # loop world start pose (yaw 0): the odom origin
GOALS = [np.array([3.5, 1.5]), np.array([2.2, 2.1])]   # map frame; the second needs a turn


def _reached_after(status, sent):
    """Whether the node, after ``sent`` (s), took up a new goal and then reported it reached.

    A 'goal reached' right after ``sent`` can still be about the previous goal, so it counts only
    after some other status (the node working on the new goal).
    """
    working = False
    for stamp, message in status:
        if stamp <= sent:
            continue
        if message != 'goal reached':
            working = True
        elif working:
            return True
    return False


def test_sim_and_mpc_reach_goals_on_sim_time():
    context = Context()
    rclpy.init(args=['--ros-args', '-p', 'use_sim_time:=true'], context=context)
    params = lambda **kw: [Parameter(k, value=v) for k, v in kw.items()]  # noqa: E731
    sim = SimNode(context=context, parameter_overrides=params(
        world='loop', real_time_factor=3.0, scan_rate=1.0, wait_for_cmd=0.12))  # lock-step
    mpc = MpcNode(context=context, parameter_overrides=params(
        horizon=15, control_rate=10.0, max_iterations=5, goal_tolerance=0.1))
    probe = rclpy.create_node('probe', context=context)
    truth, status = [], []
    probe.create_subscription(Odometry, 'ground_truth/odom',
                              lambda m: truth.append(ros_convert.odometry_to_state(m)), 10)
    probe.create_subscription(
        DiagnosticArray, '/diagnostics',
        lambda m: status.extend((ros_convert.stamp_to_sec(m.header.stamp), s.message)
                                for s in m.status if s.name.startswith('mpc_node')), 10)
    goal_pub = probe.create_publisher(PoseStamped, 'goal_pose', 10)
    executor = in_process_executor(context)   # as the demo: light on a loaded 2-core machine
    for node in (sim, mpc, probe):
        executor.add_node(node)
    spinner = ExecutorThread(executor)
    try:
        for goal in GOALS:
            sent = probe.get_clock().now()
            goal_pub.publish(ros_convert.xy_yaw_to_pose([*(goal - START), 0.0], sent.to_msg(),
                                                        'odom'))
            deadline = time.monotonic() + 40.0
            while time.monotonic() < deadline and not _reached_after(status, sent.nanoseconds * 1e-9):
                time.sleep(0.05)
            error = np.hypot(*(truth[-1][:2] - goal))
            assert error < 0.25, f'goal {goal}: ended {error:.2f} m away ({status[-1]})'
        assert sim.sim.collisions == 0
    finally:
        spinner.stop()
        for node in (probe, mpc, sim):
            node.destroy_node()
        rclpy.try_shutdown(context=context)
