"""``diffopt-ros demo``: the closed loop in one process, then record → learn → relaunch.

Phase 1 runs ``sim_node``, ``slam_node``, ``mpc_node`` and ``recorder_node`` in one process
(rclpy's EventsExecutor: :func:`~diffopt_ros.nodes.executors.in_process_executor`; sim time;
in its own DDS domain) and
drives a course of goals (``config/demo.yaml``) through the loop world; the bag goes to
``<out>/before``. The simulator runs in lock-step with the controller (``sim_node``'s
``wait_for_cmd``): simulated time advances as fast as the MPC keeps up, up to the course's
real-time factor. Phase 2 learns
the MPC's dynamics (and the SLAM weights) from that bag with ``diffopt_ros.learn`` and writes the
parameter YAML files to ``<out>/learned``. Phase 3 drives the same course again with the learned
dynamics (``<out>/after_dynamics``: same SLAM weights as before, so the MPC rows compare
controllers on the same estimator), then with both learned files (``<out>/after``), and prints
the before/after table. Each phase prints a summary
and saves a plot (PNG) of the world, ground truth, odometry, SLAM estimate and plans.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from diffopt_ros import paths
from diffopt_ros.learn.course import Leg, estimate_jumps, tracking_rmse  # noqa: F401 (re-exported)
from diffopt_ros.params import schema_for


class DemoError(RuntimeError):
    """The demo cannot run (bad course file, a node that does not start, ...)."""


# --------------------------------------------------------------------------- course
@dataclass
class Course:
    """What ``config/demo.yaml`` describes (units: m, s, m/s)."""

    world: str = 'loop'
    seed: int = 0
    real_time_factor: float = 0.0
    state_topic: str = '/slam/odom'
    goals: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    speed: float = 0.5
    turn_rate: float = 0.8
    reach_tolerance: float = 0.4
    goal_timeout: float = 25.0
    settle_time: float = 1.0
    learn: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)


def load_course(path: str | Path) -> Course:
    """Read a demo course YAML file (see ``config/demo.yaml``).

    Raises:
        DemoError: unreadable file, unknown key or a value of the wrong kind (file and key named).
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DemoError(f'{path}: cannot read the demo course: {exc}') from exc
    if not isinstance(data, dict):
        raise DemoError(f'{path}: expected a mapping')
    known = {'world', 'seed', 'real_time_factor', 'state_topic', 'course', 'learn', 'overrides'}
    course_keys = {'goals', 'speed', 'turn_rate', 'reach_tolerance', 'goal_timeout',
                   'settle_time'}
    unknown = (set(data) - known | set(data.get('course') or {}) - course_keys
               | set(data.get('learn') or {}) - {'dynamics_epochs', 'slam'})
    if unknown:
        raise DemoError(f'{path}: unknown key(s) {sorted(unknown)}')
    flat = {k: v for k, v in data.items() if k not in ('course', 'learn', 'overrides')}
    flat.update(data.get('course') or {})
    try:
        course = Course(**{k: v for k, v in flat.items() if k != 'goals'},
                        learn=dict(data.get('learn') or {}),
                        overrides={node: dict(values or {}) for node, values
                                   in (data.get('overrides') or {}).items()})
        unknown_nodes = set(course.overrides) - {'sim_node', 'slam_node', 'mpc_node',
                                                 'recorder_node'}
        if unknown_nodes:
            raise ValueError(f'overrides: unknown node(s) {sorted(unknown_nodes)}')
        course.overrides = {node: schema_for(node).check(values, f'overrides.{node}')
                            for node, values in course.overrides.items()}
        course.goals = np.asarray(flat.get('goals') or [], dtype=np.float64).reshape(-1, 2)
        for name in ('real_time_factor', 'speed', 'turn_rate', 'reach_tolerance', 'goal_timeout',
                     'settle_time'):
            value = float(getattr(course, name))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f'{name} = {value} must be a finite number >= 0')
            setattr(course, name, value)
        if course.speed <= 0 or course.turn_rate <= 0:
            raise ValueError('course.speed and course.turn_rate must be > 0')
    except (TypeError, ValueError) as exc:
        raise DemoError(f'{path}: {exc}') from exc
    return course


