"""Control-loop latency and rate of mpc_node, with and without SLAM in the loop.

    .venv/bin/python bench/control_loop.py [--duration 20] [--layout processes|one-process|both]

The simulator runs in real time (real_time_factor 1, no lock-step) in the loop world, driving a
lap of goals; mpc_node runs with config/mpc.yaml (20 Hz, horizon 20) on either ``/odom`` (the
peer: no SLAM) or ``/slam/odom`` (slam_node running). A probe node notes the wall time at which
each ``/odom`` message arrives and at which each ``/mpc/predicted_path`` arrives; the path's
header stamp is the stamp of the state the MPC solved from (mpc_node publishes it right after
``/cmd_vel`` in the same tick), so their difference is the odom-to-command latency: waiting for
the next control tick + (SLAM relay) + solve + publish. Printed: latency p50/p99, achieved
command rate, solve time p50/p99 (from ``/diagnostics``), and the ratios of the SLAM layout to
the no-SLAM peer measured in the same run, and the tick overhead (tick time minus solve time:
references, conversions, publishing). Layouts: each node its own process (as launched on a
robot) and all nodes in one process (as ``diffopt-ros demo``).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GOAL = (18.5, 1.5)            # along the first corridor of the loop world (map frame)
START = (1.5, 1.5)            # the world's start: the odom origin


def _probe(context):
    """The measuring node: returns (node, samples dict)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped, Twist
    from nav_msgs.msg import Odometry
    from nav_msgs.msg import Path as PathMsg
    from rclpy.qos import qos_profile_sensor_data

    from diffopt_ros.nodes import ros_convert

    node = rclpy.create_node('control_loop_probe', context=context)
    samples = {'odom_arrival': {}, 'latency': [], 'cmd_times': [], 'solve_ms': [],
               'overhead_ms': []}
    lock = threading.Lock()

    def on_odom(msg):
        with lock:
            samples['odom_arrival'][(msg.header.stamp.sec, msg.header.stamp.nanosec)] = \
                time.monotonic()

    def on_path(msg):
        now = time.monotonic()
        with lock:
            sent = samples['odom_arrival'].get((msg.header.stamp.sec, msg.header.stamp.nanosec))
        if sent is not None:
            samples['latency'].append(now - sent)

    def on_diag(msg):
        for status in msg.status:
            if status.name.startswith('mpc_node') and status.message in ('goal', 'tracking'):
                values = {kv.key: kv.value for kv in status.values}
                samples['solve_ms'].append(float(values['solve_time_ms']))
                samples['overhead_ms'].append(float(values['tick_time_ms'])
                                              - float(values['solve_time_ms']))

    # /slam/odom carries the stamp of the /odom message it corrects: latency from /odom.
    node.create_subscription(Odometry, 'odom', on_odom, qos_profile_sensor_data)
    node.create_subscription(PathMsg, 'mpc/predicted_path', on_path, 10)
    node.create_subscription(Twist, 'cmd_vel', lambda m: samples['cmd_times'].append(
        time.monotonic()), 10)
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 50)
    goal_pub = node.create_publisher(PoseStamped, 'goal_pose', 10)

    def send_goal():
        # The goal in the odom frame (= slam_node's map frame): both start at the world start.
        goal = [GOAL[0] - START[0], GOAL[1] - START[1], 0.0]
        goal_pub.publish(ros_convert.xy_yaw_to_pose(goal, node.get_clock().now().to_msg(),
                                                    'odom'))
    return node, samples, send_goal, goal_pub


def _stats(samples: dict, duration: float) -> dict:
    latency = np.asarray(samples['latency']) * 1e3
    solve = np.asarray(samples['solve_ms'])
    cmds = np.asarray(samples['cmd_times'])
    cmds = cmds[cmds >= cmds[-1] - duration] if len(cmds) else cmds

    def pct(values, q):
        return float(np.percentile(values, q)) if len(values) else float('nan')
    return {'latency_p50': pct(latency, 50), 'latency_p99': pct(latency, 99),
            'rate': (len(cmds) - 1) / (cmds[-1] - cmds[0]) if len(cmds) > 1 else float('nan'),
            'solve_p50': pct(solve, 50), 'solve_p99': pct(solve, 99), 'n': len(latency),
            'overhead_p50': pct(np.asarray(samples['overhead_ms']), 50)}


def _measure(context, node, samples, send_goal, goal_pub, spin, duration: float) -> dict:
    """Wait for the MPC, send the goal, collect for ``duration`` s (wall)."""
    deadline = time.monotonic() + 60.0
    while goal_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        spin(0.05)
    time.sleep(2.0)                                   # let SLAM and the MPC warm up
    send_goal()
    start = time.monotonic()
    for key in ('latency', 'solve_ms', 'overhead_ms'):
        samples[key].clear()
    while time.monotonic() - start < duration:
        spin(0.05)
    return _stats(samples, duration)


