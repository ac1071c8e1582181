"""``mpc_node``: the differentiable MPC (box-constrained iLQR) as a ROS 2 lifecycle node.

Subscribes the state (``odom``; remap to ``/slam/odom`` or set ``state_topic``), ``goal_pose``
(geometry_msgs/PoseStamped, a position goal) and ``plan`` (nav_msgs/Path: a path to track; with
strictly increasing pose stamps it is a timed trajectory, otherwise it is followed at
``reference_speed``). A timer at ``control_rate`` (node clock: sim time under ``use_sim_time``)
solves the MPC warm-started from the previous solution and publishes ``cmd_vel``
(geometry_msgs/Twist, or TwistStamped with ``stamped_cmd``), ``mpc/predicted_path``
(nav_msgs/Path, in the state's frame; header and pose stamps are the state's stamp + k dt, the
times the states are predicted for) and ``/diagnostics``. A lifecycle node: with ``autostart``
(default) it configures and activates itself; deactivating publishes one zero command.

Safety: no state, a state older than ``state_timeout`` or non-finite (or with a zero
quaternion) → zero command (throttled warning); a solve that fails or gives non-finite controls
→ the previous plan, shifted to now, while it lasts, then zero; no goal, or the goal reached
within ``goal_tolerance`` (a path's end: once the path is done) → zero command until the next
goal or plan. Odometry stamped more than ``future_stamp_tolerance`` ahead of the node clock, or
older than the last accepted state, is rejected (counted on /diagnostics); a node clock that
jumps back (sim reset, bag loop) forgets the last state. Each solve runs on a worker thread
within a time budget (``solve_budget``; iLQR stops early with its best iterate): a tick whose
solve overruns publishes the previous plan shifted to now (or zero) on time and the solve's
result serves as the next warm start; no command is published from a state older than
``state_timeout``. Goals and plans are subscribed from the start (before the solver's warm-up),
also with transient-local durability, so a goal published before the node is active is kept.
The last word of the node on every way out (deactivate, shutdown transition, SIGINT/SIGTERM) is
a zero command.

Example::

    mpc_node --ros-args --params-file config/mpc.yaml -r odom:=/slam/odom \\
        -p learned_params_file:=learned/dynamics/mpc.yaml

Navigation (``navigation.enabled``): a ``goal_pose`` is planned on the occupancy grid
(``map_file``, a map_server YAML, or ``map``, nav_msgs/OccupancyGrid, transient-local, as
slam_node publishes it) and tracked with the obstacle cost of the map and the latest ``scan``
(sensor_msgs/LaserScan; the lidar at the robot centre, the state's frame the map's); the path
is published on ``plan_global`` (nav_msgs/Path) when planned or replanned. An unreachable goal
is reported (warning, diagnostics WARN ``unreachable``) and the robot stops; so is a goal
towards which the robot has not moved ``navigation.progress_radius`` in
``navigation.progress_timeout`` (WARN ``no progress``: given up until the next). A ``plan`` is
tracked as without navigation. The step is :class:`diffopt_ros.navigation.Navigator`.

Robot bases (``model``, with or without navigation): ``diff_drive_lag``, ``unicycle`` and
``bicycle``, an Ackermann car that sends the Twist ``(v, v tan(steer) / model.wheelbase)``, or with
``cmd_steering_angle`` ``(v, steer)``: angular.z is the steering angle (rad), as
teb_local_planner's ``cmd_angle_instead_rotvel``.

All numerics (references, warm start, the solve) are ROS-free (:mod:`diffopt_ros.mpc.receding`,
:mod:`diffopt_ros.navigation`); the node only converts messages and keeps time. Here: parameters,
lifecycle, inputs and the control tick; goals and plans are :mod:`diffopt_ros.nodes.mpc_targets`,
the solve within its budget :mod:`diffopt_ros.nodes.mpc_solve`, the map, scan and global path of
navigation :mod:`diffopt_ros.nodes.mpc_navigation`, /diagnostics :mod:`diffopt_ros.nodes.mpc_stats`.
The callbacks here share the node's state under one lock, which is why they stay in one module
(about 380 lines besides this docstring).
"""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry, Path
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from diffopt_ros.maps import MapError
from diffopt_ros.mpc.receding import ControlStep, MpcSettings, RecedingHorizonSolver
from diffopt_ros.nodes import ros_convert
from diffopt_ros.nodes.device import available_device
from diffopt_ros.nodes.mpc_navigation import NodeNavigation
from diffopt_ros.nodes.mpc_solve import PlanKeeper
from diffopt_ros.nodes.mpc_stats import MpcStats
from diffopt_ros.nodes.mpc_targets import Target
from diffopt_ros.nodes.params import ParameterError, apply_learned_params_file, declare_params
from diffopt_ros.nodes.runner import run_node
from diffopt_ros.params.mpc import NODE_NAME, SCHEMA
from diffopt_ros.threads import limit_threads

