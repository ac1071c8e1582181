"""Tick jitter of the installed ``mpc_node``, measured from outside like a robot would see it.

Starts ``mpc_node`` (the console script next to this Python) as a separate process with the
given ``-p`` parameters, publishes a fixed state on ``/odom`` at 50 Hz and one goal, and
records for ``--seconds`` s the receipt times of ``/cmd_vel`` (the tick period as the robot
sees it) and the node's ``/diagnostics`` (solve time, iterations, overruns). Prints p50/p99/max.

    python bench/tick_jitter.py --goal 4 2 -p horizon:=200 -p max_iterations:=200 \\
        -p tolerance:=0.0
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, Twist
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data


def _percentiles(values, scale=1.0) -> str:
    if len(values) == 0:
        return 'n/a'
    v = np.asarray(values, dtype=float) * scale
    return (f'p50 {np.percentile(v, 50):.1f}  p99 {np.percentile(v, 99):.1f}  '
            f'max {v.max():.1f}  (n={len(v)})')


def measure(params: list[str], goal: tuple[float, float], seconds: float, settle: float) -> dict:
    """Run mpc_node with ``params`` (``name:=value``), drive for ``settle + seconds`` s; returns
    the cmd_vel receipt gaps (s), solve times (ms), iterations and overrun count."""
    exe = Path(sys.executable).parent / 'mpc_node'
    args = [str(exe), '--ros-args', '-r', '__node:=mpc_jitter']
    for p in params:
        args += ['-p', p]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ.copy())
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node('tick_jitter_probe', context=context)
    cmds, diags = [], []
    node.create_subscription(Twist, 'cmd_vel', lambda m: cmds.append(time.monotonic()), 1000)
    node.create_subscription(DiagnosticArray, '/diagnostics',
                             lambda m: diags.append((time.monotonic(), m)), 1000)
    odom = node.create_publisher(Odometry, 'odom', qos_profile_sensor_data)
    goal_pub = node.create_publisher(PoseStamped, 'goal_pose', 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    def spin():
        while context.ok():
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception:   # the context was shut down while waiting
                return

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        deadline = time.monotonic() + 90.0
        while goal_pub.get_subscription_count() == 0 or node.count_publishers('cmd_vel') == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError('mpc_node did not start')
            time.sleep(0.05)
        msg = PoseStamped()
        msg.header.frame_id = 'odom'
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.pose.position.x, msg.pose.position.y = goal
        msg.pose.orientation.w = 1.0
        goal_pub.publish(msg)
        state = Odometry()
        state.header.frame_id = 'odom'
        state.pose.pose.orientation.w = 1.0
        start = time.monotonic()
        while time.monotonic() - start < settle + seconds:
            state.header.stamp = node.get_clock().now().to_msg()
            odom.publish(state)
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        rclpy.try_shutdown(context=context)
        spinner.join()
        executor.shutdown()
        node.destroy_node()
    since = start + settle
    times = [t for t in cmds if t >= since]
    solve, iterations, overruns = [], [], []
    for t, m in diags:
        for status in m.status:
            if t >= since and status.name.startswith('mpc_jitter'):
                values = {kv.key: kv.value for kv in status.values}
                solve.append(float(values['solve_time_ms']))
                iterations.append(int(values['iterations']))
                overruns.append(int(values.get('overruns', 0)))
    return {'gaps': np.diff(times), 'solve_ms': solve, 'iterations': iterations,
            'overruns': (overruns[-1] - overruns[0]) if overruns else math.nan,
            'ticks': len(times)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-p', dest='params', action='append', default=[],
                        help='mpc_node parameter NAME:=VALUE (repeatable)')
    parser.add_argument('--goal', nargs=2, type=float, default=(4.0, 2.0), metavar=('X', 'Y'))
    parser.add_argument('--seconds', type=float, default=10.0)
    parser.add_argument('--settle', type=float, default=1.0)
    args = parser.parse_args(argv)
    result = measure(args.params, tuple(args.goal), args.seconds, args.settle)
    print(f'mpc_node {" ".join(args.params) or "(defaults)"}, goal {tuple(args.goal)}, '
          f'{args.seconds:g} s:')
    print(f'  tick period at the robot (ms): {_percentiles(result["gaps"], 1e3)}')
    print(f'  solve time (ms):               {_percentiles(result["solve_ms"])}')
    print(f'  iterations: {_percentiles(result["iterations"])}; '
          f'overrun ticks: {result["overruns"]} of {result["ticks"]}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
