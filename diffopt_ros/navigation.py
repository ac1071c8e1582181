"""Goal-to-goal navigation without ROS: global path on the grid, obstacle-aware MPC tracking it.

:class:`Navigator` is one robot's receding-horizon step with obstacles: given a goal it plans a
path on the inflated occupancy grid (:class:`~diffopt_ros.planning.GridPlanner`; an unreachable
goal is reported and the robot stops), and each tick it solves the MPC (tracking the path at
``reference_speed``, :func:`~diffopt_ros.mpc.receding.path_reference`) with the clearance cost of
the map's signed-distance field and the latest scan points
(:class:`~diffopt_ros.mpc.obstacles.ObstacleCost`), warm-started from the previous plan. It
replans when the robot strays from the path or a scan point blocks it (the scan points then
count as obstacles for that plan). Robot bases: ``diff_drive`` (the
:class:`~diffopt_ros.mpc.models.DiffDriveLag` model, commands ``(v, omega)``) and ``ackermann``
(:class:`~diffopt_ros.mpc.bases.Bicycle`, commands ``(v, steer)`` sent as the Twist
``(v, v tan(steer) / wheelbase)``) and ``unicycle`` (:class:`~diffopt_ros.mpc.models.Unicycle`,
the pose only, commands ``(v, omega)`` applied at once). States are ``(x, y, yaw, v, omega)`` in the map frame
(m, rad, m/s, rad/s); the car's steering angle is recovered from ``omega`` and ``v``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from diffopt_ros.mpc import MPC
from diffopt_ros.mpc.bases import Bicycle, model_state
from diffopt_ros.mpc.cem import CEM
from diffopt_ros.mpc.cost_sum import CostSum
from diffopt_ros.mpc.models import DiffDriveLag, Unicycle
from diffopt_ros.mpc.obstacles import DistanceField, ObstacleCost
from diffopt_ros.mpc.receding import (
    MpcSettings,
    advance_plan,
    path_reference,
    receding_step,
    tracking_cost,
)
from diffopt_ros.params.mpc import SCHEMA as MPC_SCHEMA
from diffopt_ros.planning import GlobalPlan, GridPlanner

ROBOTS = ('diff_drive', 'ackermann', 'unicycle')
#: :attr:`NavStep.mode` values that end a goal (the robot stands until the next one).
ENDING_MODES = ('goal reached', 'unreachable', 'no progress')
#: The robot base of each of mpc_node's ``model`` values.
ROBOT_OF_MODEL = {'diff_drive_lag': 'diff_drive', 'bicycle': 'ackermann', 'unicycle': 'unicycle'}
#: mpc_node's defaults (:mod:`diffopt_ros.params.mpc`): the node and the library share them.
_NODE = {p.name: p.default for p in MPC_SCHEMA}


@dataclass(frozen=True)
class NavSettings:
    """Navigation settings beyond the MPC's (units: m, rad, s, m/s).

    Attributes:
        robot: ``'diff_drive'``, ``'ackermann'`` or ``'unicycle'``.
        radius: robot radius (m): lethal distance of the planner, the obstacle cost's base margin.
        inflation: clearance wanted beyond the radius (obstacle cost), learnable there.
        obstacle_weight: weight of the clearance penalty (1/m^2 per step).
        plan_penalty: extra planner cost of a cell at the lethal boundary (1 = a free cell's).
        plan_decay: length over which the planner's extra cost decays with clearance.
        reference_speed: speed along the path (m/s).
        goal_tolerance: goal reached within this distance (m).
        replan_distance: replan when the robot is farther than this from the path (m).
        blocked_lookahead: replan (with the scan points as obstacles) when one lies within the
            radius of the next this many metres of the path (m).
        scan_map_margin: a scan point within this distance of an obstacle of the map is the
            map's (m): the pose estimate that placed it may be off by this much, and the map
            already has that obstacle, so the point neither blocks the path nor is added to the
            map for a plan round it (the MPC's clearance cost still avoids every scan point).
            Points farther from the map's obstacles are obstacles the map lacks.
        scan_range: scan points beyond this distance from the robot are ignored (m).
        stop_margin: the commanded speed is cut so that the robot's disc, going on for one
            MPC step and then braking (with the model's speed lag, from the measured speed),
            straight on or on the arc of the command's or the measured turn, stays this far
            from every scan point in its way (m; a collision
            monitor's stop zone after the MPC: its clearance cost is a soft penalty that a
            pose estimate off by a few centimetres in a doorway can trade against tracking,
            while the scan sees the obstacle where it is, relative to the robot; turning is left
            free, a round robot turns in place without touching). Negative: off.
        progress_radius: the robot makes progress when it moves this far from where it last
            did (m).
        progress_timeout: a goal is given up (mode ``'no progress'``, the goal forgotten) when
            the robot, tracking or blocked, has not moved ``progress_radius`` in this long (s; a
            progress checker such as nav2's: the stop zone holding the robot at an obstacle, a
            plan it cannot follow, an obstacle that does not go away). 0: never.
        wheelbase: the car's wheelbase (m; ``ackermann``).
        max_steer: the car's steering limit (rad; ``ackermann``).
        max_steer_rate: the car's steering rate limit (rad/s; ``ackermann``).
        tau_steer: the car's nominal steering lag (s; ``ackermann``).
        unknown_is_occupied: unknown map cells are obstacles (else free).
        max_iterations: iLQR iterations per tick at most (the smaller of this and the MPC
            settings' ``max_iterations``): warm-started from the previous plan, a few iterations
            per tick keep improving it, and a tick's solve time stays bounded without a
            wall-clock deadline (so a lock-step drive does not depend on the machine's load).
            ``None``: 5, or 6 for the car, whose plan needs more iterations to bend round a
            turn (with the cost test at round-off, corridors pair 7 of bench/navigation.py's seed
            0 timed out at 5); a 6-iteration car solve takes about 37-42 ms of CPU
            (``bench/tick_breakdown.py``), inside the 50 ms period of 20 Hz.
        cost_tolerance: a tick's iLQR stops once an iteration's predicted or achieved cost
            decrease is below this fraction of the cost (``MPC(cost_tolerance=...)``): the next
            tick warm-starts from this plan and goes on improving it (``bench/solve_replay.py
            --cost-tolerances``: the iterations this saves and how far the first command moves).
        retry_period: while the goal is unreachable only round the scan's points (not on the
            map), plan again this often (s; the robot stands still meanwhile).
    """

    robot: str = 'diff_drive'
    radius: float = _NODE['navigation.radius']
    inflation: float = _NODE['navigation.inflation']
    obstacle_weight: float = _NODE['navigation.obstacle_weight']
    plan_penalty: float = 5.0
    plan_decay: float = 0.3
    reference_speed: float = _NODE['reference_speed']
    goal_tolerance: float = _NODE['goal_tolerance']
    replan_distance: float = 0.6
    blocked_lookahead: float = 2.0
    scan_map_margin: float = _NODE['navigation.scan_map_margin']
    scan_range: float = 3.0
    stop_margin: float = _NODE['navigation.stop_margin']
    progress_radius: float = _NODE['navigation.progress_radius']
    progress_timeout: float = _NODE['navigation.progress_timeout']
    wheelbase: float = _NODE['model.wheelbase']
    max_steer: float = _NODE['bounds.max_steer']
    max_steer_rate: float = _NODE['model.max_steer_rate']
    tau_steer: float = _NODE['model.tau_steer']
    unknown_is_occupied: bool = False
    max_iterations: int | None = None
    cost_tolerance: float = _NODE['navigation.cost_tolerance']
    retry_period: float = 1.0

    @classmethod
    def from_params(cls, values, **overrides) -> NavSettings:
        """The settings an mpc_node with parameters ``values`` navigates with.

        Args:
            values: mpc_node parameters (``navigation.*``, ``reference_speed``,
                ``goal_tolerance``, ``model`` and the car's ``model.wheelbase``,
                ``bounds.max_steer``, ``model.max_steer_rate``, ``model.tau_steer``), e.g. a
                parameter file read by :func:`~diffopt_ros.params_file.read_params_file`; a
                missing key takes the node's default.
            overrides: fields set on top (e.g. the simulated car's geometry).
        """
        v = {**_NODE, **values}
        fields = dict(robot=ROBOT_OF_MODEL[v['model']], radius=v['navigation.radius'],
                      inflation=v['navigation.inflation'], obstacle_weight=v['navigation.obstacle_weight'],
                      scan_map_margin=v['navigation.scan_map_margin'],
                      stop_margin=v['navigation.stop_margin'],
                      progress_radius=v['navigation.progress_radius'],
                      progress_timeout=v['navigation.progress_timeout'],
                      cost_tolerance=v['navigation.cost_tolerance'], reference_speed=v['reference_speed'],
                      goal_tolerance=v['goal_tolerance'], wheelbase=v['model.wheelbase'],
                      max_steer=v['bounds.max_steer'], max_steer_rate=v['model.max_steer_rate'],
                      tau_steer=v['model.tau_steer'])
        return cls(**{**fields, **overrides})

    def __post_init__(self):
        if self.max_iterations is None:
            object.__setattr__(self, 'max_iterations', 6 if self.robot == 'ackermann' else 5)
        if self.robot not in ROBOTS:
            raise ValueError(f'NavSettings.robot: expected one of {", ".join(ROBOTS)}, got {self.robot!r}')
        if not (isinstance(self.max_iterations, int) and self.max_iterations >= 1):
            raise ValueError('NavSettings.max_iterations: expected an integer >= 1, '
                             f'got {self.max_iterations!r}')
        if not (isinstance(self.cost_tolerance, (int, float)) and 0.0 <= self.cost_tolerance < 1.0):
            raise ValueError('NavSettings.cost_tolerance: expected a number in [0, 1), '
                             f'got {self.cost_tolerance!r}')


@dataclass
class NavStep:
    """One tick of :meth:`Navigator.step`.

    Attributes:
        command: ``(2,)`` Twist ``(v [m/s], omega [rad/s])`` to send now.
        mode: ``'tracking'``, ``'goal reached'``, ``'unreachable'`` (on the map: final),
            ``'blocked'`` (only round scan points: standing still, planned again every
            ``retry_period``), ``'no progress'`` (``NavSettings.progress_timeout``: the goal is
            given up) or ``'idle'``.
        states: ``(T+1, 5)`` predicted model states (empty when no solve ran), beginning with
            the command sent (the stop zone's cut included).
        solve_time: wall time of the MPC solve (s).
        replanned: a new global path was planned this tick.
        stop_distance: when the stop zone (``NavSettings.stop_margin``) cut the MPC's speed,
            the free distance ahead of the robot's disc along its heading (m, less the margin;
            0 when a point is within the margin); else None.
    """

    command: np.ndarray
    mode: str
    states: np.ndarray
    solve_time: float = 0.0
    replanned: bool = False
    stop_distance: float | None = None


def arc_contact(ahead: np.ndarray, side: np.ndarray, curvature: float, reach: float) -> float:
    """Arc length (m, >= 0) a disc of radius ``reach`` (m) travels from the origin along ``+x``
    on a path of constant ``curvature`` (1/m, + turning towards ``+y``, 0 straight) before it
    touches one of the points ``(ahead, side)`` (each ``(N,)``, m); ``inf`` when none is in its
    way. A point already within ``reach`` counts (0) when the path brings the disc closer to it,
    and not when the path leads away from it. On an arc the centre of the turn is
    ``(0, 1 / curvature)``; the disc touches a point at distance ``rho`` from it while the
    angle between them, seen from the centre, is within ``acos((rho^2 + R^2 - reach^2) / (2 rho
    R))``, ``R = 1 / |curvature|``."""
    if abs(curvature) * reach < 1e-6:           # straight: the band the disc sweeps
        way = (ahead > 0) & (np.abs(side) < reach)
        if not way.any():
            return math.inf
        return max(float((ahead[way] - np.sqrt(reach ** 2 - side[way] ** 2)).min()), 0.0)
    turn = 1.0 / abs(curvature)
    qx, qy = ahead, math.copysign(1.0, curvature) * side - turn     # from the centre, left turn
    rho = np.hypot(qx, qy)
    # 1 - cos(half angle of contact), in a form without cancellation when turn >> reach
    gap = (reach ** 2 - (rho - turn) ** 2) / np.maximum(2.0 * rho * turn, 1e-300)
    near = gap > 0.0
    if not near.any():
        return math.inf
    half = np.arccos(np.clip(1.0 - gap[near], -1.0, 1.0))
    # the point's angle ahead of the disc's (which starts at -pi/2 and increases), in [0, 2 pi)
    rel = np.mod(np.arctan2(qy[near], qx[near]) + 0.5 * math.pi, 2.0 * math.pi)
    entry = rel - half
    inside = (entry <= 0.0) | (rel + half >= 2.0 * math.pi)
    approaching = np.sin(rel) > 0.0             # the distance to the point shrinks now
    lengths = np.where(inside, np.where(approaching, 0.0, math.inf), turn * entry)
    return float(lengths.min())


class Navigator:
    """Plans and tracks paths to goals on one occupancy grid.

    Args:
        grid: the map (:class:`~diffopt_ros.slam.occupancy.OccupancyGrid`).
        mpc: horizon, weights, bounds, model parameters (``MpcSettings``, default its defaults;
            the car's steering is bounded by ``nav.max_steer``, not ``omega_max``).
        nav: navigation settings (default :class:`NavSettings`).
        dtype: floating-point type of the solve.
        controller: ``'ilqr'`` (:class:`~diffopt_ros.mpc.ilqr.MPC`) or ``'cem'``
            (:class:`~diffopt_ros.mpc.cem.CEM` on the same model, costs and bounds; 200 samples,
            20 soft elites, 6 iterations, seeded per tick).
    """

    def __init__(self, grid, mpc: MpcSettings | None = None, nav: NavSettings | None = None,
                 dtype: torch.dtype = torch.float64, controller: str = 'ilqr'):
        mpc, nav = mpc or MpcSettings(), nav or NavSettings()
        if controller not in ('ilqr', 'cem'):
            raise ValueError(f"Navigator: controller must be 'ilqr' or 'cem', got {controller!r}")
        self.settings, self.nav, self.dtype, self.controller = mpc, nav, dtype, controller
        self.planner = GridPlanner.from_occupancy(grid, nav.radius, penalty=nav.plan_penalty,
                                                  decay=nav.plan_decay,
                                                  unknown_is_occupied=nav.unknown_is_occupied)
        self.field = DistanceField(self.planner.clearance, grid.resolution, grid.origin)
        s = mpc
        if nav.robot == 'ackermann':
            self.model = Bicycle(s.dt, wheelbase=nav.wheelbase, gain_v=s.gain_v, tau_v=s.tau_v,
                                 tau_steer=nav.tau_steer, max_steer_rate=nav.max_steer_rate)
            lower, upper = [s.v_min, -nav.max_steer], [s.v_max, nav.max_steer]
        elif nav.robot == 'unicycle':
            self.model = Unicycle(s.dt)
            lower, upper = [s.v_min, -s.omega_max], [s.v_max, s.omega_max]
        else:
            self.model = DiffDriveLag(s.dt, gain_v=s.gain_v, gain_omega=s.gain_omega, tau_v=s.tau_v,
                                      tau_omega=s.tau_omega)
            lower, upper = [s.v_min, -s.omega_max], [s.v_max, s.omega_max]
        # the model's speed lag, for the stop zone's braking (a model without one: 1 and 0)
        lag = getattr(self.model, 'parameter_values', dict)()
        self._gain_v, self._tau_v = lag.get('gain_v', 1.0), lag.get('tau_v', 0.0)
        self.tracking = tracking_cost(s, self.model.n_x)
        self.obstacles = ObstacleCost(self.field, nav.radius, nav.inflation, nav.obstacle_weight)
        self.mpc = MPC(self.model, CostSum(self.tracking, self.obstacles), s.horizon, u_lower=lower,
                       u_upper=upper, max_iterations=min(s.max_iterations, nav.max_iterations),
                       tolerance=s.tolerance, cost_tolerance=nav.cost_tolerance, backward='none').to(dtype)
        self.cem = CEM(self.model, self.mpc.cost, s.horizon, lower, upper, samples=200, elites=20,
                       iterations=6).to(dtype)
        self._generator = torch.Generator().manual_seed(0)
        self.use_obstacles(True)
        self.bounds = (np.array(lower), np.array(upper))
        self.goal: np.ndarray | None = None
        self.plan: GlobalPlan | None = None
        self.progress = 0.0
        self._round_scan, self._scan_plan_time = False, 0.0   # plan made round scan points, when
        self._warm: tuple[np.ndarray, float] | None = None     # last plan's controls, its time
        self._stop_points = np.zeros((0, 2))                    # every scan point (m, map frame)
        self._moved: tuple[np.ndarray, float] | None = None    # where and when progress was made
        self.last_command = np.zeros(2)      # the model's control (v_cmd, omega_cmd or steer_cmd)

    def use_obstacles(self, on: bool) -> None:
        """Switch the obstacle cost on or off (for comparisons; the planner always avoids them)."""
        self.mpc.cost = self.cem.cost = CostSum(self.tracking, self.obstacles) if on else self.tracking

    def model_state(self, state) -> np.ndarray:
        """The MPC model's state ``(n_x,)`` from ``(x, y, yaw, v, omega)``: the car's fifth entry
        becomes its steering angle (``atan(omega wheelbase / v)``, 0 at rest), a unicycle's is
        the pose ``(3,)`` (:func:`~diffopt_ros.mpc.bases.model_state`)."""
        state = torch.as_tensor(np.asarray(state, dtype=np.float64)[:5]).to(self.dtype)
        return model_state(self.model, state, self.nav.max_steer).to(torch.float64).numpy()

    def twist(self, control) -> np.ndarray:
        """The Twist ``(v, omega)`` of a model control ``(2,)``."""
        if self.nav.robot == 'ackermann':
            return np.array([control[0], control[0] * math.tan(control[1]) / self.nav.wheelbase])
        return np.asarray(control, dtype=np.float64).copy()

    def set_goal(self, position, goal) -> GlobalPlan:
        """Plan from ``position (2,)`` to ``goal (2,)`` (m, map frame) and track it from now on."""
        self.goal = np.asarray(goal, dtype=np.float64)[:2].copy()
        self._moved = None
        self._replan(position)
        return self.plan

    def _replan(self, position) -> None:
        self.plan = self.planner.plan(np.asarray(position)[:2], self.goal)
        self.progress, self._round_scan = 0.0, False

    def _unmapped(self) -> torch.Tensor:
        """The scan points ``(N', 2)`` (m) the map does not explain: farther than
        ``scan_map_margin`` from its obstacles."""
        points = self.obstacles.points.to(torch.float64)
        if points.shape[0] == 0:
            return points
        return points[self.field(points) > self.nav.scan_map_margin]

    def _replan_round_scan(self, state, now: float) -> None:
        """Plan round the scan points the map does not explain (:meth:`_unmapped`) as well."""
        self.plan = self.planner.plan(state[:2], self.goal, self._unmapped().numpy())
        self.progress, self._round_scan, self._scan_plan_time = 0.0, True, now

    def _blocked(self, state) -> bool:
        """Whether a scan point the map does not explain (:meth:`_unmapped`) lies within the
        robot radius of the path in the next ``blocked_lookahead`` m."""
        points = self._unmapped()
        if points.shape[0] == 0:
            return False
        path = self.plan.path
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])
        ahead = path[(arc >= self.progress) & (arc <= self.progress + self.nav.blocked_lookahead)]
        if len(ahead) == 0:
            return False
        gaps = torch.cdist(torch.as_tensor(ahead), points)
        return bool((gaps < self.nav.radius).any())

    def set_scan_points(self, points, stride: int = 1) -> None:
        """Obstacle points ``(N, 2)`` (m, map frame), e.g. the latest scan: the stop zone checks
        every one (a wall's corner between two kept beams would let the disc closer), the MPC's
        clearance cost and the blocked-path test every ``stride``-th (a cheaper solve)."""
        self._stop_points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        self.obstacles.set_points(self._stop_points[::stride])

    def stop(self) -> None:
        """Forget the goal and the warm start."""
        self.goal, self.plan, self._warm = None, None, None
        self.last_command = np.zeros(2)

    def step(self, state, now: float, deadline: float | None = None, latency: float = 0.0) -> NavStep:
        """One tick from the measured ``state (5,)`` ``(x, y, yaw, v, omega)`` (map frame) at time
        ``now`` (s; the warm start is the last plan shifted by the time since it was made); the
        iLQR starts no iteration after ``deadline`` (a ``time.perf_counter()`` value).
        ``latency`` (s, >= 0): from the measured state to the command acting (the state's age
        and the solve in a live loop; 0 in a lock-step simulation): the stop zone counts the
        robot's travel meanwhile."""
        if self.goal is None:
            return NavStep(np.zeros(2), 'idle', np.zeros((0, 5)))
        state = np.asarray(state, dtype=np.float64)
        if math.hypot(*(state[:2] - self.goal)) <= self.nav.goal_tolerance:
            self.stop()
            return NavStep(np.zeros(2), 'goal reached', np.zeros((0, 5)))
        replanned = False
        if self.plan is not None and self.plan.reachable:
            path = self.plan.path
            offset = np.hypot(*(path - state[:2]).T).min()
            if offset > self.nav.replan_distance:
                self._replan(state)
                replanned = True
            elif self._blocked(state):
                self._replan_round_scan(state, now)
                replanned = True
        elif self._round_scan and now - self._scan_plan_time >= self.nav.retry_period:
            # unreachable only round the scan's points: they may be gone, or the pose estimate
            # that placed them better now; the map alone decides that a goal cannot be reached
            self._replan_round_scan(state, now)
            replanned = True
        if self._stalled(state, now):
            self.stop()
            return NavStep(np.zeros(2), 'no progress', np.zeros((0, 5)), replanned=replanned)
        if self.plan is None or not self.plan.reachable:
            self._warm = None
            self.last_command = np.zeros(2)
            mode = 'blocked' if self._round_scan else 'unreachable'
            return NavStep(np.zeros(2), mode, np.zeros((0, 5)), replanned=replanned)
        s = self.settings
        reference, self.progress = path_reference(state, self.plan.path, self.progress, s.horizon, s.dt,
                                                  self.nav.reference_speed)
        x = self.model_state(state)
        reference[:, 4] = 0.0
        started = time.perf_counter()
        tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=self.dtype)  # noqa: E731
        warm = None
        if self._warm is not None:
            warm = tensor(advance_plan(self._warm[0], now - self._warm[1], s.dt))[None]
        with torch.no_grad():
            if self.controller == 'cem':
                target = np.concatenate([x[None], reference[:, :x.size]], 0)
                sol = self.cem(tensor(x)[None], target=tensor(target)[None], u_init=warm,
                               u_prev=tensor(self.last_command)[None], generator=self._generator)
            else:   # the receding-horizon call of mpc_node and learning
                sol = receding_step(self.mpc, tensor(x)[None], tensor(reference)[None],
                                    tensor(self.last_command)[None], warm, backward='none',
                                    deadline=deadline)
        solve_time = time.perf_counter() - started
        self._warm = (sol.controls[0].numpy(), now)
        control = np.clip(sol.controls[0, 0].numpy(), *self.bounds)
        states = sol.states[0]
        # the stop zone: under the model's first-order speed lag (gain g, time constant tau) a
        # command c held for one step and zero after it carries the robot g |c| dt + v tau (exact
        # for the lag), v the measured speed towards the points (0 when moving away), and v
        # latency before the command acts; the cut leaves the robot's momentum room to brake
        coast = max(math.copysign(1.0, control[0]) * state[3], 0.0) * (self._tau_v + max(latency, 0.0))
        travel = self._gain_v * abs(control[0]) * s.dt + coast
        free = self._free_distance(state, control[0], self._curvatures(state, control), travel)
        if free is not None and free < travel:
            control[0] = math.copysign(max(free - coast, 0.0) / (self._gain_v * s.dt), control[0])
            states = self._predict(sol.states[0, 0], sol.controls[0], control)
        else:
            free = None
        self.last_command = control
        return NavStep(self.twist(control), 'tracking', states.numpy(), solve_time, replanned, free)

    def _stalled(self, state, now: float) -> bool:
        """Whether the robot, tracking or blocked, has not moved ``progress_radius`` from where
        it last did for more than ``progress_timeout`` s (a goal unreachable on the map is
        final, reported as such)."""
        plan = self.plan
        if self.nav.progress_timeout <= 0 or plan is None or not (plan.reachable or self._round_scan):
            return False
        if self._moved is None or math.hypot(*(state[:2] - self._moved[0])) >= self.nav.progress_radius:
            self._moved = (state[:2].copy(), now)
            return False
        return now - self._moved[1] > self.nav.progress_timeout

    def _predict(self, x: torch.Tensor, controls: torch.Tensor, first) -> torch.Tensor:
        """The model's states ``(T+1, n_x)`` from ``x (n_x,)`` under ``controls (T, n_u)`` with
        the first replaced by ``first (n_u,)``: the prediction of a plan whose first command the
        stop zone cut."""
        controls = controls.clone()
        controls[0] = torch.as_tensor(first, dtype=controls.dtype)
        with torch.no_grad():
            return self.model.rollout_fn()(x[None], controls[None])[0]

    def _curvatures(self, state, control) -> tuple[float, ...]:
        """The curvatures (1/m, + left) of the paths the stop zone checks besides the straight
        line: the command's (its ``omega / v``) and, when the robot moves the command's way
        (0.02 m/s or more), the measured one, which its turn-rate lag holds at first."""
        v, omega = self.twist(control)
        turns = [omega / v] if v != 0.0 else []
        if abs(state[3]) >= 0.02 and state[3] * v > 0.0:
            turns.append(state[4] / state[3])
        return tuple(turns)

    def _free_distance(self, state, speed: float, curvatures=(), within: float = math.inf) -> float | None:
        """How far (m along its path, >= 0) the robot's disc, widened by ``stop_margin``, can go
        in the direction of ``speed``'s sign before it touches a scan point: the least over the
        straight line along its heading and the arcs of ``curvatures`` (1/m, + left, as
        ``omega / v``); None when no point lies in its way (or the stop zone is off, or the
        speed is 0). Only points the disc can reach within ``within`` m of path count (a path
        that long stays within ``within`` of the start)."""
        points = self._stop_points
        if self.nav.stop_margin < 0 or speed == 0.0 or points.shape[0] == 0:
            return None
        reach = self.nav.radius + self.nav.stop_margin
        offset = points - state[:2]
        if within < math.inf:
            offset = offset[np.einsum('ij,ij->i', offset, offset) < (within + reach) ** 2]
        heading = np.array([math.cos(state[2]), math.sin(state[2])])
        direction = math.copysign(1.0, speed)
        ahead = direction * (offset @ heading)        # the travel direction is +x
        side = offset @ np.array([-heading[1], heading[0]])
        free = min(arc_contact(ahead, side, curvature, reach) for curvature in (0.0, *curvatures))
        return None if free == math.inf else free

