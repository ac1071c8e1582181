"""The receding-horizon loop of ``mpc_node`` without ROS: references, warm start, the solve.

Units and axes as in docs/CONTRACTS.md: state ``(x, y, yaw, v, omega)`` (m, m, rad, m/s, rad/s),
control ``(v_cmd, omega_cmd)``. The robot base is the ``model`` setting, built by
:func:`diffopt_ros.mpc.bases.make_model`: ``diff_drive_lag``, ``unicycle`` (the pose only,
commands applied at once) or ``bicycle`` (an Ackermann car: control ``(v_cmd, steer_cmd)``, its
state's fifth entry the steering angle; :class:`RecedingHorizonSolver` converts odometry states
and sends Twists, or ``(v, steering angle)`` with ``steering_angle``). References are the desired
states after each of the ``T`` steps of the horizon, ``(T, 5)`` float64 arrays; yaw references
are unwrapped to lie near the current yaw so a quadratic heading cost never takes the long way
round.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from diffopt_ros.lie import wrap_angle
from diffopt_ros.mpc import MPC, TrackingCost
from diffopt_ros.mpc.bases import (
    MIN_STEERING_SPEED,
    command_of,
    control_of,
    make_model,
    model_state,
    seed_controls,
)
from diffopt_ros.params.mpc import SCHEMA as MPC_SCHEMA


def _unwrap_near(yaws: np.ndarray, yaw0: float) -> np.ndarray:
    """Yaw sequence ``(T,)`` made continuous, starting within pi of ``yaw0``."""
    steps = wrap_angle(np.diff(np.concatenate([[yaw0], yaws])))
    return yaw0 + np.cumsum(steps)


def goal_reference(state: np.ndarray, goal: np.ndarray, horizon: int) -> np.ndarray:
    """Reference ``(T, 5)`` for driving to a position goal ``(2,)`` (m) and stopping there.

    The heading reference is the bearing from the robot to the goal, so the heading cost turns
    the robot towards it; the goal's own orientation is not used.
    """
    bearing = math.atan2(goal[1] - state[1], goal[0] - state[0])
    yaw = state[2] + float(wrap_angle(bearing - state[2]))
    reference = np.zeros((horizon, 5))
    reference[:, 0], reference[:, 1], reference[:, 2] = goal[0], goal[1], yaw
    return reference


def _polyline(path: np.ndarray):
    """Cumulative arc length ``(N,)`` and segment yaws ``(N-1,)`` of ``(N, >=2)`` points."""
    deltas = np.diff(path[:, :2], axis=0)
    lengths = np.hypot(deltas[:, 0], deltas[:, 1])
    return np.concatenate([[0.0], np.cumsum(lengths)]), np.arctan2(deltas[:, 1], deltas[:, 0])


def _at_arclength(path: np.ndarray, cumulative: np.ndarray, seg_yaw: np.ndarray,
                  s: np.ndarray):
    """Points ``(K, 2)`` and tangent yaws ``(K,)`` at arc lengths ``s`` ``(K,)`` along the path."""
    s = np.clip(s, 0.0, cumulative[-1])
    xy = np.stack([np.interp(s, cumulative, path[:, 0]), np.interp(s, cumulative, path[:, 1])], -1)
    moving = np.diff(cumulative) > 1e-9
    ends = cumulative[1:][moving]
    index = np.minimum(np.searchsorted(ends, s, side='left'), len(ends) - 1)
    return xy, seg_yaw[moving][index]


def path_reference(state: np.ndarray, path: np.ndarray, progress: float, horizon: int,
                   dt: float, speed: float) -> tuple[np.ndarray, float]:
    """Reference ``(T, 5)`` for following an untimed path ``(N, >=2)`` at ``speed`` (m/s).

    The robot is projected on the path (searching forward from ``progress``, the arc length in m
    reached so far, so a path that crosses itself is followed in order); the reference moves
    ``speed * dt`` further along the path each step and stops at its end.

    Returns:
        The reference and the new progress (m).
    """
    cumulative, seg_yaw = _polyline(path)
    total = float(cumulative[-1])
    if total < 1e-9:
        return goal_reference(state, path[-1, :2], horizon), 0.0
    window = progress + speed * dt * horizon + 1.0
    starts, ends = path[:-1, :2], path[1:, :2]
    seg = ends - starts
    seg_len2 = np.maximum(np.sum(seg * seg, axis=1), 1e-18)
    t = np.clip(np.sum((state[:2] - starts) * seg, axis=1) / seg_len2, 0.0, 1.0)
    distance = np.hypot(*(starts + t[:, None] * seg - state[:2]).T)
    reachable = (cumulative[1:] >= progress - 1e-9) & (cumulative[:-1] <= window)
    distance[~reachable] = np.inf
    best = int(np.argmin(distance))
    progress = max(progress, float(cumulative[best] + t[best] * math.sqrt(seg_len2[best])))
    s = progress + speed * dt * np.arange(1, horizon + 1)
    xy, yaw = _at_arclength(path, cumulative, seg_yaw, s)
    reference = np.zeros((horizon, 5))
    reference[:, :2] = xy
    reference[:, 2] = _unwrap_near(yaw, state[2])
    reference[:, 3] = np.where(s < total, speed, 0.0)
    return reference, progress


def timed_reference(state: np.ndarray, path: np.ndarray, times: np.ndarray, now: float,
                    horizon: int, dt: float) -> np.ndarray:
    """Reference ``(T, 5)`` for a timed trajectory: points ``(N, >=2)`` at ``times`` ``(N,)`` (s).

    The reference at step k is the trajectory at ``now + k dt`` (linear in time, held at the ends);
    its speed is the trajectory's speed there (0 after the end).
    """
    cumulative, seg_yaw = _polyline(path)
    if cumulative[-1] < 1e-9:
        return goal_reference(state, path[-1, :2], horizon)
    t = now + dt * np.arange(1, horizon + 1)
    s = np.interp(t, times, cumulative)
    xy, yaw = _at_arclength(path, cumulative, seg_yaw, s)
    segment = np.clip(np.searchsorted(times, t, side='right') - 1, 0, len(times) - 2)
    speed = np.diff(cumulative)[segment] / np.diff(times)[segment]
    reference = np.zeros((horizon, 5))
    reference[:, :2] = xy
    reference[:, 2] = _unwrap_near(yaw, state[2])
    reference[:, 3] = np.where((t >= times[0]) & (t < times[-1]), speed, 0.0)
    return reference


def advance_plan(controls: np.ndarray, elapsed: float, dt: float,
                 hold_last: bool = True) -> np.ndarray:
    """A plan's controls ``(T, 2)`` made ``elapsed`` s ago, as seen from now (zero-order hold).

    Control k of the plan acts during ``[k dt, (k+1) dt)``; the result's control k is the one
    acting at ``elapsed + k dt``. Past the plan's end the last control is held (a warm start) or
    zero (``hold_last=False``: a fallback command never extrapolates).
    """
    horizon = controls.shape[0]
    shift = max(0, int(math.floor(elapsed / dt + 1e-9)))
    index = np.arange(horizon) + shift
    shifted = controls[np.minimum(index, horizon - 1)].copy()
    if not hold_last:
        shifted[index >= horizon] = 0.0
    return shifted


#: MpcSettings field -> mpc_node parameter (:mod:`diffopt_ros.params.mpc`).
SETTINGS_PARAMS = {
    'gain_v': 'model.gain_v', 'gain_omega': 'model.gain_omega', 'tau_v': 'model.tau_v',
    'tau_omega': 'model.tau_omega', 'horizon': 'horizon', 'dt': 'dt',
    'w_position': 'weights.position', 'w_heading': 'weights.heading', 'w_v': 'weights.v',
    'w_omega': 'weights.omega', 'w_v_cmd': 'weights.v_cmd', 'w_omega_cmd': 'weights.omega_cmd',
    'w_rate': 'weights.rate', 'terminal_scale': 'weights.terminal_scale',
    'v_min': 'bounds.v_min', 'v_max': 'bounds.v_max', 'omega_max': 'bounds.omega_max',
    'max_iterations': 'max_iterations', 'tolerance': 'tolerance', 'model': 'model',
    'wheelbase': 'model.wheelbase', 'tau_steer': 'model.tau_steer',
    'max_steer_rate': 'model.max_steer_rate', 'max_steer': 'bounds.max_steer',
    'steering_angle': 'cmd_steering_angle',
}
_DEFAULT = {field: MPC_SCHEMA[param].default for field, param in SETTINGS_PARAMS.items()}


@dataclass(frozen=True)
class MpcSettings:
    """Everything that defines the MPC problem (units and defaults: the mpc_node parameters of
    :mod:`diffopt_ros.params.mpc`, named by :data:`SETTINGS_PARAMS`)."""

    gain_v: float = _DEFAULT['gain_v']
    gain_omega: float = _DEFAULT['gain_omega']
    tau_v: float = _DEFAULT['tau_v']
    tau_omega: float = _DEFAULT['tau_omega']
    horizon: int = _DEFAULT['horizon']
    dt: float = _DEFAULT['dt']
    w_position: float = _DEFAULT['w_position']
    w_heading: float = _DEFAULT['w_heading']
    w_v: float = _DEFAULT['w_v']
    w_omega: float = _DEFAULT['w_omega']
    w_v_cmd: float = _DEFAULT['w_v_cmd']
    w_omega_cmd: float = _DEFAULT['w_omega_cmd']
    w_rate: float = _DEFAULT['w_rate']
    terminal_scale: float = _DEFAULT['terminal_scale']
    v_min: float = _DEFAULT['v_min']
    v_max: float = _DEFAULT['v_max']
    omega_max: float = _DEFAULT['omega_max']
    max_iterations: int = _DEFAULT['max_iterations']
    tolerance: float = _DEFAULT['tolerance']
    model: str = _DEFAULT['model']
    wheelbase: float = _DEFAULT['wheelbase']
    tau_steer: float = _DEFAULT['tau_steer']
    max_steer_rate: float = _DEFAULT['max_steer_rate']
    max_steer: float = _DEFAULT['max_steer']
    steering_angle: bool = _DEFAULT['steering_angle']

    @classmethod
    def from_params(cls, values: dict) -> MpcSettings:
        """Settings from ``mpc_node`` parameter values (``{'model.gain_v': 0.8, ...}``);
        parameters not given keep their defaults, others are ignored. The values are checked
        against the node's schema (type, range, bounds.v_min < bounds.v_max).

        Raises:
            SchemaError: (a ``ValueError``) a value of the wrong type or out of range.
        """
        given = {param: values[param] for param in SETTINGS_PARAMS.values() if param in values}
        checked = MPC_SCHEMA.settings(given)
        return cls(**{name: checked[param] for name, param in SETTINGS_PARAMS.items()})


def receding_step(mpc: MPC, state: torch.Tensor, reference: torch.Tensor,
                  last_command: torch.Tensor | None = None, warm: torch.Tensor | None = None,
                  **options):
    """One receding-horizon solve: THE call that mpc_node, the ROS-free closed loop, the
    synthetic experts and imitation learning all make, so what is learned is what runs. A car
    whose plan stays at rest while its reference leads away is solved again from arcs
    (:func:`_unstuck`): at rest its steering moves nothing, and zero controls are a stationary
    point of iLQR.

    Args:
        mpc: the controller (e.g. ``RecedingHorizonSolver(...).mpc`` or
            :func:`~diffopt_ros.learn.controller.node_mpc`).
        state: the model's states ``(B, 5)`` (m, m, rad, m/s, rad/s; a car's fifth entry is its
            steering angle, :func:`~diffopt_ros.mpc.bases.model_state`); entries beyond the
            model's ``n_x`` are dropped (a unicycle's ``(B, 3)`` pose).
        reference: desired states after each step of the horizon ``(B, T, 5)`` (as ``state``).
        last_command: the control applied until now ``(B, 2)`` (m/s, rad/s; a car's
            ``(v_cmd, steer_cmd)``) for the rate penalty ``(u_0 - u_prev)``; None only for a
            controller without a rate term.
        warm: warm-start controls ``(B, T, 2)`` (e.g. the previous plan shifted to now).
        options: keyword options of :meth:`~diffopt_ros.mpc.MPC.forward` (``backward='none'``
            in a control loop: no graph whatever the parameters).

    Returns:
        The MPC's solution (``controls (B, T, 2)``: ``controls[:, 0]`` is the command now).
    """
    n_x = mpc.dynamics.n_x
    state, reference = state[..., :n_x], reference[..., :n_x]
    target = torch.cat((state.unsqueeze(1), reference), 1)
    solution = mpc(state, target=target, u_init=warm, u_prev=last_command, **options)
    return _unstuck(mpc, state, target, last_command, solution, options)


#: A reference that keeps within this distance (m) of the current position asks a robot at rest
#: to stay: no seed solves (:func:`_unstuck`).
SEED_DISTANCE = 0.01


def _unstuck(mpc: MPC, state: torch.Tensor, target: torch.Tensor, last_command, solution,
             options: dict):
    """``solution`` of :func:`receding_step`, or where a model has seeds
    (:func:`~diffopt_ros.mpc.bases.seed_controls`: a car, whose zero controls are a stationary
    point of iLQR at rest) and a sample is stuck, the solve restarted from the lowest-cost of its
    solution and the solutions from each seed.

    A sample is stuck when its reference leaves ``SEED_DISTANCE`` of its position and its plan
    stays at rest (every speed command below :data:`~diffopt_ros.mpc.bases.MIN_STEERING_SPEED`):
    a plan that moves is returned as it is, without seed solves. The seeds are solved without
    gradients (``deadline`` as given); the final solve, from the chosen controls with
    ``options``, is the one returned, so an implicit backward differentiates the chosen solution.
    Samples not stuck keep their solution (the final solve starts from it).
    """
    controls = solution.controls.detach()
    at_rest = controls[..., 0].abs().amax(-1) <= MIN_STEERING_SPEED
    away = (target[:, 1:, :2].detach() - state[:, None, :2].detach()).norm(dim=-1).amax(-1)
    stuck = at_rest & (away > SEED_DISTANCE)
    if not bool(stuck.any()):
        return solution
    bounds = mpc.bounds(options.get('u_lower'), options.get('u_upper'), state.shape[0], state)
    seeds = [] if bounds[0] is None else seed_controls(mpc.dynamics, *bounds)
    best_cost, best = solution.costs.detach(), controls
    with torch.no_grad():
        for seed in seeds:
            trial = mpc.plan(state.detach(), target.detach(), seed,
                             None if last_command is None else last_command.detach(),
                             u_lower=options.get('u_lower'), u_upper=options.get('u_upper'),
                             deadline=options.get('deadline'))
            better = stuck & (trial.costs < best_cost)
            best_cost = torch.where(better, trial.costs, best_cost)
            best = torch.where(better[:, None, None], trial.controls, best)
    if not bool((best_cost < solution.costs.detach()).any()):
        return solution
    return mpc(state, target=target, u_init=best, u_prev=last_command, **options)


def tracking_cost(settings: MpcSettings, n_x: int = 5) -> TrackingCost:
    """The tracking cost of the settings' ``w_*`` weights for a model with ``n_x`` states: state
    weights ``(position, position, heading, v, omega)[:n_x]`` (a car's fifth state is its
    steering angle; a unicycle's 3 states are the pose), control weights ``(v_cmd, omega_cmd)``,
    rate weight ``(rate, rate)`` (none when 0), heading wrapped."""
    s = settings
    state_weight = [s.w_position, s.w_position, s.w_heading, s.w_v, s.w_omega][:n_x]
    return TrackingCost(state_weight, [s.w_v_cmd, s.w_omega_cmd], s.terminal_scale,
                        [s.w_rate, s.w_rate] if s.w_rate > 0 else None, angle_indices=(2,))


@dataclass
class ControlStep:
    """One receding-horizon solve.

    Attributes:
        controls: ``(T, 2)`` planned model controls (``(v_cmd, omega_cmd)``, a car's
            ``(v_cmd, steer_cmd)``); ``controls[0]`` is applied now.
        states: ``(T + 1, n_x)`` predicted model states, ``states[0]`` the measured state.
        iterations: iLQR iterations used.
        converged: whether iLQR met its tolerance within ``max_iterations``.
        solve_time: wall time of the solve (s).
        commands: ``(T, 2)`` what ``cmd_vel`` carries for ``controls``
            (:func:`~diffopt_ros.mpc.bases.command_of`; None: the controls themselves).
    """

    controls: np.ndarray
    states: np.ndarray
    iterations: int
    converged: bool
    solve_time: float
    commands: np.ndarray | None = None

    def __post_init__(self):
        if self.commands is None:
            self.commands = self.controls


class RecedingHorizonSolver:
    """The node's MPC: the ``model`` (:func:`~diffopt_ros.mpc.bases.make_model`) +
    ``TrackingCost`` + box-constrained iLQR (no gradients). Bounds: ``v_min..v_max`` and
    ``±omega_max`` (a car: ``±max_steer``). The state weights ``(position, position, heading, v,
    omega)`` apply to the model's state (a car's fifth entry: the steering angle; a unicycle's
    state is the pose).

    Args:
        settings: model, horizon, weights, bounds and iteration limits.
        device: torch device of the solve.
        dtype: floating-point type of the solve.
    """

    def __init__(self, settings: MpcSettings, device: torch.device | str = 'cpu',
                 dtype: torch.dtype = torch.float64):
        s = self.settings = settings
        self.device, self.dtype = torch.device(device), dtype
        model = make_model(s.model, s.dt, {
            'gain_v': s.gain_v, 'gain_omega': s.gain_omega, 'tau_v': s.tau_v,
            'tau_omega': s.tau_omega, 'wheelbase': s.wheelbase, 'tau_steer': s.tau_steer,
            'max_steer_rate': s.max_steer_rate})
        turn = s.max_steer if s.model == 'bicycle' else s.omega_max
        self.mpc = MPC(model, tracking_cost(s, model.n_x), s.horizon, u_lower=[s.v_min, -turn],
                       u_upper=[s.v_max, turn], max_iterations=s.max_iterations, tolerance=s.tolerance,
                       backward='none').to(device=self.device, dtype=dtype)
        self.model = self.mpc.dynamics
        self._bounds = (np.array([s.v_min, -turn]), np.array([s.v_max, turn]))

    def warm_up(self) -> float:
        """Solve a dummy problem once (torch's first call is slow); returns its wall time (s)."""
        state = np.zeros(5)
        return self.solve(state, goal_reference(state, np.array([1.0, 0.5]), self.settings.horizon),
                          None, np.zeros(2)).solve_time

    def _tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def solve(self, state: np.ndarray, reference: np.ndarray, warm: np.ndarray | None = None,
              last_command: np.ndarray | None = None, deadline: float | None = None) -> ControlStep:
        """Solve from the odometry ``state`` ``(5,)`` ``(x, y, yaw, v, omega)`` towards
        ``reference`` ``(T, 5)`` (the states wanted after each step), warm-started from the
        model controls ``warm`` ``(T, 2)`` (a previous :attr:`ControlStep.controls`);
        ``last_command`` ``(2,)`` is the command sent until now (a :attr:`ControlStep.commands`
        row, for the rate penalty). No iLQR iteration starts after ``deadline`` (a
        ``time.perf_counter()`` value): the best iterate so far is returned."""
        started = time.perf_counter()
        s, model = self.settings, self.model
        with torch.no_grad():
            last = None
            if last_command is not None:
                last = control_of(model, self._tensor(last_command), s.max_steer,
                                  s.steering_angle)[None]
            solution = receding_step(
                self.mpc, model_state(model, self._tensor(np.asarray(state)[:5]), s.max_steer)[None],
                model_state(model, self._tensor(reference), s.max_steer)[None], last,
                None if warm is None else self._tensor(warm)[None], backward='none',
                deadline=deadline)
            controls = solution.controls[0].clamp(*(self._tensor(b) for b in self._bounds))
            commands = command_of(model, controls, s.steering_angle)
        return ControlStep(controls=controls.cpu().numpy(),
                           states=solution.states[0].cpu().numpy(),
                           iterations=int(solution.iterations[0]),
                           converged=bool(solution.converged[0]),
                           solve_time=time.perf_counter() - started,
                           commands=commands.cpu().numpy())