def stop_processes(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGINT to every node process, then wait for each (killed after ``timeout`` s)."""
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_processes(state_topic: str, duration: float, domain: int) -> dict:
    """Each node its own process (console scripts), the probe in this one."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    config = ROOT / 'config'
    commands = [[str(BIN / 'sim_node'), '--ros-args', '--params-file', str(config / 'sim.yaml'),
                 '-p', 'use_sim_time:=true', '-p', 'real_time_factor:=1.0'],
                [str(BIN / 'mpc_node'), '--ros-args', '--params-file', str(config / 'mpc.yaml'),
                 '-p', 'use_sim_time:=true', '-r', f'odom:={state_topic}']]
    if state_topic == '/slam/odom':
        commands.append([str(BIN / 'slam_node'), '--ros-args', '--params-file',
                         str(config / 'slam.yaml'), '-p', 'use_sim_time:=true'])
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for c in commands]
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node, samples, send_goal, goal_pub = _probe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        return _measure(context, node, samples, send_goal, goal_pub,
                        lambda t: executor.spin_once(timeout_sec=t), duration)
    finally:
        stop_processes(procs)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def run_one_process(state_topic: str, duration: float, domain: int) -> dict:
    """All nodes in this process on the demo's executor (``executors.in_process_executor``)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from diffopt_ros.nodes.executors import ExecutorThread, in_process_executor
    from diffopt_ros.nodes.mpc_node import MpcNode
    from diffopt_ros.nodes.sim_node import SimNode
    from diffopt_ros.nodes.slam_node import SlamNode

    config = ROOT / 'config'
    args = ['--ros-args', '--log-level', 'error', '-p', 'use_sim_time:=true']
    for name in ('sim.yaml', 'slam.yaml', 'mpc.yaml'):
        args += ['--params-file', str(config / name)]
    context = Context()
    rclpy.init(args=args, context=context, domain_id=domain)
    nodes = [SimNode(context=context, parameter_overrides=[Parameter('real_time_factor',
                                                                     value=1.0)]),
             MpcNode(context=context, parameter_overrides=[Parameter('state_topic',
                                                                     value=state_topic)])]
    if state_topic == '/slam/odom':
        nodes.append(SlamNode(context=context))
    node, samples, send_goal, goal_pub = _probe(context)
    nodes.append(node)
    executor = in_process_executor(context)
    for n in nodes:
        executor.add_node(n)
    spinner = ExecutorThread(executor)
    try:
        return _measure(context, node, samples, send_goal, goal_pub, time.sleep, duration)
    finally:
        spinner.stop()
        for n in reversed(nodes):
            n.destroy_node()
        rclpy.try_shutdown(context=context)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--duration', type=float, default=20.0, help='wall seconds per case')
    parser.add_argument('--layout', choices=('processes', 'one-process', 'both'), default='both')
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)
    domain = int(os.environ.get('ROS_DOMAIN_ID') or 100 + os.getpid() % 100)
    layouts = {'processes': run_processes, 'one-process': run_one_process}
    if args.layout != 'both':
        layouts = {args.layout: layouts[args.layout]}
    print(f'mpc_node with config/mpc.yaml, sim in real time, {args.duration:g} s per case, '
          f'{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average '
          f'{os.getloadavg()[0]:.1f}')
    print('| layout | state | odom->cmd latency p50 | p99 | command rate | solve p50 | p99 | '
          'tick overhead p50 |')
    print('|---|---|---|---|---|---|---|---|')
    for name, run in layouts.items():
        results = {}
        for topic in ('/odom', '/slam/odom'):
            r = results[topic] = run(topic, args.duration, domain)
            label = 'SLAM (/slam/odom)' if topic == '/slam/odom' else 'raw /odom (peer)'
            print(f'| {name} | {label} | {r["latency_p50"]:.1f} ms | {r["latency_p99"]:.1f} ms | '
                  f'{r["rate"]:.1f} Hz | {r["solve_p50"]:.1f} ms | {r["solve_p99"]:.1f} ms | '
                  f'{r["overhead_p50"]:.2f} ms |',
                  flush=True)
        slam, peer = results['/slam/odom'], results['/odom']
        print(f'|  | ratio SLAM / peer | {slam["latency_p50"] / peer["latency_p50"]:.2f}x | '
              f'{slam["latency_p99"] / peer["latency_p99"]:.2f}x | '
              f'{slam["rate"] / peer["rate"]:.2f}x | {slam["solve_p50"] / peer["solve_p50"]:.2f}x '
              f'| {slam["solve_p99"] / peer["solve_p99"]:.2f}x | |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
