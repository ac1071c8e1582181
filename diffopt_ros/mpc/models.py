"""Robot and benchmark dynamics models (discrete time, batched, learnable).

* :class:`DiffDriveLag` - the diff-drive robot of docs/CONTRACTS.md: unicycle kinematics with
  first-order actuator lag and gains (state ``(x, y, yaw, v, omega)``, control ``(v_cmd, omega_cmd)``).
* :class:`Unicycle` - kinematic unicycle, state ``(x, y, yaw)``, control ``(v, omega)``.
* :class:`KinematicBicycle` - Ackermann car, state ``(x, y, yaw, v)``, control ``(accel, steer)``.
* :class:`Pendulum`, :class:`Cartpole` - the mpc.pytorch ``env_dx`` benchmark systems.

Positive physical parameters are stored as logarithms (``log_<name>`` parameters) and read as
attributes with their plain names (``model.gain_v`` is a tensor); assigning a float to the plain
name (``model.gain_v = 0.8``) sets the underlying parameter in place. Values given as Python floats
stay exact until the model's dtype is known: ``Pendulum(gravity=9.81).double().gravity == 9.81``
(:class:`~diffopt_ros.mpc.exact.ExactFloats`; the plain-name value is ``v * exp(log_v - log(v))``
for the float ``v`` last given, which is ``v`` exactly while the parameter holds ``log(v)``).
"""
from __future__ import annotations

import math

import torch

from .dynamics import Dynamics, RolloutFn, StepFn, batch_shape, positive_parameter
from .exact import ExactFloats


class _PositiveParams(Dynamics, ExactFloats):
    """Mixin-style base: exposes ``log_<name>`` parameters as positive attributes ``<name>``."""

    param_names: tuple[str, ...] = ()

    def _init_params(self, **values: float) -> None:
        self.__dict__['_bases'] = {}
        for name in self.param_names:
            setattr(self, 'log_' + name, positive_parameter(values[name], f'{type(self).__name__}.{name}'))
            self._set_base(name, float(values[name]))

    def _set_base(self, name: str, value: float) -> None:
        """``value`` (a Python float) is the parameter's exact value while ``log_<name>`` holds its log."""
        log_value = math.log(value)
        self._bases[name] = (value, log_value)
        self.record_exact('log_' + name, torch.tensor(log_value, dtype=torch.float64))

    def __getattr__(self, name: str):
        if name in type(self).param_names:
            value, log_value = self.__dict__['_bases'][name]
            return torch.exp(super().__getattr__('log_' + name) - log_value) * value
        return super().__getattr__(name)

    def __setattr__(self, name: str, value) -> None:
        if name in type(self).param_names:
            value = float(value)
            if not value > 0.0:
                raise ValueError(f'{type(self).__name__}.{name} must be > 0, got {value}')
            with torch.no_grad():
                getattr(self, 'log_' + name).fill_(math.log(value))
            self._set_base(name, value)
            return
        super().__setattr__(name, value)

    def parameter_values(self) -> dict[str, float]:
        """The physical parameters as plain floats, e.g. for a parameter YAML file."""
        return {name: float(getattr(self, name).detach()) for name in self.param_names}


