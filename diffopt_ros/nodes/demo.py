"""``diffopt-ros demo``'s drive on ROS: the four nodes in one process, and the course driver.

:func:`run_course` runs ``sim_node``, ``slam_node``, ``mpc_node`` and ``recorder_node`` in one
process (rclpy's EventsExecutor: :func:`~diffopt_ros.nodes.executors.in_process_executor`; sim
time; in its own DDS domain, :func:`demo_domain_id`) with a small node that sends the course
(``config/demo.yaml``) and logs what the demo measures. The simulator runs in lock-step with the
controller (``sim_node``'s ``wait_for_cmd``): simulated time advances as fast as the MPC keeps
up, up to the course's real-time factor. The phases (record → learn → relaunch), metrics and
plots are ROS-free, in :mod:`diffopt_ros.demo`.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.context import Context
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from diffopt_ros import paths
from diffopt_ros.demo import phases
from diffopt_ros.demo.course import Course, DemoError, Leg
from diffopt_ros.demo.metrics import PREDICTION_AHEAD, se2_maps
from diffopt_ros.demo.results import DriveLog, RunResult, score
from diffopt_ros.nodes import ros_convert
from diffopt_ros.progress import Progress

CONFIG_FILES = ('sim.yaml', 'slam.yaml', 'mpc.yaml', 'recorder.yaml')


class _Driver:
    """Publishes the course (goal, then a timed /plan per leg) and logs what the demo measures
    into :attr:`log` (a :class:`~diffopt_ros.demo.results.DriveLog`).

    Wraps an rclpy node created in the demo's context; all times are sim time (s).
    """

    def __init__(self, node, course: Course, goals_map: np.ndarray, to_estimate, from_estimate):
        self.node, self.course = node, course
        self.to_estimate = to_estimate
        self.log = DriveLog(goals=goals_map, from_estimate=from_estimate)
        self.predictions_seen = 0
        self.index = -1             # current goal
        self.leg: Leg | None = None
        self._plan_pending = False
        self._frame = 'odom' if course.state_topic == '/odom' else 'map'   # of the estimate
        self.finished = False
        self.lock = threading.Lock()
        # transient local: matches both of mpc_node's goal/plan subscriptions (the durable one
        # keeps a goal sent before the node is up); a volatile publisher would be warned about
        durable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._goal_pub = node.create_publisher(PoseStamped, '/goal_pose', durable)
        self._plan_pub = node.create_publisher(PathMsg, '/plan', durable)
        sensor = qos_profile_sensor_data
        node.create_subscription(Odometry, '/ground_truth/odom',
                                 lambda m: self._log('ground truth', m), sensor)
        node.create_subscription(Odometry, '/odom', lambda m: self._log('odometry', m), sensor)
        node.create_subscription(Odometry, '/slam/odom', lambda m: self._log('SLAM', m), sensor)
        if course.state_topic not in ('/odom', '/slam/odom'):
            node.create_subscription(Odometry, course.state_topic,
                                     lambda m: self._log('estimate', m), sensor)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        node.create_subscription(PathMsg, '/mpc/predicted_path', self._on_predicted, 10)
        node.create_timer(0.1, self._step)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _log(self, name: str, msg) -> None:
        try:
            state = ros_convert.odometry_to_state(msg, name)
        except ros_convert.MessageError:
            return
        t = ros_convert.stamp_to_sec(msg.header.stamp)
        with self.lock:
            self.log.traces[name].add(t, state[:3])
            topic = {'odometry': '/odom', 'SLAM': '/slam/odom'}.get(name)
            if topic == self.course.state_topic:
                self.log.traces['estimate'].add(t, state[:3])

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith('mpc_node'):
                values = {kv.key: kv.value for kv in status.values}
                t = ros_convert.stamp_to_sec(msg.header.stamp)
                with self.lock:
                    self.log.mpc_status = (t, status.message, values)
                    if status.message in ('goal', 'tracking'):
                        self.log.solve_ms.append(float(values['solve_time_ms']))

    def _on_predicted(self, msg) -> None:
        """Keep where the MPC predicts the robot ``PREDICTION_AHEAD`` s ahead (pose stamps are
        prediction times), and every 20th whole path for the plot."""
        if not msg.poses:
            return
        stamps = np.array([ros_convert.stamp_to_sec(p.header.stamp) for p in msg.poses])
        k = int(np.searchsorted(stamps, stamps[0] + PREDICTION_AHEAD - 1e-6))
        if k < len(stamps):
            pose = msg.poses[k].pose.position
            with self.lock:
                self.log.predictions.add(stamps[k], [pose.x, pose.y])
        if len(self.log.predicted) < 10_000 and self.predictions_seen % 20 == 0:
            self.log.predicted.append(self.log.from_estimate(ros_convert.path_to_poses(msg))[:, :2])
        self.predictions_seen += 1

    def _estimate(self) -> np.ndarray | None:
        trace = self.log.traces['estimate']
        return np.asarray(trace.rows[-1]) if trace.rows else None

    def _step(self) -> None:
        now = self.now()
        with self.lock:
            estimate = self._estimate()
            status = self.log.mpc_status
        if self.finished or estimate is None or now < self.course.settle_time:
            return
        stamp = self.node.get_clock().now().to_msg()
        if self.leg is None:
            self._start_leg(0, now, estimate)
            return
        if self._plan_pending:   # one tick after the goal, so the plan supersedes it
            times, points = self.leg.waypoints()
            est = self.to_estimate(np.column_stack([points, np.zeros(len(points))]))
            path = ros_convert.poses_to_path(est, stamp, self._frame)
            for pose, t in zip(path.poses, times):
                pose.header.stamp = ros_convert.sec_to_stamp(t)
            self._plan_pub.publish(path)
            self._plan_pending = False
            return
        done = status is not None and status[1] == 'goal reached' and status[0] > self.leg.t0
        if done or now > self.leg.t0 + self.leg.duration + self.course.goal_timeout:
            self._finish_leg(now)
            if self.index + 1 < len(self.log.goals):
                self._start_leg(self.index + 1, now, estimate)
            else:
                self.finished = True

    def _start_leg(self, index: int, now: float, estimate: np.ndarray) -> None:
        self.index = index
        goals = self.log.goals
        start = self.log.from_estimate(estimate[None, :3])[0]
        if index > 0:   # the course, not where the robot happens to be: same legs every run
            start[:2] = goals[index - 1]
        self.leg = Leg.towards(start, goals[index], now + 0.1, self.course.speed,
                               self.course.turn_rate)
        goal = self.to_estimate(np.array([[*goals[index], 0.0]]))[0]
        self._goal_pub.publish(ros_convert.xy_yaw_to_pose(
            goal, self.node.get_clock().now().to_msg(), self._frame))
        self._plan_pending = True

    def _finish_leg(self, now: float) -> None:
        with self.lock:
            rows = self.log.traces['ground truth'].rows
            truth = rows[-1] if rows else [math.inf, math.inf]
        error = float(np.hypot(*(np.asarray(truth[:2]) - self.leg.goal)))
        self.log.final_errors.append(error)
        self.log.reached += error <= self.course.reach_tolerance
        self.log.legs.append((self.leg, now))

    def expected_duration(self) -> float:
        """Rough sim time of the whole course (s): settle + legs at course speed + turns."""
        start = self.log.from_estimate(np.zeros((1, 3)))[:, :2]    # the estimate's origin
        points = np.vstack([start, self.log.goals])
        length = float(np.sum(np.hypot(*np.diff(points, axis=0).T)))
        return self.course.settle_time + length / self.course.speed + 3.0 * len(self.log.goals)


def demo_domain_id() -> int:
    """The DDS domain of the demo: ``ROS_DOMAIN_ID`` when set (to watch it from other
    processes), else one derived from the process id, so other ROS processes on this machine
    (another demo, tests) never mix their topics into this run."""
    if os.environ.get('ROS_DOMAIN_ID', '').strip():
        return int(os.environ['ROS_DOMAIN_ID'])
    return 100 + os.getpid() % 100


def run_course(course: Course, name: str, out_dir: Path, mpc_learned: Path | None = None,
               slam_learned: Path | None = None, show_progress: bool = True) -> RunResult:
    """Drive the course once with all nodes in one process; record ``out_dir/name``.

    Args:
        course: the course and run settings.
        name: run name (bag folder and plot title).
        out_dir: folder of the bag (``out_dir/name``) and the plot (``out_dir/name.png``).
        mpc_learned: learned parameter file for mpc_node, if any.
        slam_learned: learned parameter file for slam_node, if any.
        show_progress: draw a progress bar (sim time) on stderr when it is a terminal; False,
            or a log: a plain line every 10 s (:class:`~diffopt_ros.progress.Progress`).

    Raises:
        DemoError: a node did not start (the message says which and why).
    """
    # here, not at the top: the nodes import torch, which `diffopt-ros demo --help` does without
    from diffopt_ros.nodes.executors import ExecutorThread, in_process_executor
    from diffopt_ros.nodes.mpc_node import MpcNode
    from diffopt_ros.nodes.params import ParameterError
    from diffopt_ros.nodes.recorder_node import RecorderNode
    from diffopt_ros.nodes.sim_node import SimNode
    from diffopt_ros.nodes.slam_node import SlamNode
    from diffopt_ros.sim import World

    def params(node: str, **values):
        return [Parameter(k, value=v)
                for k, v in {**course.overrides.get(node, {}), **values}.items()]

    world = World.load(course.world)
    goals = course.goals if len(course.goals) else np.asarray(world.route).reshape(-1, 2)
    if not len(goals):
        raise DemoError(f'no goals: the course has none and world {world.name} has no route')
    # sim_node warns that it cannot keep its real-time factor whenever the lock-step holds it.
    args = ['--ros-args', '--log-level', 'warn', '--log-level', 'sim_node:=error',
            '-p', 'use_sim_time:=true']
    for config in CONFIG_FILES:
        args += ['--params-file', str(paths.config_path(config))]
    context = Context()
    rclpy.init(args=args, context=context, domain_id=demo_domain_id())
    nodes, executor, spinner = [], None, None
    started = time.monotonic()
    try:
        try:
            sim = SimNode(context=context, parameter_overrides=params(
                'sim_node', world=course.world, seed=course.seed, paused=True,
                real_time_factor=course.real_time_factor))
            nodes.append(sim)
            # slam_node's map is the world's: anchored at the robot's start pose
            nodes.append(SlamNode(context=context, parameter_overrides=params(
                'slam_node', learned_params_file=str(slam_learned or ''),
                initial_pose=[float(v) for v in world.start])))
            nodes.append(MpcNode(context=context, parameter_overrides=params(
                'mpc_node', learned_params_file=str(mpc_learned or ''), state_topic=course.state_topic)))
            driver_node = rclpy.create_node('demo_course', context=context)
            nodes.append(driver_node)
            # /odom starts at the robot's start pose (the odom origin); slam_node's map is the
            # world's. Goals and plans are sent in the estimate's frame, metrics are in the map.
            origin = world.start if course.state_topic == '/odom' else np.zeros(3)
            driver = _Driver(driver_node, course, goals, *se2_maps(origin))
            recorder = RecorderNode(context=context, parameter_overrides=params(
                'recorder_node', output_dir=str(out_dir), run_name=name, unique_name=False))
            nodes.append(recorder)
        except ParameterError as exc:
            raise DemoError(f'{name}: a node did not start: {exc}') from exc
        executor = in_process_executor(context)
        for node in nodes:
            executor.add_node(node)
        spinner = ExecutorThread(executor)
        deadline = time.monotonic() + 5.0   # let the recorder see every publisher first
        while recorder.missing_topics and time.monotonic() < deadline:
            time.sleep(0.05)
        sim.set_parameters([Parameter('paused', value=False)])
        expected = driver.expected_duration()
        wall_limit = 60.0 + 4.0 * expected      # lock-step may run slower than real time
        with Progress(round(expected), f'{name} (sim s)', unit='s', bar=show_progress,
                      leave=False) as bar:
            while not driver.finished:
                time.sleep(0.25)
                bar.update(max(0, min(round(driver.now()), bar.total) - bar.n))
                bar.set_postfix_str(f'goal {max(driver.index, 0) + 1}/{len(goals)}')
                if time.monotonic() - started > wall_limit:
                    print(f'{name}: stopped after {wall_limit:.0f} s wall time', file=sys.stderr)
                    break
        sim_time = driver.now()
        collisions = sim.sim.collisions
    finally:
        if spinner is not None:
            spinner.stop()
        elif executor is not None:
            executor.shutdown(timeout_sec=1.0)
        for node in reversed(nodes):
            node.destroy_node()          # the recorder closes its bag here
        rclpy.try_shutdown(context=context)
    wall_time = time.monotonic() - started
    return score(name, driver.log, world, recorder.run_dir, out_dir / f'{name}.png', sim_time,
                 wall_time, collisions)


def main(argv: list[str] | None = None) -> int:
    """``diffopt-ros demo`` (:func:`diffopt_ros.demo.phases.main` with :func:`run_course`)."""
    return phases.main(argv, run_course, demo_domain_id())


if __name__ == '__main__':
    raise SystemExit(main())
