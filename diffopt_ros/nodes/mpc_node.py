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
is reported (warning, diagnostics WARN ``unreachable``) and the robot stops. A ``plan`` is
tracked as without navigation. ``model: bicycle`` (an Ackermann car; navigation only) sends the
Twist ``(v, v tan(steer) / model.wheelbase)``. The step is :class:`diffopt_ros.navigation.Navigator`.

All numerics (references, warm start, the solve) are ROS-free (:mod:`diffopt_ros.mpc.receding`,
:mod:`diffopt_ros.navigation`); the node only converts messages and keeps time.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from nav_msgs.msg import OccupancyGrid, Odometry, Path
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import LaserScan

from diffopt_ros.mpc.receding import (
    ControlStep,
    MpcSettings,
    RecedingHorizonSolver,
    advance_plan,
    goal_reference,
    path_reference,
    timed_reference,
)
from diffopt_ros.nodes import ros_convert
from diffopt_ros.nodes.device import available_device
from diffopt_ros.nodes.params import ParameterError, apply_learned_params_file, declare_params
from diffopt_ros.nodes.runner import run_node
from diffopt_ros.params.mpc import NODE_NAME, SCHEMA

PARAMS = SCHEMA.params

#: Parameters whose change needs a new solver (others are read each step).
_SOLVER_PARAMS = frozenset(p.name for p in PARAMS if p.name.split('.')[0] in (
    'model', 'horizon', 'dt', 'weights', 'bounds', 'max_iterations', 'tolerance', 'device'))