class DiffDriveLag(_PositiveParams):
    """Diff-drive robot with actuator gains and first-order lag (docs/CONTRACTS.md).

    State ``x = (x [m], y [m], yaw [rad], v [m/s], omega [rad/s])``, control
    ``u = (v_cmd [m/s], omega_cmd [rad/s])``. One step of ``dt`` seconds:
    ``v' = v + (1 - exp(-dt / tau_v)) (gain_v v_cmd - v)`` (same for omega, exact zero-order hold),
    ``yaw' = yaw + dt w_m``, ``(x', y') = (x, y) + dt v_m (cos, sin)(yaw + dt w_m / 2)`` with
    ``v_m = (v + v') / 2``, ``w_m = (omega + omega') / 2`` (midpoint rule).

    Args:
        dt: step (s).
        gain_v, gain_omega: actuator gains (1), learnable, > 0.
        tau_v, tau_omega: lag time constants (s), learnable, > 0.
    """

    param_names = ('gain_v', 'gain_omega', 'tau_v', 'tau_omega')
    n_x, n_u = 5, 2
    angle_indices = (2,)

    def __init__(self, dt: float = 0.05, gain_v: float = 1.0, gain_omega: float = 1.0,
                 tau_v: float = 0.05, tau_omega: float = 0.05):
        super().__init__()
        if not dt > 0:
            raise ValueError(f'DiffDriveLag.dt must be > 0, got {dt}')
        self.dt = float(dt)
        self._init_params(gain_v=gain_v, gain_omega=gain_omega, tau_v=tau_v, tau_omega=tau_omega)

    def _coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``keep = 1 - a`` and ``drive = a * gain`` for ``(v, omega)``, each ``(2,)``."""
        log_tau = torch.stack((self.log_tau_v, self.log_tau_omega))
        log_gain = torch.stack((self.log_gain_v, self.log_gain_omega))
        keep = torch.exp(-self.dt * torch.exp(-log_tau))       # exp(-dt / tau)
        drive = (1.0 - keep) * log_gain.exp()
        return keep, drive

    def stepper(self) -> StepFn:
        """The step as two affine maps and one ``cos``: 7 tensor operations per call.

        ``y = x Mx + u Mu + b`` holds ``(x, y, yaw', v', omega')``, then ``(yaw_mid, yaw_mid - pi/2)``
        (padded) and ``(dt v_m, dt v_m)`` (zero-padded); the pose update is
        ``y[:5] + cos(y[5:10]) * y[10:15]`` (``cos(a - pi/2) = sin a``; the zero pads are exact).
        """
        keep, drive = self._coefficients()
        dt = self.dt
        Mx = keep.new_zeros(5, 15)
        Mu = keep.new_zeros(2, 15)
        Mx[0, 0] = Mx[1, 1] = Mx[2, 2] = Mx[2, 5] = Mx[2, 6] = 1.0
        Mx[3, 3], Mx[4, 4] = keep[0], keep[1]
        Mu[0, 3], Mu[1, 4] = drive[0], drive[1]
        w_mean, wc_mean = 0.5 * (1.0 + keep[1]), 0.5 * drive[1]        # omega_m = w_mean w + wc_mean wc
        Mx[4, 2], Mu[1, 2] = dt * w_mean, dt * wc_mean
        Mx[4, 5] = Mx[4, 6] = 0.5 * dt * w_mean
        Mu[1, 5] = Mu[1, 6] = 0.5 * dt * wc_mean
        Mx[3, 10] = Mx[3, 11] = dt * 0.5 * (1.0 + keep[0])
        Mu[0, 10] = Mu[0, 11] = dt * 0.5 * drive[0]
        bias = keep.new_zeros(15)
        bias[6] = -0.5 * math.pi

        def step(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            if x.ndim == 2 and u.ndim == 2:
                y = torch.addmm(torch.addmm(bias, u, Mu), x, Mx)
            else:
                y = x @ Mx + u @ Mu + bias
            return torch.addcmul(y[..., :5], torch.cos(y[..., 5:10]), y[..., 10:])

        return step

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One step: ``x (..., 5)``, ``u (..., 2)`` -> ``(..., 5)``."""
        return self.stepper()(x, u)

    def jacobians(self, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form ``A (..., 5, 5)``, ``B (..., 5, 2)``."""
        keep, drive = self._coefficients()
        dt = self.dt
        batch = batch_shape(x, u)
        vw_next = torch.addcmul(x[..., 3:] * keep, drive, u)
        twice_mean = x[..., 3:] + vw_next
        yaw_mid = x[..., 2] + 0.25 * dt * twice_mean[..., 1]
        c, s = yaw_mid.cos(), yaw_mid.sin()
        rot = torch.stack((c, s), dim=-1)                         # (..., 2)
        perp = torch.stack((-s, c), dim=-1) * (0.5 * dt * twice_mean[..., :1])   # dt v_m (-s, c)
        dmean = 0.5 * (1.0 + keep)                                # d(mean)/d(state rate)
        dmean_u = 0.5 * drive                                     # d(mean)/d(command)
        # rows x, y: columns yaw, v, omega and v_cmd, omega_cmd
        A_top = torch.stack((perp, rot * (dt * dmean[0]), perp * (0.5 * dt * dmean[1])), dim=-1)
        B_top = torch.stack((rot * (dt * dmean_u[0]), perp * (0.5 * dt * dmean_u[1])), dim=-1)
        # assemble: A = [[I2, A_top], [0, rows yaw/v/omega]]
        A = torch.zeros(*batch, 5, 5, dtype=A_top.dtype, device=A_top.device)
        A[..., 0, 0] = 1.0
        A[..., 1, 1] = 1.0
        A[..., :2, 2:] = A_top
        A[..., 2, 2] = 1.0
        A[..., 2, 4] = dt * dmean[1]
        A[..., 3, 3] = keep[0]
        A[..., 4, 4] = keep[1]
        B = torch.zeros(*batch, 5, 2, dtype=A_top.dtype, device=A_top.device)
        B[..., :2, :] = B_top
        B[..., 2, 1] = dt * dmean_u[1]
        B[..., 3, 0] = drive[0]
        B[..., 4, 1] = drive[1]
        return A, B

    def weighted_hessian(self, x: torch.Tensor, u: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Closed form: only ``x' = x + dt v_m cos(psi)`` and ``y' = y + dt v_m sin(psi)`` curve, with
        ``v_m = a . z`` and ``psi = yaw_mid = b . z`` affine in ``z = (x, u)``; so
        ``d2 (lam . f) = dt [phi' (a b^T + b a^T) + v_m phi'' b b^T]``,
        ``phi(psi) = lam_x cos(psi) + lam_y sin(psi)``."""
        keep, drive = self._coefficients()
        dt = self.dt
        zero = torch.zeros_like(keep[0])
        a = torch.stack((zero, zero, zero, 0.5 * (1.0 + keep[0]), zero, 0.5 * drive[0], zero))
        b = torch.stack((zero, zero, torch.ones_like(zero), zero, 0.25 * dt * (1.0 + keep[1]),
                         zero, 0.25 * dt * drive[1]))
        z = torch.cat((x, u), -1)
        v_m, psi = z @ a, z @ b
        c, s = psi.cos(), psi.sin()
        slope = dt * (lam[..., 1] * c - lam[..., 0] * s)                      # dt phi'
        bend = -dt * v_m * (lam[..., 0] * c + lam[..., 1] * s)                # dt v_m phi''
        ab = torch.outer(a, b)
        return slope[..., None, None] * (ab + ab.T) + bend[..., None, None] * torch.outer(b, b)


class Unicycle(Dynamics):
    """Kinematic unicycle: state ``(x [m], y [m], yaw [rad])``, control ``(v [m/s], omega [rad/s])``.

    ``yaw' = yaw + dt omega``, ``(x', y') = (x, y) + dt v (cos, sin)(yaw + dt omega / 2)``.
    """

    n_x, n_u = 3, 2
    angle_indices = (2,)

    def __init__(self, dt: float = 0.05):
        super().__init__()
        self.dt = float(dt)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        yaw = x[..., 2:]
        yaw_mid = torch.add(yaw, u[..., 1:], alpha=0.5 * self.dt)
        heading = torch.cat((yaw_mid.cos(), yaw_mid.sin()), dim=-1)
        pos = torch.addcmul(x[..., :2], heading, u[..., :1], value=self.dt)
        return torch.cat((pos, torch.add(yaw, u[..., 1:], alpha=self.dt)), dim=-1)

    def jacobians(self, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dt = self.dt
        batch = batch_shape(x, u)
        yaw_mid = x[..., 2] + 0.5 * dt * u[..., 1]
        c, s = yaw_mid.cos(), yaw_mid.sin()
        dv = dt * u[..., 0]
        A = torch.zeros(*batch, 3, 3, dtype=x.dtype, device=x.device)
        A[..., 0, 0] = A[..., 1, 1] = A[..., 2, 2] = 1.0
        A[..., 0, 2] = -dv * s
        A[..., 1, 2] = dv * c
        B = torch.zeros(*batch, 3, 2, dtype=x.dtype, device=x.device)
        B[..., 0, 0] = dt * c
        B[..., 1, 0] = dt * s
        B[..., 0, 1] = -0.5 * dt * dv * s
        B[..., 1, 1] = 0.5 * dt * dv * c
        B[..., 2, 1] = dt
        return A, B


class KinematicBicycle(_PositiveParams):
    """Kinematic bicycle (Ackermann car) with a learnable wheelbase.

    State ``(x [m], y [m], yaw [rad], v [m/s])``, control ``(accel [m/s^2], steer [rad])``.
    Midpoint step: ``v_m = v + dt a / 2``, ``yaw' = yaw + dt v_m tan(steer) / wheelbase``,
    ``(x', y') = (x, y) + dt v_m (cos, sin)(yaw + dt v_m tan(steer) / (2 wheelbase))``, ``v' = v + dt a``.

    Args:
        dt: step (s).
        wheelbase: axle distance (m), learnable, > 0.
    """

    param_names = ('wheelbase',)
    n_x, n_u = 4, 2
    angle_indices = (2,)

    def __init__(self, dt: float = 0.05, wheelbase: float = 0.3):
        super().__init__()
        self.dt = float(dt)
        self._init_params(wheelbase=wheelbase)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        dt = self.dt
        v_mid = x[..., 3] + 0.5 * dt * u[..., 0]
        yaw_rate = v_mid * torch.tan(u[..., 1]) / self.wheelbase
        yaw_mid = x[..., 2] + 0.5 * dt * yaw_rate
        return torch.stack((
            x[..., 0] + dt * v_mid * yaw_mid.cos(),
            x[..., 1] + dt * v_mid * yaw_mid.sin(),
            x[..., 2] + dt * yaw_rate,
            x[..., 3] + dt * u[..., 0],
        ), dim=-1)


class Pendulum(_PositiveParams):
    """The mpc.pytorch ``PendulumDx`` (simple): state ``(cos th, sin th, th_dot [rad/s])``, torque ``u``.

    ``th_dot' = th_dot + dt (3 g / (2 l) sin th + 3 u / (m l^2))``, ``th' = th + dt th_dot'``.
    ``th = 0`` is upright. Learnable ``gravity`` (m/s^2), ``mass`` (kg), ``length`` (m).
    """

    param_names = ('gravity', 'mass', 'length')
    n_x, n_u = 3, 1
    angle_indices = ()

    def __init__(self, dt: float = 0.05, gravity: float = 10.0, mass: float = 1.0, length: float = 1.0):
        super().__init__()
        self.dt = float(dt)
        self._init_params(gravity=gravity, mass=mass, length=length)

    def stepper(self) -> StepFn:
        """``th_dot'`` and ``dt th_dot'`` are affine in ``(x, u)`` (one pair of ``addmm``); then
        ``th' = atan2(sin, cos) + dt th_dot'`` and ``(cos, sin)(th') = cos(th' - (0, pi/2))``."""
        dt = self.dt
        g, m, l = self.gravity, self.mass, self.length
        k_grav, k_u = dt * 1.5 * g / l, dt * 3.0 / (m * l * l)
        Mx = k_grav.new_zeros(3, 2)
        Mx[1, 0], Mx[2, 0] = k_grav, 1.0
        Mx[:, 1] = dt * Mx[:, 0]
        Mu = torch.stack((k_u, dt * k_u)).view(1, 2)
        zero = k_grav.new_zeros(2)
        phase = torch.tensor([0.0, 0.5 * math.pi], dtype=k_grav.dtype, device=k_grav.device)

        def step(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            if x.ndim == 2 and u.ndim == 2:
                y = torch.addmm(torch.addmm(zero, u, Mu), x, Mx)
            else:
                y = x @ Mx + u @ Mu
            th = torch.atan2(x[..., 1:2], x[..., 0:1]) + y[..., 1:]
            return torch.cat((torch.cos(th - phase), y[..., :1]), dim=-1)

        return step

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.stepper()(x, u)

    def rollout_fn(self) -> RolloutFn:
        """The roll-out in ``(th, th_dot)`` (four operations a step instead of a step's eleven);
        ``(cos, sin)`` of all angles at the end. ``x_init`` is kept as it is and its ``sin th``
        entry enters the first step as it is, as in :meth:`stepper`."""
        dt = self.dt
        g, m, l = self.gravity, self.mass, self.length
        k_grav, k_u = dt * 1.5 * g / l, dt * 3.0 / (m * l * l)

        def roll_out(x_init: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
            th, sin_th, th_dot = torch.atan2(x_init[..., 1], x_init[..., 0]), x_init[..., 1], x_init[..., 2]
            angles, rates = [], []
            for push in (controls[..., 0] * k_u).unbind(-1):
                if angles:
                    sin_th = torch.sin(th)
                th_dot = torch.addcmul(th_dot + push, sin_th, k_grav)
                th = torch.add(th, th_dot, alpha=dt)
                angles.append(th)
                rates.append(th_dot)
            th = torch.stack(angles, -1)
            rest = torch.stack((th.cos(), th.sin(), torch.stack(rates, -1)), -1)
            return torch.cat((x_init.unsqueeze(-2), rest), -2)

        return roll_out

    def jacobians(self, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``d(cos th', sin th') = (-sin th', cos th') d th'`` with
        ``d th' = grad(th') . d(cos, sin, th_dot, u)``; ``th_dot'`` is affine (a constant row)."""
        dt = self.dt
        g, m, l = self.gravity, self.mass, self.length
        k_grav, k_u = dt * 1.5 * g / l, dt * 3.0 / (m * l * l)
        zero, one = torch.zeros_like(k_grav), torch.ones_like(k_grav)
        rate_row = torch.stack((zero, k_grav, one, k_u))                # d th_dot' / d(c, s, th_dot, u)
        c, s, w = x.unbind(-1)
        inv_r2 = (c * c + s * s).reciprocal()
        th_next = torch.add(torch.atan2(s, c), torch.addcmul(w + k_u * u[..., 0], s, k_grav), alpha=dt)
        # grad(th') = grad(atan2(s, c)) + dt * rate_row
        grad = torch.cat((torch.stack((-s * inv_r2, c * inv_r2), -1), torch.zeros_like(x[..., :2])), -1)
        grad = torch.add(grad, rate_row, alpha=dt)
        J = torch.cat((torch.stack((-th_next.sin(), th_next.cos()), -1).unsqueeze(-1) * grad.unsqueeze(-2),
                       rate_row.expand(*grad.shape[:-1], 1, 4)), -2)      # (..., 3, 4)
        return J[..., :3], J[..., 3:]

    def weighted_hessian(self, x: torch.Tensor, u: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Closed form: ``th_dot'`` is affine, so only ``phi = lam_0 cos th' + lam_1 sin th'`` curves:
        ``phi'' grad(th') grad(th')^T + phi' d2(th')``, where ``d2(th')`` is ``atan2``'s in ``(cos, sin)``."""
        dt = self.dt
        g, m, l = self.gravity, self.mass, self.length
        k_grav, k_u = dt * 1.5 * g / l, dt * 3.0 / (m * l * l)
        c, s, w = x.unbind(-1)
        r2 = c * c + s * s
        th_next = torch.atan2(s, c) + dt * (w + k_grav * s + k_u * u[..., 0])
        cn, sn = th_next.cos(), th_next.sin()
        slope = lam[..., 1] * cn - lam[..., 0] * sn                 # d phi / d th'
        bend = -(lam[..., 0] * cn + lam[..., 1] * sn)               # d2 phi / d th'2
        ones = torch.ones_like(c)
        grad = torch.stack((-s / r2, c / r2 + dt * k_grav, dt * ones, dt * k_u * ones), -1)
        H = bend[..., None, None] * grad.unsqueeze(-1) * grad.unsqueeze(-2)
        cs, diff = 2.0 * c * s / (r2 * r2), (s * s - c * c) / (r2 * r2)   # atan2's second derivatives
        H[..., :2, :2] += slope[..., None, None] * torch.stack((torch.stack((cs, diff), -1),
                                                               torch.stack((diff, -cs), -1)), -2)
        return H


class Cartpole(_PositiveParams):
    """The mpc.pytorch ``CartpoleDx``: state ``(x, x_dot, cos th, sin th, th_dot)``, force ``u [N]``.

    Explicit Euler with the classic cart-pole accelerations; learnable ``gravity`` (m/s^2),
    ``masscart``, ``masspole`` (kg), ``length`` (m, half pole length).
    """

    param_names = ('gravity', 'masscart', 'masspole', 'length')
    n_x, n_u = 5, 1
    angle_indices = ()

    def __init__(self, dt: float = 0.05, gravity: float = 9.8, masscart: float = 1.0,
                 masspole: float = 0.1, length: float = 0.5):
        super().__init__()
        self.dt = float(dt)
        self._init_params(gravity=gravity, masscart=masscart, masspole=masspole, length=length)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        g, mc, mp, l = self.gravity, self.masscart, self.masspole, self.length
        total = mp + mc
        pml = mp * l
        pos, vel, cos_th, sin_th, th_dot = x.unbind(-1)
        th = torch.atan2(sin_th, cos_th)
        cart_in = (u[..., 0] + pml * th_dot * th_dot * sin_th) / total
        th_acc = (g * sin_th - cos_th * cart_in) / (l * (4.0 / 3.0 - mp * cos_th * cos_th / total))
        x_acc = cart_in - pml * th_acc * cos_th / total
        dt = self.dt
        th = th + dt * th_dot
        return torch.stack((pos + dt * vel, vel + dt * x_acc, th.cos(), th.sin(), th_dot + dt * th_acc),
                           dim=-1)