# --------------------------------------------------------------------------- metrics
def align_to_first_pose(t_est: np.ndarray, est: np.ndarray, t_gt: np.ndarray,
                        gt: np.ndarray) -> np.ndarray:
    """Poses ``est`` ``(N, 3)`` ``[x, y, yaw]`` moved rigidly so their first pose is the ground
    truth's ``(M, 3)`` at that time (the standard alignment for odometry that starts at zero)."""
    g = _interp_poses(t_gt, gt, t_est[:1])[0]
    e = est[0]
    dyaw = g[2] - e[2]
    c, s = math.cos(dyaw), math.sin(dyaw)
    rel = est[:, :2] - e[:2]
    out = np.empty_like(est[:, :3])
    out[:, 0] = g[0] + c * rel[:, 0] - s * rel[:, 1]
    out[:, 1] = g[1] + s * rel[:, 0] + c * rel[:, 1]
    out[:, 2] = est[:, 2] + dyaw
    return out


def _interp_poses(t: np.ndarray, poses: np.ndarray, t_query: np.ndarray) -> np.ndarray:
    """Poses ``(N, 3)`` at times ``t`` interpolated at ``t_query`` (yaw unwrapped first)."""
    yaw = np.unwrap(poses[:, 2])
    return np.stack([np.interp(t_query, t, poses[:, 0]), np.interp(t_query, t, poses[:, 1]),
                     np.interp(t_query, t, yaw)], axis=-1)


def position_rmse(t_est: np.ndarray, est: np.ndarray, t_gt: np.ndarray, gt: np.ndarray) -> float:
    """Absolute trajectory error: RMSE (m) of the positions ``est`` ``(N, >=2)`` against the
    ground truth interpolated at their times (samples outside the ground truth's span dropped)."""
    inside = (t_est >= t_gt[0]) & (t_est <= t_gt[-1])
    if not np.any(inside):
        return math.nan
    ref = _interp_poses(t_gt, gt, t_est[inside])
    return float(np.sqrt(np.mean(np.sum((est[inside, :2] - ref[:, :2]) ** 2, axis=1))))