PARAMS = SCHEMA.params

#: Parameters whose change needs a new solver (others are read each step).
_SOLVER_PARAMS = frozenset(p.name for p in PARAMS if p.name.split('.')[0] in (
    'model', 'horizon', 'dt', 'weights', 'bounds', 'max_iterations', 'tolerance', 'device'))


class MpcNode(LifecycleNode):
    """Receding-horizon iLQR controller; see the module docstring for topics and behaviour."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._lock = threading.Lock()
        self._solver: RecedingHorizonSolver | None = None
        self._rebuild = False
        self._timer = None
        self._subs = []
        self._pubs = []
        self._state = None          # (stamp_s, state (5,), frame_id)
        self._target: Target | None = None   # the goal or path driven to
        self._plans = PlanKeeper()
        self._last_cmd = np.zeros(2)
        self._accepted_stamp = None  # stamp of the last accepted state (s)
        self._last_now = -math.inf  # node clock at the last state or tick (s): jumps back?
        self._target_seq = 0        # counts goals and plans: a late solve for an old one is dropped
        self._last_target = None    # the last goal or plan message (one arrives on two subscriptions)
        self._cmd_pub = None
        self._stats = MpcStats()
        self._nav: NodeNavigation | None = None   # navigation.enabled
        self._values = declare_params(self, PARAMS, on_change=self._on_params)
        reason = SCHEMA.combination(self._values)
        if reason:
            raise ParameterError(f'{self.get_name()}: invalid start-up values: {reason}')
        apply_learned_params_file(self, self._values['learned_params_file'])
        # Goals and plans are taken from the start (configure warms the solver up for seconds),
        # from volatile publishers and, with their last message, from transient-local ones
        # (a goal published before this node existed).
        durable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        targets = MutuallyExclusiveCallbackGroup()
        # the durable one does not match volatile publishers (the other one does): no warning
        quiet = SubscriptionEventCallbacks(incompatible_qos=lambda event: None)
        for qos, events in ((QoSProfile(depth=10), None), (durable, quiet)):
            self.create_subscription(PoseStamped, 'goal_pose', self._on_goal, qos,
                                     callback_group=targets, event_callbacks=events)
            self.create_subscription(Path, 'plan', self._on_plan, qos, callback_group=targets,
                                     event_callbacks=events)
        if self._values['autostart']:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise ParameterError(f'{self.get_name()}: configure failed (see log)')
            self.trigger_activate()

    # ----------------------------------------------------------------- parameters
    def _on_params(self, changes: dict) -> str | None:
        merged, reason = SCHEMA.change(self._values, changes)
        if reason:
            return reason
        with self._lock:
            self._values = merged
            if _SOLVER_PARAMS.intersection(changes):
                self._rebuild = True
            if 'control_rate' in changes and self._timer is not None:
                self._timer.timer_period_ns = int(1e9 / changes['control_rate'])
        return None

    def _build_solver(self) -> RecedingHorizonSolver:
        device = available_device(self, self._values['device'])
        solver = RecedingHorizonSolver(MpcSettings.from_params(self._values),
                                       device=torch.device(device), dtype=torch.float64)
        solver.warm_up()
        return solver

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        limit_threads(self._values['torch_threads'])
        try:
            with self._lock:
                self._solver, self._rebuild = self._build_solver(), False
        except (ValueError, RuntimeError) as exc:
            self.get_logger().error(f'cannot build the MPC solver: {exc}')
            return TransitionCallbackReturn.FAILURE
        inputs = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()
        cmd_type = TwistStamped if self._values['stamped_cmd'] else Twist
        self._cmd_pub = self.create_lifecycle_publisher(cmd_type, 'cmd_vel', 10)
        self._path_pub = self.create_lifecycle_publisher(Path, 'mpc/predicted_path', 10)
        self._diag_pub = self.create_lifecycle_publisher(DiagnosticArray, '/diagnostics', 10)
        self._pubs = [self._cmd_pub, self._path_pub, self._diag_pub]
        self._subs = [
            self.create_subscription(Odometry, self._values['state_topic'], self._on_state,
                                     qos_profile_sensor_data, callback_group=inputs),
        ]
        if self._values['navigation.enabled']:
            return self._configure_navigation(inputs)
        return TransitionCallbackReturn.SUCCESS

    def _configure_navigation(self, inputs) -> TransitionCallbackReturn:
        """Map (file or topic), scan and plan_global of navigation.enabled."""
        try:
            self._nav = NodeNavigation(self, self._values, inputs, self._latest_pose)
        except MapError as exc:
            self.get_logger().error(f'map_file: {exc}')
            return TransitionCallbackReturn.FAILURE
        self._pubs += self._nav.publishers
        self._subs += self._nav.subscriptions
        return TransitionCallbackReturn.SUCCESS

    def _latest_pose(self):
        """``(3,)`` pose of the latest state (None without one): where the scan was taken."""
        with self._lock:
            entry = self._state
        return None if entry is None or entry[1] is None else entry[1][:3]

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._timer = self.create_timer(1.0 / self._values['control_rate'], self._on_tick,
                                        callback_group=self._control_group)
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._destroy_timer()
        self._stop_robot()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._destroy_timer()
        self._stop_robot()
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def _stop_robot(self):
        """Publish one zero command (where the command publisher is active) and wait up to
        0.5 s until reliable subscribers have it: the robot's last word from this node."""
        pub = self._cmd_pub
        if pub is None or not self.context.ok() or not getattr(pub, 'is_activated', True):
            return
        self._publish_cmd(0.0, 0.0)
        pub.wait_for_all_acked(Duration(seconds=0.5))

    def destroy_node(self):
        """Command zero (SIGINT/SIGTERM end here, see ``run_node``), stop the solve worker,
        then destroy the node."""
        self._destroy_timer()
        self._stop_robot()
        self._plans.stop()
        return super().destroy_node()

    def _destroy_timer(self):
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None

    def _destroy_entities(self):
        self._destroy_timer()
        for sub in self._subs:
            self.destroy_subscription(sub)
        for pub in self._pubs:
            self.destroy_lifecycle_publisher(pub)
        self._subs, self._pubs = [], []
        self._cmd_pub = None
        self._solver = None
        self._nav = None

    # ----------------------------------------------------------------- inputs
    def _now(self) -> float:
        """Node clock (s); a jump back (sim reset, bag loop) forgets the last state, so that
        the stamps of the new time line are not compared with the old one. Call under the lock."""
        now = self.get_clock().now().nanoseconds * 1e-9
        if now < self._last_now:
            self._stats.counts['clock_jumps'] += 1
            self.get_logger().warning(f'node clock jumped back {self._last_now - now:.3f} s: forgetting '
                                      'the last state', throttle_duration_sec=2.0)
            self._state = self._accepted_stamp = None
            self._plans.forget()
        self._last_now = now
        return now

    def _on_state(self, msg: Odometry):
        stamp = ros_convert.stamp_to_sec(msg.header.stamp)
        topic = self._values['state_topic']
        try:
            state = ros_convert.odometry_to_state(msg, topic)
        except ros_convert.MessageError as exc:
            state, error = None, exc
        with self._lock:
            now = self._now()
            ahead = stamp - now
            if now > 0.0 and ahead > self._values['future_stamp_tolerance']:
                self._stats.counts['future_states'] += 1
                self.get_logger().warning(f'{topic}: stamp {stamp:.3f} s is {ahead:.3f} s ahead of '
                                          f'the node clock (future_stamp_tolerance '
                                          f'{self._values["future_stamp_tolerance"]} s): rejected',
                                          throttle_duration_sec=2.0)
                return
            if self._accepted_stamp is not None and stamp < self._accepted_stamp:
                self._stats.counts['rejected_states'] += 1
                self.get_logger().warning(f'{topic}: stamp {stamp:.3f} s is older than the last '
                                          f'accepted state ({self._accepted_stamp:.3f} s): rejected',
                                          throttle_duration_sec=2.0)
                return
            self._state = (stamp, state, msg.header.frame_id)
            if state is not None:
                self._accepted_stamp = stamp
        if state is None:
            self.get_logger().warning(f'{error}: commanding zero', throttle_duration_sec=2.0)

    def _on_goal(self, msg: PoseStamped):
        try:
            target = Target.from_goal(msg)
        except ros_convert.MessageError as exc:
            self.get_logger().warning(f'{exc}: goal ignored', throttle_duration_sec=2.0)
            return
        if self._new_target(msg, target):
            self.get_logger().info(f'new goal ({target.goal[0]:.2f}, {target.goal[1]:.2f}) in '
                                   f'"{msg.header.frame_id}"')

    def _on_plan(self, msg: Path):
        try:
            target = Target.from_plan(msg)
        except ros_convert.MessageError as exc:
            self.get_logger().warning(f'{exc}: plan ignored', throttle_duration_sec=2.0)
            return
        self._new_target(msg, target)

    def _new_target(self, msg, target: Target | None) -> bool:
        """Drive to ``target`` (None: stop) from now on, unless ``msg`` is the last one again
        (it arrives through both subscriptions); whether it is new."""
        with self._lock:
            if msg == self._last_target:
                return False
            self._last_target, self._target_seq = msg, self._target_seq + 1
            self._target, self._plans.plan = target, None
            if self._nav is not None and target is not None and target.path is None:
                self._nav.new_goal()
        return True

    # ----------------------------------------------------------------- control loop
    def _on_tick(self):
        started = time.perf_counter()
        with self._lock:
            now = self._now()
            stats = self._stats
            stats.counts['ticks'] += 1
            if self._rebuild:
                self._rebuild = False
                self._plans.plan = None
                try:
                    self._solver = self._build_solver()
                except (ValueError, RuntimeError) as exc:
                    self.get_logger().error(f'cannot rebuild the MPC solver: {exc}')
            state_entry, target = self._state, self._target
        budget = self._values['solve_budget'] or 0.8 / self._values['control_rate']
        command, solution = self._decide(now, state_entry, target, started + budget)
        if solution is not None:   # the solve took time: is its state still fresh?
            age = self.get_clock().now().nanoseconds * 1e-9 - state_entry[0]
            if age > self._values['state_timeout']:
                stats.mode = 'stale state'
                self.get_logger().warning(f'the state was {age:.3f} s old when its solve ended '
                                          f'(state_timeout {self._values["state_timeout"]} s): '
                                          'commanding zero', throttle_duration_sec=2.0)
                command, solution = (0.0, 0.0), None
        self._publish_cmd(*command)
        if solution is not None:
            self._publish_prediction(solution, state_entry)
        elapsed = time.perf_counter() - started
        if elapsed > 1.0 / self._values['control_rate']:
            stats.counts['deadline_misses'] += 1
        self._publish_diagnostics(elapsed)

    def _decide(self, now, state_entry, target: Target | None, deadline):
        """(v_cmd, omega_cmd) and the new solution (or None) for this tick; the solve ends by
        ``deadline`` (``time.perf_counter()``) or the shifted previous plan is the command."""
        stats = self._stats
        if state_entry is None:
            stats.mode, stats.state_age = 'no state', math.nan
            return (0.0, 0.0), None
        stamp, state, frame = state_entry
        stats.state_age = now - stamp
        if state is None:
            stats.mode = 'non-finite state'
            return (0.0, 0.0), None
        if abs(stats.state_age) > self._values['state_timeout']:
            stats.mode = 'stale state'
            self.get_logger().warning(f'state is {stats.state_age:.3f} s old (state_timeout '
                                      f'{self._values["state_timeout"]} s): commanding zero',
                                      throttle_duration_sec=2.0)
            return (0.0, 0.0), None
        if target is None:
            stats.mode = 'no goal'
            return (0.0, 0.0), None
        if target.ended:       # done until the next goal or plan
            stats.mode = target.ended
            return (0.0, 0.0), None
        if target.frame and frame and target.frame != frame:
            self.get_logger().warning(f'goal is in "{target.frame}" but the state in "{frame}": '
                                      'no TF here, using the goal as given', throttle_duration_sec=2.0)
        if self._nav is not None and target.path is None:
            # the command goes out by the deadline: the robot moves on from the state until then
            latency = max(stats.state_age, 0.0) + max(deadline - time.perf_counter(), 0.0)
            command, step, stats.mode = self._nav.step(now, state, target.goal, frame, deadline, latency)
            if stats.mode in ('goal reached', 'no progress'):
                target.ended = stats.mode
            elif stats.mode == 'tracking':
                stats.solve_time = step.solve_time
                stats.counts['solves'] += 1
                if step.stop_distance is not None:      # the speed was cut: reported as WARN
                    stats.counts['stop_zone'] += 1
                    stats.mode = 'stop zone'
                return command, step
            return command, None
        settings = self._solver.settings
        reference = target.reference(state, now, settings.horizon, settings.dt,
                                     self._values['reference_speed'])
        if target.at_end(state, now, self._values['goal_tolerance']):
            stats.mode = 'goal reached'
            self._plans.plan, target.ended = None, 'goal reached'
            return (0.0, 0.0), None
        command, solution = self._plans.solve(self._solver, state, reference, self._last_cmd, now,
                                              stamp, self._target_seq, deadline, stats,
                                              self.get_logger(), self._values['state_timeout'])
        if solution is not None:
            stats.mode = 'tracking' if target.path is not None else 'goal'
        return command, solution

    # ----------------------------------------------------------------- outputs
    def _publish_prediction(self, solution: ControlStep, state_entry):
        """The predicted states as a Path in the state's frame; the header and pose stamps are
        the times the states are predicted for (the state's stamp + k dt)."""
        stamp, _, frame = state_entry
        dt = self._solver.settings.dt
        msg = ros_convert.poses_to_path(solution.states[:, :3], ros_convert.sec_to_stamp(stamp),
                                        frame)
        for k, pose in enumerate(msg.poses):
            pose.header.stamp = ros_convert.sec_to_stamp(stamp + k * dt)
        self._path_pub.publish(msg)

    def _publish_cmd(self, v: float, omega: float):
        self._last_cmd = np.array([v, omega])
        msg = ros_convert.twist(v, omega)
        if self._values['stamped_cmd']:
            stamped = TwistStamped()
            stamped.header.stamp = self.get_clock().now().to_msg()
            stamped.header.frame_id = 'base_link'
            stamped.twist = msg
            msg = stamped
        self._cmd_pub.publish(msg)

    def _publish_diagnostics(self, tick_time: float):
        device = self._solver.device.type if self._solver else 'none'
        msg = DiagnosticArray(status=[self._stats.status(
            f'{self.get_name()}: MPC', self.get_fully_qualified_name(), tick_time, device)])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Console script ``mpc_node``: run the node until SIGINT/SIGTERM."""
    return run_node(MpcNode, args, multithreaded=True, description=__doc__, params=SCHEMA)


if __name__ == '__main__':
    raise SystemExit(main())
