"""``sim_node``: the 2D simulator (:mod:`diffopt_ros.sim`) as a ROS 2 node.

Subscribes ``/cmd_vel`` (``geometry_msgs/Twist``, or ``TwistStamped`` with ``stamped_cmd``).
Publishes ``/odom`` (wheel odometry, ``odom`` -> ``base_link``, with covariance),
``/ground_truth/odom`` (``map`` -> ``base_link``), ``/scan`` (``sensor_msgs/LaserScan``,
sensor-data QoS, frame ``base_scan``) and ``/clock``. Service ``~/reset`` (``std_srvs/Trigger``)
puts the robot back at its start pose and restarts the noise; time keeps running.

The robot (``robot.kind``) is a differential drive or an Ackermann car; the car takes the same
Twist on ``/cmd_vel`` and steers ``atan(omega wheelbase / v)`` (clipped to ``robot.max_steer``,
at most ``robot.max_steer_rate``), as a Twist-driven car base does (:mod:`diffopt_ros.sim.robot`).

Time: the node steps the simulation at ``step_rate`` in simulated time and stamps everything
with it (never with its ROS clock), publishing ``/clock`` before the messages of each step. Its
own stepping timer runs on the steady wall clock, so it works with ``use_sim_time`` set (as in
launch files that set it for every node). ``real_time_factor`` r > 0 keeps simulated time at r
times wall time (catching up in bursts); r = 0 steps as fast as the CPU allows. With
``wait_for_cmd`` > 0 the simulation also waits for the controller (lock-step): it never runs
more than that much simulated time past the latest ``/cmd_vel``, so a slow controller slows
simulated time down instead of seeing its commands arrive late. Nodes with
``use_sim_time: true`` then follow ``/clock``: their timers fire in simulated time.

Each step: publish ``/clock`` = t, ``/odom`` and ``/ground_truth/odom`` if due (``odom_rate``),
``/scan`` if due (``scan_rate``), all stamped t; then apply the latest command (zero if
``/cmd_vel`` was silent for ``cmd_timeout`` simulated seconds) for one step.
"""
from __future__ import annotations

import math
import time

import numpy as np
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import LaserScan
from std_srvs.srv import Trigger

from diffopt_ros.nodes import ros_convert
from diffopt_ros.nodes.params import ParameterError, declare_params
from diffopt_ros.nodes.runner import run_node
from diffopt_ros.params.sim import SCHEMA
from diffopt_ros.sim import CollisionError, Simulator, World, WorldError
from diffopt_ros.sim.config import NODE_NAME, robot_params, sensor_params

PARAMS = SCHEMA.params

# Wall-clock period of the stepping timer (s), and the wall-time budget of one burst of steps
# with real_time_factor = 0 (the executor serves /cmd_vel and other nodes between bursts).
TICK = 0.005
BURST = 0.005
# Most simulated time one tick may catch up (s); beyond it the node stops trying to keep pace.
MAX_LAG = 0.25

# Odometry covariances (6x6 over x y z roll pitch yaw): x, y, yaw come from the odometry model;
# a planar robot knows z, roll and pitch; the encoder twist has only a small nominal variance.
_PLANAR = [0, 1, 5]
_TWIST_COV = np.diag([1e-6, 1e-9, 1e-9, 1e-9, 1e-9, 1e-6])


