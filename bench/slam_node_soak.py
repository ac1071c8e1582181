"""slam_node as a process, measured from outside: resident memory and update time against keyframes.

    .venv/bin/python bench/slam_node_soak.py [--minutes 8] [--real-time-factor 4] [--no-reuse]
                                             [--gc-period S] [--sample 20] [--domain 93]

sim_node (config/sim.yaml: the loop world) and slam_node (config/slam.yaml) run as separate
processes from the installed console scripts, on simulated time. This client uses rclpy and
message types only (nothing of diffopt_ros): it drives the loop world's route (read from
config/worlds/loop.yaml) with a turn-then-drive waypoint follower on ``/ground_truth/odom`` at
0.5 m/s, one ``/cmd_vel`` per ground-truth message; it reads slam_node's ``/diagnostics``
(keyframes, update time and its maximum, both wall time in the node; dropped scans; full garbage
collections) and samples slam_node's resident set size from ``/proc/PID/status`` every
``--sample`` wall seconds. Printed: one row per sample, then the RSS growth per keyframe and per
simulated minute over the second half of the samples (least squares).

``--no-reuse`` sets ``keyframe.reuse_distance:=0`` (every keyframe step adds a keyframe: the
graph grows all the time, as for a robot that maps without localizing on its map);
``--gc-period`` sets ``gc.full_collection_period`` (0: Python's own schedule);
``--loop-interval`` sets ``loop.keyframe_interval`` (1: every keyframe searches for a loop
closure).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml
from control_loop import stop_processes  # bench/, the script's folder

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SPEED, TURN_GAIN, REACHED = 0.5, 2.0, 0.25      # m/s, 1/s, m


def _rss_mib(pid: int) -> float | None:
    """Resident set size of process ``pid`` (MiB), from /proc; None when it is exiting (an
    exited process not yet waited for has no VmRSS) or gone."""
    try:
        lines = Path(f'/proc/{pid}/status').read_text().splitlines()
    except FileNotFoundError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith('VmRSS:')), None)


class Client:
    """Drives the route on ground truth and keeps slam_node's latest diagnostics."""

    def __init__(self, context, route: np.ndarray):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist
        from nav_msgs.msg import Odometry

        self.node = rclpy.create_node('slam_soak_client', context=context)
        self.route, self.target = route, 0
        self.sim_time = 0.0
        self.diagnostics: dict[str, float] = {}
        self.lock = threading.Lock()
        self._twist = Twist()
        self._cmd = self.node.create_publisher(Twist, '/cmd_vel', 10)
        self.node.create_subscription(Odometry, '/ground_truth/odom', self._on_truth, 10)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_truth(self, msg) -> None:
        q = msg.pose.pose.orientation
        yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
        x, y = msg.pose.pose.position.x, msg.pose.pose.position.y
        goal = self.route[self.target % len(self.route)]
        if math.hypot(goal[0] - x, goal[1] - y) < REACHED:
            self.target += 1
            goal = self.route[self.target % len(self.route)]
        error = (math.atan2(goal[1] - y, goal[0] - x) - yaw + math.pi) % (2 * math.pi) - math.pi
        self._twist.linear.x = 0.0 if abs(error) > 0.3 else SPEED
        self._twist.angular.z = max(-1.0, min(1.0, TURN_GAIN * error))
        self._cmd.publish(self._twist)
        with self.lock:
            self.sim_time = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith(': slam'):
                with self.lock:
                    self.diagnostics = {v.key: float(v.value) for v in status.values}


