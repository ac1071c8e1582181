"""The "true" differential-drive robot of the simulator (docs/CONTRACTS.md, robot model).

State ``(x, y, yaw, v, omega)`` (m, m, rad, m/s, rad/s), control ``(v_cmd, omega_cmd)``.
Continuous-time truth, for each speed ``s`` in ``(v, omega)`` with command ``u``::

    ds/dt = clip((gain * u - s) / tau - drag * s, -max_accel, max_accel)
    dx/dt = v cos(yaw),  dy/dt = v sin(yaw),  dyaw/dt = omega

With the command held constant over a sub-step this speed equation has a closed-form solution
(a saturated ramp followed by an exponential approach), which :func:`integrate` uses exactly;
the pose is integrated with the exact mean speeds of each sub-step and the midpoint heading.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

FIELDS = ('gain_v', 'gain_omega', 'tau_v', 'tau_omega', 'drag_v', 'drag_omega',
          'max_accel_v', 'max_accel_omega')


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

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, (int, float)) or math.isnan(value):
                raise ValueError(f'RobotParams.{name}: expected a number, got {value!r}')
        for name in ('gain_v', 'gain_omega', 'tau_v', 'tau_omega', 'drag_v', 'drag_omega',
                     'radius'):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f'RobotParams.{name}: {getattr(self, name)} is not finite')
        for name in ('tau_v', 'tau_omega', 'max_accel_v', 'max_accel_omega', 'radius'):
            if getattr(self, name) <= 0:
                raise ValueError(f'RobotParams.{name}: must be > 0, got {getattr(self, name)}')
        for name in ('drag_v', 'drag_omega'):
            if getattr(self, name) < 0:
                raise ValueError(f'RobotParams.{name}: must be >= 0, got {getattr(self, name)}')


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
        heading = yaw + 0.5 * dyaw
        x += ds * math.cos(heading)
        y += ds * math.sin(heading)
        yaw += dyaw
        distance += ds
        turned += dyaw
    return [x, y, yaw, v, omega], distance, turned