class SimNode(Node):
    """The simulator node; ``kwargs`` go to ``rclpy.node.Node`` (``context``,
    ``parameter_overrides``, ``namespace``, ...).

    Raises:
        ParameterError: a bad parameter, world file or start pose (the message says which).
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._values = declare_params(self, SCHEMA, on_change=self._on_change)
        values = self._values
        try:
            world = World.load(values['world'])
            start = None if values['use_world_start'] else values['start_pose']
            self.sim = Simulator(world, robot_params(values), sensor_params(values),
                                 seed=values['seed'], start_pose=start)
        except (WorldError, CollisionError, ValueError) as exc:
            raise ParameterError(f'{self.get_name()}: {exc}') from exc
        self._step_ns = round(1e9 / values['step_rate'])
        self._time_ns = 0
        self._next_odom_ns = self._next_scan_ns = 0
        self._command = (0.0, 0.0)
        self._command_ns: int | None = None     # sim time of the last /cmd_vel
        self._timed_out = True
        self._pose_cov = np.diag([0.0, 0.0, 1e-9, 1e-9, 1e-9, 0.0])
        self._odom_msg, self._truth_msg = Odometry(), Odometry()   # refilled for each publish

        self._odom_pub = self.create_publisher(Odometry, 'odom', 10)
        self._truth_pub = self.create_publisher(Odometry, 'ground_truth/odom', 10)
        self._scan_pub = self.create_publisher(LaserScan, 'scan', qos_profile_sensor_data)
        self._clock_pub = self.create_publisher(ClockMsg, '/clock', 10)
        if values['stamped_cmd']:
            self.create_subscription(TwistStamped, 'cmd_vel',
                                     lambda msg: self._on_cmd(msg.twist), 10)
        else:
            self.create_subscription(Twist, 'cmd_vel', self._on_cmd, 10)
        self.create_service(Trigger, '~/reset', self._on_reset)
        # The stepping timer runs on the steady wall clock: it must not wait for the /clock
        # this node publishes itself when use_sim_time is set.
        self._wall_anchor, self._sim_anchor_ns, self._reanchor = time.monotonic(), 0, True
        self.create_timer(TICK, self._on_tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        pose = self.sim.true_state
        self.get_logger().info(
            f'{values["robot.kind"]} robot in world {world.name} ({len(world.walls)} walls, '
            f'{len(world.discs)} discs), start '
            f'({pose[0]:.2f}, {pose[1]:.2f}, {pose[2]:.2f}), step {values["step_rate"]:g} Hz, '
            f'real_time_factor {values["real_time_factor"]:g}, seed {values["seed"]}')

    # ------------------------------------------------------------------ time
    @property
    def sim_time(self) -> float:
        """Simulated time of the last published state (s)."""
        return self._time_ns * 1e-9

    def _on_tick(self) -> None:
        now = time.monotonic()
        if self._values['paused'] or self._reanchor:
            self._wall_anchor, self._sim_anchor_ns, self._reanchor = now, self._time_ns, False
            if self._values['paused']:
                return
        rtf = self._values['real_time_factor']
        if rtf == 0:        # a burst; the timer is due again at once, the executor serves others
            deadline = time.perf_counter() + BURST
            while time.perf_counter() < deadline and self._steps_allowed(1):
                self.advance(1)
            return
        target_ns = self._sim_anchor_ns + int((now - self._wall_anchor) * rtf * 1e9)
        steps = (target_ns - self._time_ns) // self._step_ns
        most = max(1, int(MAX_LAG * 1e9) // self._step_ns)
        if steps > most:
            self.get_logger().warning(
                f'cannot keep real_time_factor {rtf:g}: {steps} steps behind, dropping the lag',
                throttle_duration_sec=5.0)
            steps, self._reanchor = most, True
        allowed = self._steps_allowed(steps)
        if allowed < steps:
            self._reanchor = True       # waiting for the controller: restart the pacing after
        if allowed > 0:
            self.advance(allowed)

    def _steps_allowed(self, steps: int) -> int:
        """How many of ``steps`` may run now: all, unless ``wait_for_cmd`` holds the simulation
        within that much simulated time of the last /cmd_vel (lock-step with a controller)."""
        wait = self._values['wait_for_cmd']
        if wait <= 0 or self._command_ns is None:
            return steps
        limit_ns = self._command_ns + int(wait * 1e9)
        return max(0, min(steps, (limit_ns - self._time_ns) // self._step_ns))

    def advance(self, steps: int) -> None:
        """Publish and step ``steps`` times (what the timer does; callable directly, e.g. while
        ``paused``, for lock-step use in tests and tools)."""
        v = self._values
        dt = self._step_ns * 1e-9
        for _ in range(steps):
            stamp = ros_convert.sec_to_stamp(self._time_ns * 1e-9)
            if v['publish_clock']:
                self._clock_pub.publish(ClockMsg(clock=stamp))
            if self._time_ns >= self._next_odom_ns:
                self._publish_odometry(stamp)
                self._next_odom_ns = _next_due(self._next_odom_ns, self._time_ns, v['odom_rate'])
            if self._time_ns >= self._next_scan_ns:
                self._publish_scan(stamp)
                self._next_scan_ns = _next_due(self._next_scan_ns, self._time_ns, v['scan_rate'])
            self.sim.step(self._current_command(), dt)
            self._time_ns += self._step_ns

    def _current_command(self) -> tuple[float, float]:
        if self._command_ns is None:
            return (0.0, 0.0)
        if self._time_ns - self._command_ns > self._values['cmd_timeout'] * 1e9:
            if not self._timed_out:
                self.get_logger().info(f'/cmd_vel silent for {self._values["cmd_timeout"]:g} s '
                                       '(sim time): stopping the robot', throttle_duration_sec=5.0)
                self._timed_out = True
            return (0.0, 0.0)
        return self._command

    # ------------------------------------------------------------------ messages
    def _on_cmd(self, msg: Twist) -> None:
        command = (msg.linear.x, msg.angular.z)
        if not all(math.isfinite(c) for c in command):
            self.get_logger().warning(f'ignoring non-finite /cmd_vel {command}',
                                      throttle_duration_sec=2.0)
            return
        self._command, self._command_ns, self._timed_out = command, self._time_ns, False

    def _publish_odometry(self, stamp) -> None:
        frames, sim = self._values, self.sim
        pose_cov = self._pose_cov
        pose_cov[np.ix_(_PLANAR, _PLANAR)] = sim.odometry_covariance
        self._odom_pub.publish(ros_convert.state_to_odometry(
            sim.odometry, stamp, frames['frames.odom'], frames['frames.base'], pose_cov,
            _TWIST_COV, out=self._odom_msg))
        self._truth_pub.publish(ros_convert.state_to_odometry(
            sim.true_state, stamp, frames['frames.map'], frames['frames.base'],
            out=self._truth_msg))

    def _publish_scan(self, stamp) -> None:
        p = self.sim.sensors
        self._scan_pub.publish(ros_convert.ranges_to_scan(
            self.sim.scan(), stamp, self._values['frames.scan'], -0.5 * p.lidar_fov,
            p.lidar_increment, p.lidar_range_min, p.lidar_range_max,
            scan_time=1.0 / self._values['scan_rate']))

    def _on_reset(self, request, response):
        try:
            self.sim.reset()
        except (CollisionError, ValueError) as exc:   # e.g. robot.radius grew since the start
            response.success, response.message = False, str(exc)
            return response
        self._command, self._command_ns, self._timed_out = (0.0, 0.0), None, True
        self._next_odom_ns = self._next_scan_ns = self._time_ns
        x, y, yaw = self.sim.start_pose
        response.success = True
        response.message = (f'robot at ({x:.3f}, {y:.3f}, {yaw:.3f}) in {self._values["frames.map"]}, '
                            f'odometry zeroed, seed {self.sim.seed}; time {self.sim_time:.3f} s')
        self.get_logger().info(f'reset: {response.message}')
        return response

    # ------------------------------------------------------------------ parameters
    def _on_change(self, changes: dict) -> str | None:
        merged = {**self._values, **changes}
        try:
            robot, sensors = robot_params(merged), sensor_params(merged)
        except ValueError as exc:
            return str(exc)
        self._values = merged
        if not hasattr(self, 'sim'):                 # during declaration
            return None
        self.sim.robot, self.sim.sensors = robot, sensors
        if 'real_time_factor' in changes or 'paused' in changes:
            self._reanchor = True       # the next tick restarts the pacing from now
        if 'odom_rate' in changes:
            self._next_odom_ns = self._time_ns
        if 'scan_rate' in changes:
            self._next_scan_ns = self._time_ns
        return None


def _next_due(due_ns: int, now_ns: int, rate: float) -> int:
    """Next publication time (ns) on the grid ``due_ns + k / rate`` after ``now_ns``."""
    period = round(1e9 / rate)
    due = due_ns + period
    return due if due > now_ns else now_ns + period


def main(args: list[str] | None = None) -> int:
    """Console script ``sim_node``: run until SIGINT/SIGTERM (exit 0)."""
    return run_node(SimNode, args, description=__doc__, params=SCHEMA)


if __name__ == '__main__':
    raise SystemExit(main())