@dataclass
class _Stats:
    """Counters and last-step numbers for /diagnostics."""

    ticks: int = 0
    solves: int = 0
    deadline_misses: int = 0
    failures: int = 0
    overruns: int = 0
    rejected_states: int = 0
    future_states: int = 0
    clock_jumps: int = 0
    solve_time: float = 0.0
    iterations: int = 0
    converged: bool = False
    state_age: float = math.nan
    mode: str = 'idle'


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
        self._goal = None           # (x, y)
        self._goal_frame = ''
        self._path = None           # (N, 3) xy yaw
        self._path_times = None     # (N,) s or None
        self._path_progress = 0.0   # m along an untimed path
        self._path_length = 0.0     # m, of the path
        self._reached = False       # the goal (or the path's end) was reached
        self._plan: ControlStep | None = None
        self._last_cmd = np.zeros(2)
        self._plan_time = 0.0       # node time of the tick that started the plan's solve (s)
        self._plan_stamp = 0.0      # stamp of the state the plan starts from (s)
        self._accepted_stamp = None  # stamp of the last accepted state (s)
        self._last_now = -math.inf  # node clock at the last state or tick (s): jumps back?
        self._target_seq = 0        # counts goals and plans: a late solve for an old one is dropped
        self._last_target = None    # the last goal or plan message (one arrives on two subscriptions)
        self._pending = None        # (future, solver, tick time, state stamp, target seq) overrunning
        self._worker = _SolveWorker()
        self._cmd_pub = None
        self._stats = _Stats()
        self._navigator = None      # diffopt_ros.navigation.Navigator (navigation.enabled)
        self._nav_new_goal = False  # a goal_pose to plan at the next tick
        self._nav_points = None     # (N, 2) scan points (map frame) for the next tick
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
        merged = {**self._values, **changes}
        reason = SCHEMA.combination(merged)
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
        torch.set_num_threads(self._values['torch_threads'])
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
        from diffopt_ros.maps import MapError, load_map

        self._global_pub = self.create_lifecycle_publisher(Path, 'plan_global', 10)
        self._pubs.append(self._global_pub)
        if self._values['map_file']:
            try:
                self._set_map(load_map(self._values['map_file']))
            except MapError as exc:
                self.get_logger().error(f'map_file: {exc}')
                return TransitionCallbackReturn.FAILURE
        else:
            self._subs.append(self.create_subscription(
                OccupancyGrid, 'map', self._on_map,
                QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL), callback_group=inputs))
        self._subs.append(self.create_subscription(LaserScan, 'scan', self._on_scan, qos_profile_sensor_data,
                                                   callback_group=inputs))
        return TransitionCallbackReturn.SUCCESS

    def _set_map(self, grid) -> None:
        """A new navigator on ``grid`` (an OccupancyGrid of diffopt_ros.slam); a goal is replanned."""
        from diffopt_ros.navigation import Navigator, NavSettings

        v = self._values
        car = v['model'] == 'bicycle'
        nav = NavSettings(robot='ackermann' if car else 'diff_drive', radius=v['navigation.radius'],
                          inflation=v['navigation.inflation'],
                          obstacle_weight=v['navigation.obstacle_weight'],
                          reference_speed=v['reference_speed'], goal_tolerance=v['goal_tolerance'],
                          wheelbase=v['model.wheelbase'], max_steer=v['bounds.max_steer'],
                          max_steer_rate=v['model.max_steer_rate'], tau_steer=v['model.tau_steer'])
        navigator = Navigator(grid, MpcSettings.from_params(v), nav)
        with self._lock:
            self._navigator = navigator
            self._nav_new_goal = self._goal is not None and self._path is None and not self._reached

    def _on_map(self, msg: OccupancyGrid):
        from diffopt_ros.slam.occupancy import OccupancyGrid as Grid

        info = msg.info
        data = np.asarray(msg.data, dtype=np.int8).reshape(info.height, info.width)
        self._set_map(Grid(data=data, resolution=float(info.resolution),
                           origin=(info.origin.position.x, info.origin.position.y)))

    def _on_scan(self, msg: LaserScan):
        from diffopt_ros.mpc.obstacles import scan_to_world

        ranges, angles = ros_convert.scan_to_ranges(msg)
        with self._lock:
            navigator, entry = self._navigator, self._state
        if navigator is None or entry is None or entry[1] is None:
            return
        points = scan_to_world(entry[1][:3], ranges, angles, navigator.nav.scan_range, stride=2)
        with self._lock:
            self._nav_points = points

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
        self._worker.stop()
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

    # ----------------------------------------------------------------- inputs
    def _now(self) -> float:
        """Node clock (s); a jump back (sim reset, bag loop) forgets the last state, so that
        the stamps of the new time line are not compared with the old one. Call under the lock."""
        now = self.get_clock().now().nanoseconds * 1e-9
        if now < self._last_now:
            self._stats.clock_jumps += 1
            self.get_logger().warning(f'node clock jumped back {self._last_now - now:.3f} s: forgetting '
                                      'the last state', throttle_duration_sec=2.0)
            self._state = self._accepted_stamp = self._pending = None
            self._plan = None
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
                self._stats.future_states += 1
                self.get_logger().warning(f'{topic}: stamp {stamp:.3f} s is {ahead:.3f} s ahead of '
                                          f'the node clock (future_stamp_tolerance '
                                          f'{self._values["future_stamp_tolerance"]} s): rejected',
                                          throttle_duration_sec=2.0)
                return
            if self._accepted_stamp is not None and stamp < self._accepted_stamp:
                self._stats.rejected_states += 1
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
            goal = ros_convert.pose_to_xy_yaw(msg, 'goal_pose')
        except ros_convert.MessageError as exc:
            self.get_logger().warning(f'{exc}: goal ignored', throttle_duration_sec=2.0)
            return
        with self._lock:
            if msg == self._last_target:   # the same message through the durable subscription
                return
            self._last_target, self._target_seq = msg, self._target_seq + 1
            self._goal, self._goal_frame = goal[:2], msg.header.frame_id
            self._path = self._path_times = None
            self._plan, self._reached = None, False
            self._nav_new_goal = True
        self.get_logger().info(f'new goal ({goal[0]:.2f}, {goal[1]:.2f}) in '
                               f'"{msg.header.frame_id}"')

    def _on_plan(self, msg: Path):
        try:
            poses = ros_convert.path_to_poses(msg, 'plan')
        except ros_convert.MessageError as exc:
            self.get_logger().warning(f'{exc}: plan ignored', throttle_duration_sec=2.0)
            return
        stamps = np.array([ros_convert.stamp_to_sec(p.header.stamp) for p in msg.poses])
        timed = len(stamps) > 1 and bool(np.all(np.diff(stamps) > 0))
        with self._lock:
            if msg == self._last_target:   # the same message through the durable subscription
                return
            self._last_target, self._target_seq = msg, self._target_seq + 1
            self._plan, self._reached = None, False
            if len(poses) == 0:
                self._path = self._path_times = self._goal = None
                return
            self._path, self._path_times = poses, (stamps if timed else None)
            self._path_progress = 0.0
            self._path_length = float(np.sum(np.hypot(*np.diff(poses[:, :2], axis=0).T)))
            self._goal, self._goal_frame = poses[-1, :2], msg.header.frame_id

    # ----------------------------------------------------------------- control loop
    def _on_tick(self):
        started = time.perf_counter()
        with self._lock:
            now = self._now()
            stats = self._stats
            stats.ticks += 1
            if self._rebuild:
                self._rebuild = False
                self._plan = None
                try:
                    self._solver = self._build_solver()
                except (ValueError, RuntimeError) as exc:
                    self.get_logger().error(f'cannot rebuild the MPC solver: {exc}')
            state_entry, goal = self._state, self._goal
            path, path_times = self._path, self._path_times
        budget = self._values['solve_budget'] or 0.8 / self._values['control_rate']
        command, solution = self._decide(now, state_entry, goal, path, path_times,
                                         started + budget)
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
            stats.deadline_misses += 1
        self._publish_diagnostics(elapsed)

    def _decide(self, now, state_entry, goal, path, path_times, deadline):
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
        if goal is None:
            stats.mode = 'no goal'
            return (0.0, 0.0), None
        if self._reached:       # done until the next goal or plan
            stats.mode = 'goal reached'
            return (0.0, 0.0), None
        if self._goal_frame and frame and self._goal_frame != frame:
            self.get_logger().warning(f'goal is in "{self._goal_frame}" but the state in "{frame}": '
                                      'no TF here, using the goal as given', throttle_duration_sec=2.0)
        if self._values['navigation.enabled'] and path is None:
            return self._navigate(now, state, goal, deadline)
        settings = self._solver.settings
        if path is not None and path_times is None:
            reference, self._path_progress = path_reference(
                state, path, self._path_progress, settings.horizon, settings.dt,
                self._values['reference_speed'])
        elif path is not None:
            reference = timed_reference(state, path, path_times, now, settings.horizon, settings.dt)
        else:
            reference = goal_reference(state, goal, settings.horizon)
        tolerance = self._values['goal_tolerance']
        if path is None:
            at_end = True
        elif path_times is None:
            at_end = self._path_progress >= self._path_length - tolerance
        else:
            at_end = now >= path_times[-1]
        if at_end and float(np.hypot(*(state[:2] - goal))) <= tolerance:
            stats.mode = 'goal reached'
            self._plan, self._reached = None, True
            return (0.0, 0.0), None
        if self._pending is not None:
            future, solver, tick_time, plan_stamp, seq = self._pending
            if not future.done():
                stats.overruns += 1
                stats.mode = 'overrun'
                return self._fallback(now), None
            self._pending = None
            late = None if future.exception() is not None else future.result()
            if late is not None:
                stats.solve_time, stats.iterations = late.solve_time, late.iterations
                stats.converged = late.converged
            if (late is not None and solver is self._solver and seq == self._target_seq
                    and np.all(np.isfinite(late.controls))):
                self._plan, self._plan_time, self._plan_stamp = late, tick_time, plan_stamp
        warm = None
        if self._plan is not None:
            warm = advance_plan(self._plan.controls, now - self._plan_time, settings.dt)
        future = self._worker.submit(self._solver.solve, state, reference, warm,
                                     self._last_cmd.copy(), deadline)
        try:
            solution = future.result(timeout=max(0.0, deadline - time.perf_counter()))
        except TimeoutError:
            self._pending = (future, self._solver, now, stamp, self._target_seq)
            stats.overruns += 1
            stats.mode = 'overrun'
            self.get_logger().warning('MPC solve overran its budget (solve_budget): previous plan '
                                      'shifted to now, then zero', throttle_duration_sec=2.0)
            return self._fallback(now), None
        except (FloatingPointError, RuntimeError, ValueError) as exc:
            stats.failures += 1
            stats.mode = 'fallback'
            self.get_logger().warning(f'MPC solve failed ({exc}): previous plan shifted, then zero',
                                      throttle_duration_sec=2.0)
            return self._fallback(now), None
        stats.solve_time, stats.iterations = solution.solve_time, solution.iterations
        stats.converged = solution.converged
        stats.solves += 1
        if not np.all(np.isfinite(solution.controls)):
            stats.failures += 1
            stats.mode = 'fallback'
            self.get_logger().warning('MPC solve gave non-finite controls: previous plan shifted, '
                                      'then zero', throttle_duration_sec=2.0)
            return self._fallback(now), None
        stats.mode = 'tracking' if path is not None else 'goal'
        self._plan, self._plan_time, self._plan_stamp = solution, now, stamp
        return (float(solution.controls[0, 0]), float(solution.controls[0, 1])), solution

    def _fallback(self, now: float) -> tuple[float, float]:
        """The previous plan shifted to ``now`` while it lasts and its state is not older than
        ``state_timeout``, else zero."""
        plan = self._plan
        if plan is None or now - self._plan_stamp > self._values['state_timeout']:
            return (0.0, 0.0)
        shifted = advance_plan(plan.controls, now - self._plan_time, self._solver.settings.dt,
                                 hold_last=False)
        return (float(shifted[0, 0]), float(shifted[0, 1]))

    def _navigate(self, now, state, goal, deadline):
        """(v_cmd, omega_cmd) and the navigator's step (or None) for a goal_pose with navigation;
        the solve ends by ``deadline`` (``time.perf_counter()``), as the tracking solve does."""
        stats = self._stats
        with self._lock:
            navigator, new_goal, points = self._navigator, self._nav_new_goal, self._nav_points
            self._nav_new_goal, self._nav_points = False, None
        if navigator is None:
            stats.mode = 'no map'
            self.get_logger().warning('navigation: no map yet (map_file or the map topic): commanding zero',
                                      throttle_duration_sec=2.0)
            return (0.0, 0.0), None
        if points is not None:
            navigator.set_scan_points(points)
        if new_goal:
            plan = navigator.set_goal(state[:2], goal)
            self._publish_global_plan(navigator)
            if not plan.reachable:
                self.get_logger().warning(f'goal ({goal[0]:.2f}, {goal[1]:.2f}) is unreachable: '
                                          f'{plan.reason}; stopping')
        step = navigator.step(state, now, deadline)
        if step.replanned:
            self._publish_global_plan(navigator)
        stats.mode = step.mode
        if step.mode == 'goal reached':
            self._reached = True
        if step.mode != 'tracking':
            return (0.0, 0.0), None
        stats.solve_time, stats.solves = step.solve_time, stats.solves + 1
        return (float(step.command[0]), float(step.command[1])), step

    def _publish_global_plan(self, navigator):
        """The navigator's global path on plan_global (empty when unreachable), in the state's frame."""
        plan = navigator.plan
        with self._lock:
            frame = self._state[2] if self._state is not None else ''
        path = plan.path if plan is not None and plan.reachable else np.zeros((0, 2))
        poses = np.column_stack([path, np.zeros(len(path))])
        self._global_pub.publish(ros_convert.poses_to_path(poses, self.get_clock().now().to_msg(),
                                                           frame or 'map'))

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
        stats = self._stats
        level = DiagnosticStatus.OK
        if stats.mode in ('stale state', 'non-finite state', 'fallback', 'overrun', 'unreachable',
                          'no map'):
            level = DiagnosticStatus.WARN
        status = ros_convert.diagnostic_status(
            f'{self.get_name()}: MPC', self.get_fully_qualified_name(), level, stats.mode, {
                'solve_time_ms': stats.solve_time * 1e3, 'tick_time_ms': tick_time * 1e3,
                'iterations': stats.iterations, 'converged': stats.converged,
                'deadline_misses': stats.deadline_misses, 'failures': stats.failures,
                'overruns': stats.overruns, 'rejected_states': stats.rejected_states,
                'future_states': stats.future_states, 'clock_jumps': stats.clock_jumps,
                'state_age_s': stats.state_age,
                'ticks': stats.ticks, 'solves': stats.solves,
                'device': self._solver.device.type if self._solver else 'none'})
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


