"""The "true" robots of the simulator: differential drive (docs/CONTRACTS.md) or Ackermann car.

State ``(x, y, yaw, v, omega)`` (m, m, rad, m/s, rad/s), control ``(v_cmd, omega_cmd)``.
Continuous-time truth, for each speed ``s`` in ``(v, omega)`` with command ``u``::

    ds/dt = clip((gain * u - s) / tau - drag * s, -max_accel, max_accel)
    dx/dt = v cos(yaw),  dy/dt = v sin(yaw),  dyaw/dt = omega

With the command held constant over a sub-step this speed equation has a closed-form solution
(a saturated ramp followed by an exponential approach), which :func:`integrate` uses exactly;
the pose is integrated with the exact mean speeds of each sub-step and the midpoint heading.

The Ackermann car (``kind='ackermann'``, :func:`integrate_ackermann`) takes the same Twist
command and turns it into a steering command ``atan(omega_cmd wheelbase / v_cmd)`` (clipped to
``max_steer``; 0 below ``MIN_STEERING_SPEED``) as a Twist-driven car base does; its speed obeys
the equation above, its steering angle ``ds/dt = clip((steer_cmd - steer) / tau_steer,
±max_steer_rate)`` (the same closed form), and ``dyaw/dt = v tan(steer) / wheelbase``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

FIELDS = ('gain_v', 'gain_omega', 'tau_v', 'tau_omega', 'drag_v', 'drag_omega',
          'max_accel_v', 'max_accel_omega')
KINDS = ('diff_drive', 'ackermann')
#: Command speeds (m/s) below which a Twist carries no steering information.
MIN_STEERING_SPEED = 1e-3


@dataclass(frozen=True)
class RobotParams:
    """True dynamics and size of the simulated robot (defaults: the demo robot of config/sim.yaml).

    Attributes:
        gain_v, gain_omega: actuator gains (1): steady-state speed = gain * command.
        tau_v, tau_omega: first-order lag time constants (s), > 0.
        drag_v, drag_omega: linear drag (1/s), >= 0.
        max_accel_v: forward acceleration limit (m/s^2), > 0 (``inf``: none).
        max_accel_omega: yaw acceleration limit (rad/s^2), > 0 (``inf``: none).
        radius: robot footprint radius for collisions (m), > 0.
        kind: ``'diff_drive'`` or ``'ackermann'`` (the ``*_omega`` fields then do not apply).
        wheelbase: axle distance of the car (m), > 0.
        max_steer: steering limit (rad), in (0, pi/2).
        max_steer_rate: steering rate limit (rad/s), > 0.
        tau_steer: steering lag (s), > 0.
    """

    gain_v: float = 0.8
    gain_omega: float = 0.7
    tau_v: float = 0.25
    tau_omega: float = 0.2
    drag_v: float = 0.0
    drag_omega: float = 0.0
    max_accel_v: float = 2.0
    max_accel_omega: float = 4.0
    radius: float = 0.2
    kind: str = 'diff_drive'
    wheelbase: float = 0.3
    max_steer: float = 0.6
    max_steer_rate: float = 2.0
    tau_steer: float = 0.15

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f'RobotParams.kind: expected one of {", ".join(KINDS)}, got {self.kind!r}')
        for name, value in asdict(self).items():
            if name == 'kind':
                continue
            if not isinstance(value, (int, float)) or math.isnan(value):
                raise ValueError(f'RobotParams.{name}: expected a number, got {value!r}')
        for name in ('gain_v', 'gain_omega', 'tau_v', 'tau_omega', 'drag_v', 'drag_omega',
                     'radius'):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f'RobotParams.{name}: {getattr(self, name)} is not finite')
        for name in ('tau_v', 'tau_omega', 'max_accel_v', 'max_accel_omega', 'radius', 'wheelbase',
                     'max_steer', 'max_steer_rate', 'tau_steer'):
            if getattr(self, name) <= 0:
                raise ValueError(f'RobotParams.{name}: must be > 0, got {getattr(self, name)}')
        for name in ('drag_v', 'drag_omega'):
            if getattr(self, name) < 0:
                raise ValueError(f'RobotParams.{name}: must be >= 0, got {getattr(self, name)}')
        if not self.max_steer < 0.5 * math.pi:
            raise ValueError(f'RobotParams.max_steer: must be < pi/2 rad, got {self.max_steer}')


def lag_response(speed: float, command: float, gain: float, tau: float, drag: float,
                 max_accel: float, h: float) -> tuple[float, float]:
    """Exact solution of ``ds/dt = clip((gain*command - s)/tau - drag*s, ±max_accel)`` over ``h``.

    Args:
        speed: speed at the start (m/s or rad/s).
        command: commanded speed, held constant.
        gain: actuator gain (1).
        tau: lag time constant (s), > 0.
        drag: linear drag (1/s), >= 0.
        max_accel: acceleration limit (per s), > 0, may be ``inf``.
        h: duration (s), >= 0.

    Returns:
        ``(speed after h, integral of the speed over h)`` (the distance or angle covered).
    """
    rate = 1.0 / tau + drag                       # ds/dt = rate * (steady - s) when unclipped
    steady = gain * command / (tau * rate)
    accel = rate * (steady - speed)
    ramp = 0.0                                    # time spent at the acceleration limit
    covered = 0.0
    if abs(accel) > max_accel:                    # |accel| only shrinks along the solution
        sign = 1.0 if accel > 0 else -1.0
        knee = steady - sign * max_accel / rate   # speed where the limit stops binding
        ramp = min(h, (knee - speed) * sign / max_accel)
        covered = speed * ramp + 0.5 * sign * max_accel * ramp * ramp
        speed = speed + sign * max_accel * ramp
    rest = h - ramp
    if rest > 0.0:
        decay = math.exp(-rate * rest)
        covered += steady * rest + (speed - steady) * (1.0 - decay) / rate
        speed = steady + (speed - steady) * decay
    return speed, covered


def integrate(state, command, dt: float, params: RobotParams,
              max_substep: float = 0.005) -> tuple[list[float], float, float]:
    """Advance the true robot by ``dt`` with ``command`` held constant.

    Args:
        state: ``(5,)`` ``[x, y, yaw, v, omega]`` (m, m, rad, m/s, rad/s).
        command: ``(2,)`` ``[v_cmd, omega_cmd]`` (m/s, rad/s).
        dt: duration (s), >= 0.
        params: the true dynamics.
        max_substep: longest sub-step of the pose integration (s).

    Returns:
        ``(new state as a list of 5 floats, distance travelled along the heading (m, signed),
        heading change (rad))``; yaw is not wrapped.
    """
    x, y, yaw, v, omega = (float(s) for s in state[:5])
    v_cmd, omega_cmd = float(command[0]), float(command[1])
    steps = max(1, math.ceil(dt / max_substep - 1e-9))
    h = dt / steps
    distance = turned = 0.0
    p = params
    for _ in range(steps):
        v, ds = lag_response(v, v_cmd, p.gain_v, p.tau_v, p.drag_v, p.max_accel_v, h)
        omega, dyaw = lag_response(omega, omega_cmd, p.gain_omega, p.tau_omega, p.drag_omega,
                                   p.max_accel_omega, h)
        x, y, yaw = _advance_pose(x, y, yaw, ds, dyaw)
        distance += ds
        turned += dyaw
    return [x, y, yaw, v, omega], distance, turned


def _advance_pose(x: float, y: float, yaw: float, ds: float, dyaw: float) -> tuple[float, float, float]:
    """The pose after moving ``ds`` (m) along the midpoint heading while turning ``dyaw`` (rad)."""
    heading = yaw + 0.5 * dyaw
    return x + ds * math.cos(heading), y + ds * math.sin(heading), yaw + dyaw


def ackermann_steer(v_cmd: float, omega_cmd: float, params: RobotParams) -> float:
    """The steering command (rad) a Twist-driven car base derives from ``(v_cmd, omega_cmd)``:
    ``atan(omega_cmd wheelbase / v_cmd)`` clipped to ``±max_steer``, 0 when ``|v_cmd|`` is below
    ``MIN_STEERING_SPEED``."""
    if abs(v_cmd) < MIN_STEERING_SPEED:
        return 0.0
    steer = math.atan(omega_cmd * params.wheelbase / v_cmd)
    return max(-params.max_steer, min(params.max_steer, steer))


def integrate_ackermann(state, steer: float, command, dt: float, params: RobotParams,
                        max_substep: float = 0.005) -> tuple[list[float], float, float, float]:
    """Advance the true car by ``dt`` with the Twist ``command`` held constant.

    Args:
        state: ``(5,)`` ``[x, y, yaw, v, omega]`` (m, m, rad, m/s, rad/s); omega is derived.
        steer: steering angle at the start (rad).
        command: ``(2,)`` ``[v_cmd, omega_cmd]`` (m/s, rad/s), see :func:`ackermann_steer`.
        dt: duration (s), >= 0.
        params: the true car (``kind='ackermann'``).
        max_substep: longest sub-step of the pose integration (s).

    Returns:
        ``(new state, new steering angle (rad), distance travelled (m, signed), heading change
        (rad))``; yaw is not wrapped.
    """
    x, y, yaw, v = (float(s) for s in state[:4])
    p = params
    steer_cmd = ackermann_steer(float(command[0]), float(command[1]), p)
    steps = max(1, math.ceil(dt / max_substep - 1e-9))
    h = dt / steps
    distance = turned = 0.0
    for _ in range(steps):
        v, ds = lag_response(v, float(command[0]), p.gain_v, p.tau_v, p.drag_v, p.max_accel_v, h)
        steer_new, _ = lag_response(steer, steer_cmd, 1.0, p.tau_steer, 0.0, p.max_steer_rate, h)
        dyaw = ds * math.tan(0.5 * (steer + steer_new)) / p.wheelbase
        steer = steer_new
        x, y, yaw = _advance_pose(x, y, yaw, ds, dyaw)
        distance += ds
        turned += dyaw
    return [x, y, yaw, v, v * math.tan(steer) / p.wheelbase], steer, distance, turned