def _launch(args) -> list[subprocess.Popen]:
    """Start slam_node and sim_node (in that order), each writing to ``<logs>/<name>.log``."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(args.domain))
    config = ROOT / 'config'
    slam = [str(BIN / 'slam_node'), '--ros-args', '--params-file', str(config / 'slam.yaml'),
            '-p', 'use_sim_time:=true']
    if args.no_reuse:
        slam += ['-p', 'keyframe.reuse_distance:=0.0']
    if args.gc_period is not None:
        slam += ['-p', f'gc.full_collection_period:={args.gc_period}']
    if args.loop_interval is not None:
        slam += ['-p', f'loop.keyframe_interval:={args.loop_interval}']
    sim = [str(BIN / 'sim_node'), '--ros-args', '--params-file', str(config / 'sim.yaml'),
           '-p', 'use_sim_time:=true', '-p', f'real_time_factor:={args.real_time_factor}']
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, command in (('slam_node', slam), ('sim_node', sim)):
        with (logs / f'{name}.log').open('w') as log:      # the child keeps its own descriptor
            procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--minutes', type=float, default=8.0, help='wall minutes (default 8)')
    parser.add_argument('--real-time-factor', type=float, default=4.0,
                        help="sim_node's real_time_factor (default 4)")
    parser.add_argument('--no-reuse', action='store_true', help='keyframe.reuse_distance:=0')
    parser.add_argument('--gc-period', type=float,
                        help="slam_node's gc.full_collection_period (default: config/slam.yaml's)")
    parser.add_argument('--loop-interval', type=int, metavar='N',
                        help="slam_node's loop.keyframe_interval (default: config/slam.yaml's)")
    parser.add_argument('--sample', type=float, default=20.0,
                        help='wall seconds between samples (default 20)')
    parser.add_argument('--domain', type=int, default=93, help='ROS_DOMAIN_ID (default 93)')
    parser.add_argument('--logs', default='/tmp/slam_node_soak',
                        help='folder of the node processes\' output (default /tmp/slam_node_soak)')
    args = parser.parse_args()
    if args.minutes <= 0 or args.sample <= 0 or args.real_time_factor <= 0:
        parser.error('--minutes, --sample and --real-time-factor must be positive')
    if args.gc_period is not None and not args.gc_period >= 0:
        parser.error(f'--gc-period {args.gc_period}: must be 0 (Python\'s schedule) or positive')
    if args.loop_interval is not None and args.loop_interval < 1:
        parser.error(f'--loop-interval {args.loop_interval}: must be at least 1')

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    world = yaml.safe_load((ROOT / 'config' / 'worlds' / 'loop.yaml').read_text())
    procs = _launch(args)
    context = Context()
    rclpy.init(context=context, domain_id=args.domain)
    client = Client(context, np.asarray(world['route'], dtype=float))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client.node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    print(f'bench/slam_node_soak.py: {args.minutes:g} wall minutes, real_time_factor '
          f'{args.real_time_factor:g}, reuse {"off" if args.no_reuse else "on"}, gc period '
          f'{"config" if args.gc_period is None else args.gc_period}, loop.keyframe_interval '
          f'{"config" if args.loop_interval is None else args.loop_interval}; node output in {args.logs}')
    print(' wall s   sim s  keyframes   RSS MiB   update ms (last / max)   dropped scans   '
          'full collections (longest ms)')
    rows, died = [], None
    started = time.monotonic()
    try:
        while time.monotonic() - started < 60 * args.minutes:
            time.sleep(args.sample)
            died = next((proc for proc in procs if proc.poll() is not None), None)
            if died is not None:
                break
            rss = _rss_mib(procs[0].pid)
            if rss is None:          # exiting between the poll and the read: wait for its status
                procs[0].wait(timeout=10)
                died = procs[0]
                break
            with client.lock:
                diagnostics, sim_time = dict(client.diagnostics), client.sim_time
            keyframes = diagnostics.get('keyframes', 0.0)
            rows.append((sim_time, keyframes, rss))
            print(f'{time.monotonic() - started:7.0f} {sim_time:7.0f}  {keyframes:9.0f}  '
                  f'{rss:8.1f}   {diagnostics.get("update_time_ms", math.nan):8.1f} / '
                  f'{diagnostics.get("max_update_time_ms", math.nan):6.1f}   '
                  f'{diagnostics.get("dropped_scans", math.nan):13.0f}   '
                  f'{diagnostics.get("full_gc_collections", math.nan):5.0f} '
                  f'({diagnostics.get("full_gc_longest_ms", math.nan):.1f})', flush=True)
    finally:
        stop.set()
        spinner.join(timeout=5)
        stop_processes(procs, timeout=15.0)
        executor.shutdown()
        client.node.destroy_node()
        rclpy.try_shutdown(context=context)
    if died is not None:
        print(f'error: {Path(died.args[0]).name} exited with status {died.returncode} '
              f'(its output: {Path(args.logs) / Path(died.args[0]).name}.log)', file=sys.stderr)
        return 1
    half = np.array(rows[len(rows) // 2:])
    if len(half) >= 3:
        per_minute = 60 * np.polyfit(half[:, 0], half[:, 2], 1)[0]
        text = f'RSS over the second half: {per_minute:+.2f} MiB per simulated minute'
        if half[-1, 1] - half[0, 1] >= 10:
            text += f', {1024 * np.polyfit(half[:, 1], half[:, 2], 1)[0]:+.1f} KiB per keyframe'
        print(f'\n{text} ({half[0, 1]:.0f} -> {half[-1, 1]:.0f} keyframes, {half[0, 2]:.1f} -> '
              f'{half[-1, 2]:.1f} MiB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