class _SolveWorker:
    """One daemon thread that runs solves handed to it, one at a time, so that the control
    loop can wait for a solve with a timeout and publish on time when it overruns. (A daemon
    thread: a solve still running when the process ends does not hold the exit up.)"""

    def __init__(self):
        self._jobs: list = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, fn, *args) -> Future:
        """Run ``fn(*args)`` on the worker thread (after the jobs before it)."""
        future = Future()
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name='mpc-solve', daemon=True)
                self._thread.start()
            self._jobs.append((future, fn, args))
            self._wake.notify()
        return future

    def _run(self):
        while True:
            with self._wake:
                while not self._jobs and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    return
                future, fn, args = self._jobs.pop(0)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting tick
                future.set_exception(exc)

    def stop(self, timeout: float = 5.0):
        """End the thread after the solve in progress (which ends at its deadline) and wait
        for it up to ``timeout`` s (torch must not be running when the interpreter exits)."""
        with self._wake:
            self._stopped = True
            for future, _, _ in self._jobs:
                future.cancel()
            self._jobs.clear()
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)


def main(args: list[str] | None = None) -> int:
    """Console script ``mpc_node``: run the node until SIGINT/SIGTERM."""
    return run_node(MpcNode, args, multithreaded=True, description=__doc__, params=SCHEMA)


if __name__ == '__main__':
    raise SystemExit(main())
