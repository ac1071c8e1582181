"""Robot bases for the MPC: an Ackermann car (kinematic bicycle with actuator dynamics), the
Twist interface of such a base, and the table of models by name.

* :class:`Bicycle` - state ``(x [m], y [m], yaw [rad], v [m/s], steer [rad])``, control
  ``(v_cmd [m/s], steer_cmd [rad])``: speed with gain and first-order lag (as
  :class:`~diffopt_ros.mpc.models.DiffDriveLag`), steering with a first-order lag whose rate is
  bounded smoothly (``max_steer_rate``), yaw rate ``v tan(steer) / wheelbase``. Steering limits
  and speed bounds are the MPC's control box.
* :class:`TwistBicycle` - the same car seen through ``/cmd_vel`` and odometry: state
  ``(x, y, yaw, v, omega)``, control ``(v_cmd, omega_cmd)`` (a Twist base turns a Twist into a
  steering angle with its wheelbase, ``steer = atan(omega wheelbase / v)``), for system
  identification from recorded runs.
* :data:`MODELS` / :func:`make_model` - ``diff_drive_lag``, ``unicycle``, ``bicycle`` by name.
* :func:`seed_controls` - the manoeuvres a car's solve also starts from when it would stay at
  rest (at ``v = 0`` the steering moves nothing, so zero controls are a stationary point).
* :func:`model_state`, :func:`command_of`, :func:`control_of` - between a model's states and
  controls and what the node measures (odometry ``(x, y, yaw, v, omega)``) and sends
  (``/cmd_vel``: a Twist, or for a car optionally ``(v, steering angle)``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .dynamics import Dynamics, batch_shape
from .models import DiffDriveLag, Unicycle, _PositiveParams
from .solve_blocks import SolveBlocks

#: Command speeds (m/s) below which a Twist carries no steering information (the last is held).
MIN_STEERING_SPEED = 1e-3


def steer_from_twist(v: torch.Tensor, omega: torch.Tensor, wheelbase, max_steer: float = math.pi / 2
                     ) -> torch.Tensor:
    """Steering angles (rad) of Twists ``(v [m/s], omega [rad/s])``, tensors of one shape, for a car
    of ``wheelbase`` (m): ``atan(omega wheelbase / v)`` clipped to ``±max_steer``; 0 where
    ``|v| < MIN_STEERING_SPEED`` (the simulator's base: :func:`diffopt_ros.sim.robot.ackermann_steer`)."""
    moving = v.abs() >= MIN_STEERING_SPEED
    safe = torch.where(moving, v, torch.ones_like(v))
    steer = torch.where(moving, torch.atan(omega * wheelbase / safe), torch.zeros_like(v))
    return steer.clamp(-max_steer, max_steer)


def twist_from_steer(v: torch.Tensor, steer: torch.Tensor, wheelbase) -> torch.Tensor:
    """Yaw rates (rad/s) of speeds ``v`` (m/s) at steering angles ``steer`` (rad): ``v tan(steer) / L``."""
    return v * torch.tan(steer) / wheelbase


def rate_limited_lag(s: torch.Tensor, command: torch.Tensor, tau, rate: float, dt: float,
                     slope: bool = False, rate_tau=None):
    """``s`` after ``dt`` s of ``ds/dt = clip((command - s) / tau, ±rate)`` with the command held,
    elementwise: ``(...)`` -> ``(...)``. While ``|command - s| > rate tau`` the value ramps at
    ``rate`` (for ``t_r = (|command - s| - rate tau) / rate``, at most ``dt``), then approaches
    the command exponentially. With ``slope``, also ``d s' / d s = exp(-(dt - t_r) / tau)``
    (and ``d s' / d command = 1 -`` that), the same expression in all three regimes.
    ``rate_tau``: ``rate * tau`` where already computed (a roll-out's ``T`` steps share it)."""
    gap = torch.sub(command, s)
    rate_tau = rate * tau if rate_tau is None else rate_tau
    ramp = torch.sub(gap.abs(), rate_tau).div(rate).clamp(0.0, dt)        # time at the rate bound
    after_ramp = torch.sub(gap, gap.sign().mul(ramp.mul(rate)))               # gap left after it
    decay = torch.sub(ramp, dt).div(tau).exp()
    value = torch.sub(command, after_ramp.mul(decay))
    return (value, decay) if slope else value


class Bicycle(_PositiveParams, SolveBlocks):
    """Ackermann car: kinematic bicycle with speed lag and rate-bounded steering lag.

    One step of ``dt`` s: ``v' = v + (1 - exp(-dt / tau_v)) (gain_v v_cmd - v)``; the steering
    angle follows ``d steer/dt = clip((steer_cmd - steer) / tau_steer, ±max_steer_rate)`` exactly
    (:func:`rate_limited_lag`: a ramp at the rate bound, then the exponential approach; the step
    is continuously differentiable); then the midpoint rule with
    ``v_m = (v + v') / 2``, ``w_m = v_m tan((steer + steer') / 2) / wheelbase``:
    ``yaw' = yaw + dt w_m``, ``(x', y') = (x, y) + dt v_m (cos, sin)(yaw + dt w_m / 2)``.

    Args:
        dt: step (s).
        wheelbase: axle distance (m), learnable, > 0.
        gain_v: speed actuator gain (1), learnable, > 0.
        tau_v: speed lag (s), learnable, > 0.
        tau_steer: steering lag (s), learnable, > 0.
        max_steer_rate: steering rate bound (rad/s), fixed, > 0.
    """

    param_names = ('wheelbase', 'gain_v', 'tau_v', 'tau_steer')
    n_x, n_u = 5, 2
    angle_indices = (2,)

    def __init__(self, dt: float = 0.1, wheelbase: float = 0.3, gain_v: float = 1.0, tau_v: float = 0.1,
                 tau_steer: float = 0.1, max_steer_rate: float = 3.0):
        super().__init__()
        if not dt > 0 or not max_steer_rate > 0:
            raise ValueError(f'Bicycle: dt and max_steer_rate must be > 0, got {dt}, {max_steer_rate}')
        self.dt, self.max_steer_rate = float(dt), float(max_steer_rate)
        self._init_params(wheelbase=wheelbase, gain_v=gain_v, tau_v=tau_v, tau_steer=tau_steer)

    def stepper(self):
        """The step with the parameter-derived constants computed once (roll-outs call it ``T``
        times per trial trajectory)."""
        dt, rate = self.dt, self.max_steer_rate
        keep_v = torch.exp(-dt / self.tau_v)
        drive_v = (1 - keep_v) * self.gain_v
        tau_s, inv_L = self.tau_steer, 1.0 / self.wheelbase

        def step(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            v, steer = x[..., 3], x[..., 4]
            v_next = keep_v * v + drive_v * u[..., 0]
            steer_next = rate_limited_lag(steer, u[..., 1], tau_s, rate, dt)
            v_m = 0.5 * (v + v_next)
            w_m = v_m * torch.tan(0.5 * (steer + steer_next)) * inv_L
            heading = x[..., 2] + 0.5 * dt * w_m
            return torch.stack((x[..., 0] + dt * v_m * heading.cos(), x[..., 1] + dt * v_m * heading.sin(),
                                x[..., 2] + dt * w_m, v_next, steer_next), -1)

        return step

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One step: ``x (..., 5)``, ``u (..., 2)`` -> ``(..., 5)``."""
        return self.stepper()(x, u)

    def rollout_fn(self):
        """The roll-out with only the speed and steering recursions sequential: speed and steering
        do not depend on the pose, so after their ``T`` steps (the speed's a product with a
        triangular matrix, the steering's ``T`` rate-limited steps) the yaw and position are
        cumulative sums over the horizon. ``(x_init (B, 5), controls (B, T, 2)) -> (B, T+1, 5)``.
        The speed's powers and matrix are formed once per horizon, dtype and device."""
        dt, rate = self.dt, self.max_steer_rate
        keep_v = torch.exp(-dt / self.tau_v)
        drive_v = (1 - keep_v) * self.gain_v
        tau_s, inv_L = self.tau_steer, 1.0 / self.wheelbase
        rate_tau = rate * tau_s
        speed_matrices = {}

        def speed(T: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """``keep^t (T+1,)`` and the command-to-speed matrix ``(T+1, T)`` of this roll-out."""
            key = (T, like.dtype, like.device)
            if key not in speed_matrices:
                steps = torch.arange(T + 1, dtype=like.dtype, device=like.device)
                lag = steps.view(-1, 1) - 1 - steps[:T].view(1, -1)           # t - 1 - s
                M = torch.where(lag >= 0, keep_v ** lag.clamp_min(0), torch.zeros_like(lag)) * drive_v
                speed_matrices[key] = keep_v ** steps, M.mT
            return speed_matrices[key]

        def steering(steer: torch.Tensor, commands: torch.Tensor) -> torch.Tensor:
            """The steering angles ``(..., T+1)`` from ``steer (...)`` under the ``commands (..., T)``:
            :func:`rate_limited_lag`. On the CPU a step whose gaps are all within ``rate tau`` (no
            ramp: most steps) is taken as ``command - gap decay`` with the constant
            ``decay = exp((0 - dt) / tau)``, the same value in 2 operations instead of 13 (``decay``
            formed on a tensor of the steps' shape: the same kernel path per element); the check
            reads the largest gap (a device sync elsewhere: there every step is the full one).
            Without autograd (inference mode, float64) the recursion runs on Python floats and
            numpy arrays (:func:`_steering_arrays`): the same correctly rounded arithmetic, without
            a tensor operation's dispatch."""
            if steer.device.type != 'cpu':
                out = [steer]
                for command in commands.unbind(-1):
                    out.append(rate_limited_lag(out[-1], command, tau_s, rate, dt, rate_tau=rate_tau))
                return torch.stack(out, -1)
            decay = torch.sub(torch.zeros_like(steer, memory_format=torch.contiguous_format), dt)
            decay, bound = decay.div(tau_s).exp(), float(rate_tau.detach())
            if torch.is_inference_mode_enabled() and steer.dtype == torch.float64:
                return _steering_arrays(steer, commands, decay, bound, float(tau_s.detach()), rate, dt)
            out = [steer]
            for command in commands.unbind(-1):
                gap = torch.sub(command, out[-1])
                if float(gap.abs().amax().detach()) <= bound:          # NaN: the full step
                    out.append(torch.sub(command, gap.mul(decay)))
                else:
                    out.append(rate_limited_lag(out[-1], command, tau_s, rate, dt, rate_tau=rate_tau))
            return torch.stack(out, -1)

        def roll_out(x_init: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
            powers, M_T = speed(controls.shape[-2], controls)
            v = x_init[..., 3:4] * powers + controls[..., 0] @ M_T            # (B, T+1)
            steer = steering(x_init[..., 4], controls[..., 1])
            v_m = 0.5 * (v[..., 1:] + v[..., :-1])
            w_m = v_m * torch.tan(0.5 * (steer[..., 1:] + steer[..., :-1])) * inv_L
            turn = dt * w_m
            yaw = torch.cat((x_init[..., 2:3], x_init[..., 2:3] + torch.cumsum(turn, -1)), -1)
            heading = yaw[..., :-1] + 0.5 * turn
            step = dt * v_m
            x = torch.cat((x_init[..., 0:1], x_init[..., 0:1] + torch.cumsum(step * heading.cos(), -1)), -1)
            y = torch.cat((x_init[..., 1:2], x_init[..., 1:2] + torch.cumsum(step * heading.sin(), -1)), -1)
            return torch.stack((x, y, yaw, v, steer), -1)

        return roll_out

    def _speed_constants(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The speed lag's ``keep = exp(-dt / tau_v)``, ``drive = (1 - keep) gain_v`` (parameters'
        dtype) and the midpoint speed's derivatives ``d v_m / d (v, v_cmd)`` (dtype and device of
        ``like``): what :meth:`jacobians` forms once per solve (:class:`SolveBlocks`)."""
        keep_v = torch.exp(-self.dt / self.tau_v)
        drive_v = (1 - keep_v) * self.gain_v
        return keep_v, drive_v, (0.5 * (1 + keep_v)).to(like), (0.5 * drive_v).to(like)

    def jacobians(self, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form ``A (..., 5, 5)``, ``B (..., 5, 2)`` (the chain rule through the midpoint
        step; differentiable w.r.t. the parameters). Only the entries that are not constant are
        computed (``d / d z`` for ``z = (x, y, yaw, v, steer, v_cmd, steer_cmd)``): the speed's
        midpoint ``v_m`` depends on ``(v, v_cmd)``, the steering's ``s_m`` on ``(steer, steer_cmd)``."""
        dt, L = self.dt, self.wheelbase
        batch = batch_shape(x, u)
        x, u = x.expand(*batch, 5), u.expand(*batch, 2)
        v, steer = x[..., 3], x[..., 4]
        keep_v, drive_v, dv_v, dv_cmd = self.solve_blocks(('jacobians', v.dtype, v.device),
                                                          lambda: self._speed_constants(v))
        v_next = keep_v * v + drive_v * u[..., 0]
        steer_next, d_steer = rate_limited_lag(steer, u[..., 1], self.tau_steer, self.max_steer_rate, dt,
                                               slope=True)
        v_m, s_m = 0.5 * (v + v_next), 0.5 * (steer + steer_next)
        tan_m = torch.tan(s_m)
        w_m = v_m * tan_m / L
        heading = x[..., 2] + 0.5 * dt * w_m
        c, s = heading.cos(), heading.sin()
        vs, vc = v_m * s, v_m * c
        zero, one = torch.zeros_like(v), torch.ones_like(v)
        ds_s, ds_cmd = 0.5 * (1 + d_steer), 0.5 * (1 - d_steer)          # d s_m / d (steer, steer_cmd)
        dw_ds = v_m / torch.cos(s_m).square()
        # the derivatives by (v, steer, v_cmd, steer_cmd) side by side in a last axis of 4
        dv = torch.stack(torch.broadcast_tensors(dv_v, zero, dv_cmd, zero), -1)     # d v_m
        dw = torch.stack((tan_m, dw_ds, tan_m, dw_ds), -1) * torch.stack(
            torch.broadcast_tensors(dv_v, ds_s, dv_cmd, ds_cmd), -1) / L              # d w_m
        dh = (0.5 * dt) * dw                                             # d heading (its yaw entry is 1)
        row_x = dt * (c.unsqueeze(-1) * dv - vs.unsqueeze(-1) * dh)
        row_y = dt * (s.unsqueeze(-1) * dv + vc.unsqueeze(-1) * dh)
        row_yaw = dt * dw
        keep, drive = (keep_v * one, drive_v * one)
        J = torch.stack((one, zero, -dt * vs, *row_x.unbind(-1),
                         zero, one, dt * vc, *row_y.unbind(-1),
                         zero, zero, one, *row_yaw.unbind(-1),
                         zero, zero, zero, keep, zero, drive, zero,
                         zero, zero, zero, zero, d_steer, zero, 1 - d_steer), -1).view(*batch, 5, 7)
        return J[..., :5], J[..., 5:]


def _steering_arrays(steer: torch.Tensor, commands: torch.Tensor, decay: torch.Tensor, bound: float,
                     tau: float, rate: float, dt: float) -> torch.Tensor:
    """The steering recursion of :meth:`Bicycle.rollout_fn` on Python floats and numpy arrays
    (float64 CPU tensors without autograd): ``steer (...)``, ``commands (..., T)`` -> ``(..., T+1)``.
    A step whose gaps are all within ``bound`` (``rate tau``; a NaN gap is not) is
    ``command - gap decay`` (``decay (...)``) per sample on Python floats (IEEE double subtractions
    and products, each rounded as the tensor's); another is :func:`rate_limited_lag`'s operations
    in its order on numpy arrays, the exponential on a tensor (torch's kernel, so that every value
    is that of the tensor step)."""
    T = commands.shape[-1]
    rows = commands.detach().reshape(-1, T).tolist()
    decays = decay.detach().reshape(-1).tolist()
    now = steer.detach().reshape(-1).tolist()
    out = [[s] for s in now]
    for t in range(T):
        command = [row[t] for row in rows]
        gap = [c - s for c, s in zip(command, now)]
        if all(abs(g) <= bound for g in gap):
            now = [c - g * d for c, g, d in zip(command, gap, decays)]
        else:
            gap_a = np.array(gap)
            ramp = np.clip((np.abs(gap_a) - bound) / rate, 0.0, dt)       # time at the rate bound
            after_ramp = gap_a - np.sign(gap_a) * (ramp * rate)
            step_decay = torch.from_numpy((ramp - dt) / tau).exp().numpy()
            now = (np.array(command) - after_ramp * step_decay).tolist()
        for row, s in zip(out, now):
            row.append(s)
    return torch.tensor(out, dtype=torch.float64).view(*steer.shape, T + 1)


class TwistBicycle(Dynamics):
    """A :class:`Bicycle` behind a Twist interface, in odometry coordinates.

    State ``(x, y, yaw, v, omega)`` (m, m, rad, m/s, rad/s), control ``(v_cmd, omega_cmd)``.
    The steering angle is recovered as ``atan(omega wheelbase / v)`` (0 at rest, where the yaw
    rate carries none), the command's as the base does (:func:`steer_from_twist`); after the
    bicycle's step ``omega' = v' tan(steer') / wheelbase``.

    Args:
        base: the car; its parameters stay learnable (the wheelbase cancels from Twist data in
            the small-angle regime: identify it only where steering saturates).
        max_steer: the base's steering limit (rad).
    """

    def __init__(self, base: Bicycle, max_steer: float = 0.6):
        super().__init__()
        self.base, self.max_steer = base, float(max_steer)
        self.n_x, self.n_u, self.dt = 5, 2, base.dt
        self.angle_indices = (2,)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        L = self.base.wheelbase
        steer = steer_from_twist(x[..., 3], x[..., 4], L, self.max_steer)
        steer_cmd = steer_from_twist(u[..., 0], u[..., 1], L, self.max_steer)
        nxt = self.base(torch.cat((x[..., :4], steer.unsqueeze(-1)), -1),
                        torch.stack((u[..., 0], steer_cmd), -1))
        omega = twist_from_steer(nxt[..., 3], nxt[..., 4], L)
        return torch.cat((nxt[..., :4], omega.unsqueeze(-1)), -1)


def make_model(name: str, dt: float, params: dict | None = None) -> Dynamics:
    """A model by name with its physical parameters from ``params`` (``{'gain_v': 0.8, ...}``,
    missing ones default): ``diff_drive_lag`` (:class:`DiffDriveLag`), ``unicycle``
    (:class:`~diffopt_ros.mpc.models.Unicycle`, no parameters) or ``bicycle`` (:class:`Bicycle`;
    ``max_steer_rate`` too).

    Raises:
        ValueError: an unknown name (the known ones listed).
    """
    params = dict(params or {})
    if name not in MODELS:
        raise ValueError(f'unknown model {name!r}; expected one of {", ".join(MODELS)}')
    cls = MODELS[name]
    names = getattr(cls, 'param_names', ())
    extra = ('max_steer_rate',) if cls is Bicycle else ()
    return cls(dt=dt, **{k: float(v) for k, v in params.items() if k in names or k in extra})


#: Dynamics models by the name of mpc_node's ``model`` parameter.
MODELS: dict[str, type[Dynamics]] = {'diff_drive_lag': DiffDriveLag, 'unicycle': Unicycle, 'bicycle': Bicycle}


def model_state(model: Dynamics, state: torch.Tensor, max_steer: float = math.pi / 2) -> torch.Tensor:
    """The model's states ``(..., n_x)`` of odometry states ``(..., 5)`` ``(x, y, yaw, v, omega)``
    (m, m, rad, m/s, rad/s): a :class:`Bicycle`'s fifth entry becomes the steering angle
    (:func:`steer_from_twist`, within ``±max_steer``, 0 at rest); a
    :class:`~diffopt_ros.mpc.models.Unicycle` keeps the pose ``(..., 3)``; others are unchanged."""
    if isinstance(model, Bicycle):
        steer = steer_from_twist(state[..., 3], state[..., 4], model.wheelbase.detach(), max_steer)
        return torch.cat((state[..., :4], steer.unsqueeze(-1)), -1)
    return state[..., :model.n_x]


def command_of(model: Dynamics, controls: torch.Tensor, steering_angle: bool = False) -> torch.Tensor:
    """What ``/cmd_vel`` carries for model controls ``(..., 2)``: a :class:`Bicycle`'s
    ``(v_cmd, steer_cmd)`` become the Twist ``(v, v tan(steer) / wheelbase)`` (m/s, rad/s), or stay
    ``(v, steer)`` (m/s, rad) with ``steering_angle``; other models' controls are Twists already."""
    if isinstance(model, Bicycle) and not steering_angle:
        v = controls[..., 0]
        return torch.stack((v, twist_from_steer(v, controls[..., 1], model.wheelbase.detach())), -1)
    return controls


def control_of(model: Dynamics, commands: torch.Tensor, max_steer: float = math.pi / 2,
               steering_angle: bool = False) -> torch.Tensor:
    """Model controls ``(..., 2)`` of sent commands ``(..., 2)``, the inverse of :func:`command_of`
    (a Twist at ``|v| < MIN_STEERING_SPEED`` gives steering angle 0)."""
    if isinstance(model, Bicycle) and not steering_angle:
        v = commands[..., 0]
        steer = steer_from_twist(v, commands[..., 1], model.wheelbase.detach(), max_steer)
        return torch.stack((v, steer), -1)
    return commands


def seed_controls(model: Dynamics, lower: torch.Tensor, upper: torch.Tensor) -> list[torch.Tensor]:
    """Control sequences ``(B, T, 2)`` for a solve to start from besides its warm start, within the
    bounds ``lower``, ``upper`` ``(B, T, 2)``: for a :class:`Bicycle`, arcs at half the speed
    bound with full steering left and right, forwards, and backwards where the lower speed bound
    is negative (reverse allowed); none for the other models (they turn at rest, so zero
    controls are no stationary point of theirs)."""
    if not isinstance(model, Bicycle):
        return []
    seeds = []
    for speed in (0.5 * upper[..., 0], 0.5 * lower[..., 0]):      # forwards, backwards
        if bool((speed.abs() > MIN_STEERING_SPEED).all()):
            seeds += [torch.stack((speed, steer), -1) for steer in (upper[..., 1], lower[..., 1])]
    return seeds
