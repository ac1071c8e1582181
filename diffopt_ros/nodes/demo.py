"""``diffopt-ros demo``'s drive on ROS: the four nodes in one process, and the course driver.

:func:`run_course` runs ``sim_node``, ``slam_node``, ``mpc_node`` and ``recorder_node`` in one
process (rclpy's EventsExecutor: :func:`~diffopt_ros.nodes.executors.in_process_executor`; sim
time; in its own DDS domain, :func:`demo_domain_id`) with a small node that sends the course's
goals (``config/demo.yaml``) one at a time on ``/goal_pose`` and logs what the demo measures.
``mpc_node`` navigates (``navigation.enabled``): it plans each goal on the world's map
(``map_file``: ``<out>/map.yaml``, written from the world) and avoids obstacles. The
simulator runs in lock-step with the controller (``sim_node``'s ``wait_for_cmd``): simulated
time advances as fast as the MPC keeps up, up to the course's real-time factor. The phases
(record → learn → relaunch), metrics and plots are ROS-free, in :mod:`diffopt_ros.demo`.
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
from diffopt_ros.demo.course import Course, DemoError, write_world_map
from diffopt_ros.demo.metrics import PREDICTION_AHEAD, se2_maps
from diffopt_ros.demo.results import DriveLog, RunResult, score
from diffopt_ros.navigation import ENDING_MODES
from diffopt_ros.nodes import ros_convert
from diffopt_ros.progress import Progress

CONFIG_FILES = ('sim.yaml', 'slam.yaml', 'mpc.yaml', 'recorder.yaml')


class _Driver:
    """Sends the course's goals one at a time on ``/goal_pose`` and logs what the demo measures
    into :attr:`log` (a :class:`~diffopt_ros.demo.results.DriveLog`).

    A goal ends when ``mpc_node`` reports it reached or unreachable (``/diagnostics``), or after
    the course's ``goal_timeout``. Wraps an rclpy node created in the demo's context; all times
    are sim time (s).
    """

    #: s after a goal is sent before a status counts for it (two control periods at 10 Hz: a
    #: status of the previous goal may still be on its way)
    STATUS_DELAY = 0.2

    def __init__(self, node, course: Course, goals_map: np.ndarray, to_estimate, from_estimate):
        self.node, self.course = node, course
        self.to_estimate = to_estimate
        self.log = DriveLog(goals=goals_map, from_estimate=from_estimate)
        self.predictions_seen = 0
        self.index = -1             # current goal
        self.sent_at = 0.0          # when it was sent (s)
        self._frame = 'odom' if course.state_topic == '/odom' else 'map'   # of the estimate
        self.finished = False
        self.lock = threading.Lock()
        # transient local: matches mpc_node's durable goal subscription (which keeps a goal sent
        # before the node is up); a volatile publisher would be warned about
        durable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._goal_pub = node.create_publisher(PoseStamped, '/goal_pose', durable)
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
        node.create_subscription(PathMsg, '/plan_global', self._on_plan, 10)
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
                    if status.message in ('tracking', 'stop zone'):     # a solve ran
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

    def _on_plan(self, msg) -> None:
        """The MPC's global path (in the estimate's frame), kept in the map frame."""
        poses = ros_convert.path_to_poses(msg) if msg.poses else np.zeros((0, 3))
        with self.lock:
            self.log.plans.append((ros_convert.stamp_to_sec(msg.header.stamp),
                                   self.log.from_estimate(poses)[:, :2]))

    def _step(self) -> None:
        now = self.now()
        with self.lock:
            ready = bool(self.log.traces['estimate'].rows)
            status = self.log.mpc_status
        if self.finished or not ready or now < self.course.settle_time:
            return
        if self.index < 0:
            self._send(0, now)
            return
        outcome = None
        if status is not None and status[0] > self.sent_at + self.STATUS_DELAY \
                and status[1] in ENDING_MODES:
            outcome = status[1]
        elif now > self.sent_at + self.course.goal_timeout:
            outcome = 'timeout'
        if outcome is None:
            return
        self._finish(now, outcome)
        if self.index + 1 < len(self.log.goals):
            self._send(self.index + 1, now)
        else:
            self.finished = True

    def _send(self, index: int, now: float) -> None:
        self.index, self.sent_at = index, now
        goal = self.to_estimate(np.array([[*self.log.goals[index], 0.0]]))[0]
        self._goal_pub.publish(ros_convert.xy_yaw_to_pose(
            goal, self.node.get_clock().now().to_msg(), self._frame))

    def _finish(self, now: float, outcome: str) -> None:
        with self.lock:
            rows = self.log.traces['ground truth'].rows
            truth = rows[-1] if rows else [math.inf, math.inf]
        error = float(np.hypot(*(np.asarray(truth[:2]) - self.log.goals[self.index])))
        self.log.final_errors.append(error)
        self.log.outcomes.append(outcome)
        self.log.reached += error <= self.course.reach_tolerance
        self.log.intervals.append((self.sent_at, now))

    def expected_duration(self) -> float:
        """Rough sim time of the whole course (s): settle, then each straight line between goals
        at the MPC's ``reference_speed`` with a detour of a half, capped at ``goal_timeout``."""
        start = self.log.from_estimate(np.zeros((1, 3)))[:, :2]    # the estimate's origin
        points = np.vstack([start, self.log.goals])
        lines = np.hypot(*np.diff(points, axis=0).T)
        speed = float(self.course.mpc_value('reference_speed'))
        per_goal = np.minimum(1.5 * lines / max(speed, 1e-3) + 2.0, self.course.goal_timeout)
        return self.course.settle_time + float(np.sum(per_goal))


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
    # /odom starts at the robot's start pose (the odom origin); slam_node's map is the world's.
    # Goals and the map are given in the estimate's frame, metrics are in the map.
    origin = world.start if course.state_topic == '/odom' else np.zeros(3)
    map_file = write_world_map(world, out_dir / 'map', origin)
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
            # goals only: mpc_node plans each on the world's map and avoids its obstacles
            nodes.append(MpcNode(context=context, parameter_overrides=params(
                'mpc_node', learned_params_file=str(mpc_learned or ''), state_topic=course.state_topic,
                **{'navigation.enabled': True, 'map_file': str(map_file)})))
            driver_node = rclpy.create_node('demo_course', context=context)
            nodes.append(driver_node)
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