# --------------------------------------------------------------------------- results
@dataclass
class Trace:
    """Times ``(N,)`` (s, sim time) and rows ``(N, k)`` of one logged quantity."""

    t: list = field(default_factory=list)
    rows: list = field(default_factory=list)

    def add(self, t: float, row) -> None:
        self.t.append(t)
        self.rows.append(row)

    def arrays(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``(t (N,), rows (N, width))`` as float64 arrays."""
        return (np.asarray(self.t, dtype=np.float64),
                np.asarray(self.rows, dtype=np.float64).reshape(-1, width))


@dataclass
class RunResult:
    """Metrics of one drive of the course (m, s, ms)."""

    name: str
    bag: Path | None
    goals_reached: int
    goals_total: int
    tracking_rmse: float
    true_tracking_rmse: float
    tracking_rmse_all: float
    jumps: list
    prediction_rmse: float
    odom_ate: float
    slam_ate: float
    final_errors: list
    sim_time: float
    wall_time: float
    control_rate: float
    solve_ms_p50: float
    solve_ms_p99: float
    deadline_misses: int
    collisions: int = 0
    plot: Path | None = None

    def summary(self) -> str:
        """Human-readable summary (several lines)."""
        improvement = (1.0 - self.slam_ate / self.odom_ate) * 100 if self.odom_ate > 0 else math.nan
        return '\n'.join([
            f'== {self.name}: {self.goals_reached}/{self.goals_total} goals reached in '
            f'{self.sim_time:.1f} s sim time ({self.wall_time:.1f} s wall, real-time factor '
            f'{self.sim_time / max(self.wall_time, 1e-9):.1f})',
            f'   MPC tracking error (RMSE of the estimate the MPC closes the loop on to the timed '
            f'reference, without the {JUMP_SETTLE:g} s after each of {len(self.jumps)} estimate '
            f'corrections > {JUMP_THRESHOLD:g} m'
            + (f': {", ".join(f"{size:.2f} m at {at:.0f} s" for at, size in self.jumps)}'
               if self.jumps else '') + f'): {self.tracking_rmse:.3f} m; with them '
            f'{self.tracking_rmse_all:.3f} m; true position to reference: '
            f'{self.true_tracking_rmse:.3f} m',
            f'   MPC prediction error {PREDICTION_AHEAD:g} s ahead (RMSE, on the estimate): '
            f'{self.prediction_rmse:.3f} m',
            f'   final distance to each goal (true): '
            f'{", ".join(f"{e:.2f}" for e in self.final_errors)} m',
            f'   absolute trajectory error (RMSE): SLAM {self.slam_ate:.3f} m vs raw odometry '
            f'{self.odom_ate:.3f} m ({improvement:.0f}% lower)',
            f'   control loop: {self.control_rate:.1f} Hz achieved (sim time), solve time p50 '
            f'{self.solve_ms_p50:.1f} ms, p99 {self.solve_ms_p99:.1f} ms, '
            f'{self.deadline_misses} deadline misses; {self.collisions} simulator steps against an '
            'obstacle',
            f'   bag: {self.bag}' + (f'   plot: {self.plot}' if self.plot else ''),
        ])


def comparison_table(before: RunResult, *after: tuple[str, RunResult]) -> str:
    """The before/after learning table (Markdown): ``before``, then each ``(label, run)`` of
    ``after`` with its change against ``before``."""
    def cell(a, b, unit):
        change = (b / a - 1.0) * 100 if a and math.isfinite(a) and a != 0 else math.nan
        return f'{b:.3f} {unit} ({change:+.0f}%)'

    def row(name, key, unit='m'):
        first = getattr(before, key)
        return (f'| {name} | {first:.3f} {unit} | '
                + ' | '.join(cell(first, getattr(run, key), unit) for _, run in after) + ' |')
    return '\n'.join([
        '| metric | before learning | ' + ' | '.join(label for label, _ in after) + ' |',
        '|---|---|' + '---|' * len(after),
        row(f'MPC tracking error (RMSE; without {JUMP_SETTLE:g} s after estimate corrections '
            f'> {JUMP_THRESHOLD:g} m)', 'tracking_rmse'),
        row('MPC tracking error (RMSE, all samples)', 'tracking_rmse_all'),
        row('true position to reference (RMSE)', 'true_tracking_rmse'),
        row(f'MPC prediction error {PREDICTION_AHEAD:g} s ahead (RMSE)', 'prediction_rmse'),
        row('SLAM ATE (RMSE)', 'slam_ate'),
        row('raw odometry ATE (RMSE)', 'odom_ate'),
        f'| goals reached | {before.goals_reached}/{before.goals_total} | '
        + ' | '.join(f'{run.goals_reached}/{run.goals_total}' for _, run in after) + ' |',
    ])


def plot_run(path: Path, world, traces: dict, legs: list, predicted: list, title: str) -> Path:
    """Save a PNG of walls, ground truth, odometry, SLAM estimate, legs and MPC predictions.

    Args:
        path: PNG file to write.
        world: :class:`diffopt_ros.sim.World` (walls ``(M, 4)``, discs ``(K, 3)``).
        traces: ``{'ground truth' | 'odometry' | 'SLAM': (N, 2) positions in the map frame}``.
        legs: the course legs (their start and goal points).
        predicted: MPC predicted paths, each ``(T + 1, 2)``.
        title: figure title.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    fig, ax = plt.subplots(figsize=(10, 6.5))
    ax.add_collection(LineCollection(world.walls.reshape(-1, 2, 2), colors='0.2', linewidths=1.5))
    for x, y, radius in world.discs:
        ax.add_patch(plt.Circle((x, y), radius, color='0.5'))
    for i, pred in enumerate(predicted):
        ax.plot(pred[:, 0], pred[:, 1], color='tab:orange', lw=0.6, alpha=0.5,
                label='MPC predictions' if i == 0 else None)
    styles = {'ground truth': ('k', '-'), 'odometry': ('tab:red', '--'),
              'SLAM': ('tab:blue', '-')}
    for name, xy in traces.items():
        if len(xy):
            color, style = styles.get(name, ('tab:green', '-'))
            ax.plot(xy[:, 0], xy[:, 1], style, color=color, lw=1.3, label=name)
    for i, leg in enumerate(legs):
        ax.plot(*np.stack([leg.start, leg.goal]).T, ':', color='tab:green', lw=1,
                label='planned legs' if i == 0 else None)
        ax.plot(*leg.goal, 'o', mfc='none', mec='tab:green', ms=9)
    ax.set_aspect('equal')
    ax.set_xlabel('x (m, map)')
    ax.set_ylabel('y (m, map)')
    ax.set_title(title)
    ax.legend(loc='upper right', fontsize=8)
    ax.autoscale_view()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the course driver
class _Driver:
    """Publishes the course (goal, then a timed /plan per leg) and logs what the demo measures.

    Wraps an rclpy node created in the demo's context; all times are sim time (s).
    """

    def __init__(self, node, course: Course, goals_map: np.ndarray, to_estimate, from_estimate):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry, Path
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

        self.node, self.course = node, course
        self.goals = goals_map
        self.to_estimate, self.from_estimate = to_estimate, from_estimate
        self.traces = {'ground truth': Trace(), 'odometry': Trace(), 'SLAM': Trace(),
                       'estimate': Trace()}
        self.solve_ms, self.predicted = [], []
        self.predictions, self.predictions_seen = Trace(), 0
        self.mpc_status: tuple[float, str, dict] | None = None
        self.legs: list[tuple[Leg, float]] = []
        self.final_errors: list[float] = []
        self.reached = 0
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
        self._plan_pub = node.create_publisher(Path, '/plan', durable)
        sensor = qos_profile_sensor_data
        node.create_subscription(Odometry, '/ground_truth/odom',
                                 lambda m: self._log('ground truth', m), sensor)
        node.create_subscription(Odometry, '/odom', lambda m: self._log('odometry', m), sensor)
        node.create_subscription(Odometry, '/slam/odom', lambda m: self._log('SLAM', m), sensor)
        if course.state_topic not in ('/odom', '/slam/odom'):
            node.create_subscription(Odometry, course.state_topic,
                                     lambda m: self._log('estimate', m), sensor)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        node.create_subscription(Path, '/mpc/predicted_path', self._on_predicted, 10)
        node.create_timer(0.1, self._step)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _log(self, name: str, msg) -> None:
        from diffopt_ros.nodes import ros_convert
        try:
            state = ros_convert.odometry_to_state(msg, name)
        except ros_convert.MessageError:
            return
        t = ros_convert.stamp_to_sec(msg.header.stamp)
        with self.lock:
            self.traces[name].add(t, state[:3])
            topic = {'odometry': '/odom', 'SLAM': '/slam/odom'}.get(name)
            if topic == self.course.state_topic:
                self.traces['estimate'].add(t, state[:3])

    def _on_diagnostics(self, msg) -> None:
        from diffopt_ros.nodes import ros_convert
        for status in msg.status:
            if status.name.startswith('mpc_node'):
                values = {kv.key: kv.value for kv in status.values}
                t = ros_convert.stamp_to_sec(msg.header.stamp)
                with self.lock:
                    self.mpc_status = (t, status.message, values)
                    if status.message in ('goal', 'tracking'):
                        self.solve_ms.append(float(values['solve_time_ms']))

    def _on_predicted(self, msg) -> None:
        """Keep where the MPC predicts the robot ``PREDICTION_AHEAD`` s ahead (pose stamps are
        prediction times), and every 20th whole path for the plot."""
        from diffopt_ros.nodes import ros_convert
        if not msg.poses:
            return
        stamps = np.array([ros_convert.stamp_to_sec(p.header.stamp) for p in msg.poses])
        k = int(np.searchsorted(stamps, stamps[0] + PREDICTION_AHEAD - 1e-6))
        if k < len(stamps):
            pose = msg.poses[k].pose.position
            with self.lock:
                self.predictions.add(stamps[k], [pose.x, pose.y])
        if len(self.predicted) < 10_000 and self.predictions_seen % 20 == 0:
            self.predicted.append(self.from_estimate(ros_convert.path_to_poses(msg))[:, :2])
        self.predictions_seen += 1

    def _estimate(self) -> np.ndarray | None:
        trace = self.traces['estimate']
        return np.asarray(trace.rows[-1]) if trace.rows else None

    def _step(self) -> None:
        from diffopt_ros.nodes import ros_convert
        now = self.now()
        with self.lock:
            estimate = self._estimate()
            status = self.mpc_status
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
            if self.index + 1 < len(self.goals):
                self._start_leg(self.index + 1, now, estimate)
            else:
                self.finished = True

    def _start_leg(self, index: int, now: float, estimate: np.ndarray) -> None:
        from diffopt_ros.nodes import ros_convert
        self.index = index
        start = self.from_estimate(estimate[None, :3])[0]
        if index > 0:   # the course, not where the robot happens to be: same legs every run
            start[:2] = self.goals[index - 1]
        goal = self.goals[index]
        heading = math.atan2(goal[1] - start[1], goal[0] - start[0])
        turn = abs(math.remainder(heading - start[2], 2 * math.pi)) / self.course.turn_rate
        self.leg = Leg(start=start[:2], goal=goal, t0=now + 0.1, speed=self.course.speed,
                       turn=turn)
        goal = self.to_estimate(np.array([[*self.goals[index], 0.0]]))[0]
        self._goal_pub.publish(ros_convert.xy_yaw_to_pose(
            goal, self.node.get_clock().now().to_msg(), self._frame))
        self._plan_pending = True

    def _finish_leg(self, now: float) -> None:
        with self.lock:
            truth = self.traces['ground truth'].rows[-1] if self.traces['ground truth'].rows \
                else [math.inf, math.inf]
        error = float(np.hypot(*(np.asarray(truth[:2]) - self.leg.goal)))
        self.final_errors.append(error)
        self.reached += error <= self.course.reach_tolerance
        self.legs.append((self.leg, now))

    def expected_duration(self) -> float:
        """Rough sim time of the whole course (s): settle + legs at course speed + turns."""
        start = self.from_estimate(np.zeros((1, 3)))[:, :2]    # the estimate's origin
        points = np.vstack([start, self.goals])
        length = float(np.sum(np.hypot(*np.diff(points, axis=0).T)))
        return self.course.settle_time + length / self.course.speed + 3.0 * len(self.goals)


def _se2_maps(origin) -> tuple:
    """``(to_frame, from_frame)`` for a frame whose origin is ``origin`` ``[x, y, yaw]`` in the
    map. Both map ``(N, >=3)`` poses to ``(N, 3)``."""
    ox, oy, oyaw = (float(v) for v in origin)
    c, s = math.cos(oyaw), math.sin(oyaw)

    def to_frame(poses):
        poses = np.asarray(poses, dtype=np.float64)
        dx, dy = poses[:, 0] - ox, poses[:, 1] - oy
        return np.column_stack([c * dx + s * dy, -s * dx + c * dy, poses[:, 2] - oyaw])

    def from_frame(poses):
        poses = np.asarray(poses, dtype=np.float64)
        return np.column_stack([ox + c * poses[:, 0] - s * poses[:, 1],
                                oy + s * poses[:, 0] + c * poses[:, 1], poses[:, 2] + oyaw])
    return to_frame, from_frame


# --------------------------------------------------------------------------- one drive
CONFIG_FILES = ('sim.yaml', 'slam.yaml', 'mpc.yaml', 'recorder.yaml')
PREDICTION_AHEAD = 1.0   # s: the MPC prediction compared with what then happened
#: A correction of the estimate the MPC follows (SLAM's loop closure at the end of the lap):
#: over JUMP_THRESHOLD m of motion the wheels did not make between two consecutive estimates.
#: The MPC tracking error leaves out the JUMP_SETTLE s after each (the MPC's 2 s horizon plus
#: 1 s): how far the estimate jumps is SLAM's drift, not the controller's tracking; the table
#: shows the error with them too.
JUMP_THRESHOLD = 0.1     # m
JUMP_SETTLE = 3.0        # s


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
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from diffopt_ros.nodes.executors import ExecutorThread, in_process_executor
    from diffopt_ros.nodes.mpc_node import MpcNode
    from diffopt_ros.nodes.params import ParameterError
    from diffopt_ros.nodes.recorder_node import RecorderNode
    from diffopt_ros.nodes.sim_node import SimNode
    from diffopt_ros.nodes.slam_node import SlamNode
    from diffopt_ros.progress import Progress
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
            driver = _Driver(driver_node, course, goals, *_se2_maps(origin))
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
    result = _results(name, course, driver, world, recorder.run_dir, out_dir / f'{name}.png',
                      sim_time, wall_time)
    result.collisions = collisions
    return result


def _results(name, course, driver: _Driver, world, bag, plot_path, sim_time, wall_time):
    """Metrics and plot of a finished drive."""
    t_gt, gt = driver.traces['ground truth'].arrays(3)
    aligned, ate = {}, {}
    for key in ('odometry', 'SLAM'):
        t, poses = driver.traces[key].arrays(3)
        if len(t) and len(t_gt):
            # odometry starts at zero: aligned at its first pose; SLAM is in the world's map
            # (slam_node's initial_pose): as recorded, as evo_ape reads it from the bag
            aligned[key] = align_to_first_pose(t, poses, t_gt, gt) if key == 'odometry' else poses
            ate[key] = position_rmse(t, aligned[key], t_gt, gt)
        else:
            aligned[key], ate[key] = np.zeros((0, 3)), math.nan
    t_est, est = driver.traces['estimate'].arrays(3)
    est_map = driver.from_estimate(est)
    t_odom, odom = driver.traces['odometry'].arrays(3)
    jumps = estimate_jumps(t_est, est_map, t_odom, odom, JUMP_THRESHOLD)
    settling = [(at, at + JUMP_SETTLE) for at, _ in jumps]
    t_pred, pred = driver.predictions.arrays(2)
    status = driver.mpc_status[2] if driver.mpc_status else {}
    ticks = float(status.get('ticks', 0))
    solve = np.asarray(driver.solve_ms) if driver.solve_ms else np.array([math.nan])
    plot = plot_run(plot_path, world, {'ground truth': gt[:, :2], 'odometry': aligned['odometry'],
                                       'SLAM': aligned['SLAM']},
                    [leg for leg, _ in driver.legs], driver.predicted,
                    f'{name}: {driver.reached}/{len(driver.goals)} goals, ATE SLAM '
                    f'{ate["SLAM"]:.2f} m vs odometry {ate["odometry"]:.2f} m')
    return RunResult(
        name=name, bag=bag, goals_reached=driver.reached, goals_total=len(driver.goals),
        tracking_rmse=tracking_rmse(driver.legs, t_est, est_map, settling),
        tracking_rmse_all=tracking_rmse(driver.legs, t_est, est_map), jumps=jumps,
        true_tracking_rmse=tracking_rmse(driver.legs, t_gt, gt),
        prediction_rmse=position_rmse(t_pred, pred, t_est, est) if len(t_est) else math.nan,
        odom_ate=ate['odometry'],
        slam_ate=ate['SLAM'], final_errors=driver.final_errors, sim_time=sim_time,
        wall_time=wall_time, control_rate=ticks / max(sim_time, 1e-9),
        solve_ms_p50=float(np.percentile(solve, 50)), solve_ms_p99=float(np.percentile(solve, 99)),
        deadline_misses=int(status.get('deadline_misses', 0)), plot=plot)


# --------------------------------------------------------------------------- learning
def learn_from_run(course: Course, bag: Path, learned_dir: Path,
                   show_progress: bool = True) -> dict[str, Path]:
    """Learn from the recorded run with :mod:`diffopt_ros.learn.api`.

    The MPC's dynamics (actuator gains and lags) by system identification on the recorded
    commands and the states the MPC closed its loop on; the SLAM factor weights (against the
    simulator's ground truth) when ``learn.slam`` is true in the course file.

    Returns:
        ``{'mpc_node': yaml, 'slam_node': yaml}``: the learned parameter files written.

    Raises:
        DemoError: learning is not available in this tree or failed (the message says why).
    """
    try:
        from diffopt_ros.learn import api
    except ImportError as exc:
        raise DemoError(f'diffopt_ros.learn is not available: {exc}') from exc
    written = {}
    settings = course.learn
    try:
        # From the states the MPC itself saw (as on a robot: no ground truth needed).
        dynamics = api.learn_dynamics([bag], learned_dir / 'dynamics', method='sysid',
                                      epochs=settings.get('dynamics_epochs'),  # None: API's
                                      state_topic=course.state_topic, progress=show_progress)
    except (ValueError, RuntimeError, OSError) as exc:
        raise DemoError(f'learning the dynamics from {bag} failed: {exc}') from exc
    written['mpc_node'] = dynamics.yaml_path
    print(f'learned dynamics in {dynamics.metrics["seconds"]:.1f} s ({dynamics.yaml_path}): '
          + ', '.join(f'{k} {v:.3f}' for k, v in dynamics.params.items()))
    if settings.get('slam', True) and hasattr(api, 'learn_slam'):
        try:
            slam = api.learn_slam([bag], learned_dir / 'slam', progress=show_progress)
        except (ValueError, RuntimeError, OSError) as exc:
            print(f'learning the SLAM weights failed, keeping the defaults: {exc}')
        else:
            written['slam_node'] = slam.yaml_path
            print(f'learned SLAM weights in {slam.metrics["seconds"]:.1f} s ({slam.yaml_path}): '
                  + ', '.join(f'{k} {v:.4g}' for k, v in slam.params.items()))
    return written


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='diffopt-ros demo',
        description='Closed-loop demo: sim + SLAM + MPC + recorder in one process on sim time, '
                    'driving a course of goals; then learn the MPC dynamics and SLAM weights from '
                    'the recorded bag and drive the course again with the learned dynamics, then with the '
                    'learned dynamics and SLAM weights.',
        epilog='Writes <out>/before/ (bag), <out>/before.png, <out>/learned/*.yaml, '
               '<out>/after_dynamics/ (learned dynamics), <out>/after/ (learned dynamics and '
               'SLAM weights) and their plots.')
    parser.add_argument('--out', type=Path, default=None,
                        help='output folder (default: runs/demo_<date>-<time>; never overwritten)')
    parser.add_argument('--course', type=Path, default=None,
                        help='course file (default: config/demo.yaml)')
    parser.add_argument('--world', default=None,
                        help="world name or YAML; the course becomes that world's route")
    parser.add_argument('--rtf', type=float, default=None,
                        help='cap on the real-time factor (simulated seconds per wall second); '
                             '0: as fast as the control loop keeps up (default from the course)')
    parser.add_argument('--seed', type=int, default=None, help='simulator noise seed')
    parser.add_argument('--state-topic', default=None, choices=('/slam/odom', '/odom'),
                        help='what the MPC closes the loop on (default from the course)')
    parser.add_argument('--no-learn', action='store_true',
                        help='only record and summarise (skip learning and the second drive)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def _new_folder(path: Path) -> Path:
    """``path``, or ``path_1``, ``path_2``, ... if it exists (runs are never overwritten)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f'{path.name}_{n}')
    candidate.mkdir(parents=True)
    return candidate


def main(argv: list[str] | None = None) -> int:
    """``diffopt-ros demo``: record → summary + plot → learn → relaunch → before/after table."""
    args = _parser().parse_args(argv)
    try:
        course = load_course(args.course or paths.config_path('demo.yaml'))
    except DemoError as exc:
        print(f'diffopt-ros demo: {exc}', file=sys.stderr)
        return 2
    if args.world:   # the course's goals belong to its world: drive the new world's route
        course.world, course.goals = args.world, np.zeros((0, 2))
    from diffopt_ros.sim import World, WorldError
    try:   # before anything is written: a mistyped world lists the worlds there are
        World.load(course.world)
    except WorldError as exc:
        print(f'diffopt-ros demo: {exc}', file=sys.stderr)
        return 2
    if args.rtf is not None:
        if not args.rtf >= 0:
            print('diffopt-ros demo: --rtf must be >= 0', file=sys.stderr)
            return 2
        course.real_time_factor = args.rtf
    if args.seed is not None:
        course.seed = args.seed
    if args.state_topic:
        course.state_topic = args.state_topic
    import torch
    torch.set_num_threads(1)   # small problems: one intra-op thread is faster (DESIGN.md §3)
    out = _new_folder(args.out or Path('runs') / time.strftime('demo_%Y%m%d-%H%M%S'))
    cap = f'at most {course.real_time_factor:g}x' if course.real_time_factor else 'uncapped'
    print(f'diffopt-ros demo: ROS domain {demo_domain_id()}, world {course.world}, sim time {cap} '
          '(lock-step with the MPC), '
          f'MPC on {course.state_topic}; output in {out}')
    phases: dict[str, float] = {}
    began = time.monotonic()
    try:
        before = run_course(course, 'before', out, show_progress=not args.no_progress)
        phases['record'] = before.wall_time
        print(before.summary())
        if args.no_learn:
            _print_phases(phases, began)
            return 0 if before.goals_reached == before.goals_total else 1
        started = time.monotonic()
        try:
            learned = learn_from_run(course, before.bag, out / 'learned',
                                     show_progress=not args.no_progress)
        except DemoError as exc:
            print(f'learning skipped: {exc}')
            return 0 if before.goals_reached == before.goals_total else 1
        phases['learn'] = time.monotonic() - started
        # The learned dynamics alone first (SLAM as before), so the MPC rows compare controllers
        # on the same estimator; then both learned files, as a relaunch with them would run.
        runs = [('learned dynamics', run_course(course, 'after_dynamics', out,
                                                mpc_learned=learned['mpc_node'],
                                                show_progress=not args.no_progress))]
        phases['relaunch (dynamics)'] = runs[0][1].wall_time
        print(runs[0][1].summary())
        if learned.get('slam_node'):
            runs.append(('learned dynamics + SLAM weights',
                         run_course(course, 'after', out, mpc_learned=learned['mpc_node'],
                                    slam_learned=learned['slam_node'],
                                    show_progress=not args.no_progress)))
            phases['relaunch (dynamics + SLAM)'] = runs[-1][1].wall_time
            print(runs[-1][1].summary())
        print('\nBefore / after learning (same course, same seed; change against before):')
        print(comparison_table(before, *runs))
        relaunch = ' '.join(f'{key}_learned_params:={path}' for key, path in
                            (('mpc', learned.get('mpc_node')), ('slam', learned.get('slam_node')))
                            if path)
        print(f'\nThe same on ROS 2: ros2 launch diffopt_ros sim_demo.launch.py {relaunch}')
        _print_phases(phases, began)
    except DemoError as exc:
        print(f'diffopt-ros demo: {exc}', file=sys.stderr)
        return 1
    return 0 if all(run.goals_reached == run.goals_total for _, run in runs) else 1


def _print_phases(phases: dict[str, float], began: float) -> None:
    """One line: wall time (s) of each phase and of the whole command after start-up."""
    parts = ', '.join(f'{name} {seconds:.0f} s' for name, seconds in phases.items())
    print(f'wall time: {parts}; total {time.monotonic() - began:.0f} s (after start-up)')

if __name__ == '__main__':
    raise SystemExit(main())
