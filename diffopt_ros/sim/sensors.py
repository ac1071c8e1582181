"""Sensor models: drifting wheel odometry and a 2D lidar.

Wheel odometry integrates measured motion increments into a pose in the ``odom`` frame (which
starts at the robot's start pose, so the odometry pose starts at zero). Per simulation step the
true travelled distance ``ds`` (m) and heading change ``dyaw`` (rad) are measured as::

    ds_m   = odom_scale_v * ds + odom_noise_v * sqrt(|ds|) * n1
    dyaw_m = odom_scale_omega * dyaw
             + sqrt(odom_noise_omega^2 |dyaw| + odom_noise_omega_from_v^2 |ds|) * n2

with ``n1, n2 ~ N(0, 1)``. The noise variance grows with the motion, not with the step count, so
the drift does not depend on the simulation rate (a random walk: after 64 m the distance error
has std ``odom_noise_v * 8``). The odometry twist is the wheel-encoder reading
``(odom_scale_v * v, odom_scale_omega * omega)``: slip noise moves the integrated pose, not the
encoder speeds.

The lidar sits at the robot centre with yaw 0 (frame ``base_scan``); beam ``i`` points at
``lidar_angles()[i]`` in that frame. Ranges get Gaussian noise ``lidar_noise`` (m); beams with
no return within ``lidar_range_max`` read ``inf`` (REP-117).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from diffopt_ros.lie import wrap_angle


@dataclass(frozen=True)
class SensorParams:
    """Odometry and lidar parameters (units in brackets).

    Attributes:
        odom_scale_v: systematic distance scale of the wheel odometry (1).
        odom_scale_omega: systematic heading-change scale (1).
        odom_noise_v: distance noise (m per sqrt(m) travelled).
        odom_noise_omega: heading noise from turning (rad per sqrt(rad) turned).
        odom_noise_omega_from_v: heading noise from driving (rad per sqrt(m) travelled).
        lidar_beams: number of beams.
        lidar_fov: field of view (rad); ``2 pi`` gives a full turn without a duplicate beam.
        lidar_range_min, lidar_range_max: valid range interval (m).
        lidar_noise: range noise standard deviation (m).
    """

    odom_scale_v: float = 1.0
    odom_scale_omega: float = 1.0
    odom_noise_v: float = 0.02
    odom_noise_omega: float = 0.05
    odom_noise_omega_from_v: float = 0.01
    lidar_beams: int = 360
    lidar_fov: float = 2.0 * math.pi
    lidar_range_min: float = 0.12
    lidar_range_max: float = 12.0
    lidar_noise: float = 0.01

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f'SensorParams.{name}: expected a finite number, got {value!r}')
        for name in ('odom_noise_v', 'odom_noise_omega', 'odom_noise_omega_from_v',
                     'lidar_noise', 'lidar_range_min'):
            if getattr(self, name) < 0:
                raise ValueError(f'SensorParams.{name}: must be >= 0, got {getattr(self, name)}')
        if int(self.lidar_beams) != self.lidar_beams or self.lidar_beams < 1:
            raise ValueError(f'SensorParams.lidar_beams: must be a positive integer, '
                             f'got {self.lidar_beams}')
        if not 0 < self.lidar_fov <= 2.0 * math.pi + 1e-9:
            raise ValueError(f'SensorParams.lidar_fov: must be in (0, 2 pi], got {self.lidar_fov}')
        if not self.lidar_range_min < self.lidar_range_max:
            raise ValueError(f'SensorParams: lidar_range_min {self.lidar_range_min} must be below '
                             f'lidar_range_max {self.lidar_range_max}')

    @property
    def full_turn(self) -> bool:
        """Whether the beams cover a full turn (then the last beam stops one step short)."""
        return self.lidar_fov >= 2.0 * math.pi - 1e-9

    @property
    def lidar_increment(self) -> float:
        """Angle between neighbouring beams (rad)."""
        beams = int(self.lidar_beams)
        if self.full_turn:
            return self.lidar_fov / beams
        return self.lidar_fov / (beams - 1) if beams > 1 else 0.0

    def lidar_angles(self) -> np.ndarray:
        """``(lidar_beams,)`` beam angles in the ``base_scan`` frame (rad), from ``-fov/2``."""
        return -0.5 * self.lidar_fov + self.lidar_increment * np.arange(int(self.lidar_beams))


class WheelOdometry:
    """Integrates noisy motion increments into an ``odom``-frame pose with its covariance.

    Plain Python floats (this runs every simulation step); :class:`Simulator` returns arrays.

    Attributes:
        pose: ``(x, y, yaw)`` in the odom frame (m, m, rad; yaw wrapped to ``(-pi, pi]``).
        twist: measured ``(v, omega)`` (m/s, rad/s).
        covariance: 3x3 nested list, covariance of ``pose`` from the random part of the noise model
            (systematic scale errors are not in it).
    """

    def __init__(self, params: SensorParams, rng: np.random.Generator):
        self.params = params
        self.rng = rng
        self.pose = (0.0, 0.0, 0.0)
        self.twist = (0.0, 0.0)
        self.covariance = [[0.0] * 3 for _ in range(3)]

    def update(self, distance: float, turned: float, v: float, omega: float) -> None:
        """Add one step's true increments ``distance`` (m) and ``turned`` (rad); ``v``,
        ``omega`` are the true speeds at the end of the step (m/s, rad/s)."""
        p = self.params
        var_d = p.odom_noise_v ** 2 * abs(distance)
        var_yaw = p.odom_noise_omega ** 2 * abs(turned) + p.odom_noise_omega_from_v ** 2 * abs(distance)
        n1, n2 = self.rng.standard_normal(2).tolist()
        ds = p.odom_scale_v * distance + math.sqrt(var_d) * n1
        dyaw = p.odom_scale_omega * turned + math.sqrt(var_yaw) * n2
        x, y, yaw = self.pose
        heading = yaw + 0.5 * dyaw
        c, s = math.cos(heading), math.sin(heading)
        # P' = F P F^T + G diag(var_d, var_yaw) G^T with F = I + f e_yaw^T (pose Jacobian) and
        # G = [[c, -ds s / 2], [s, ds c / 2], [0, 1]] (noise Jacobian), written out: this runs
        # every step and numpy's per-call overhead would dominate a 3x3 product.
        f = (-ds * s, ds * c, 0.0)
        g = ((c, -0.5 * ds * s), (s, 0.5 * ds * c), (0.0, 1.0))
        P = self.covariance
        fp = [[P[i][j] + f[i] * P[2][j] for j in range(3)] for i in range(3)]
        self.covariance = [[fp[i][j] + fp[i][2] * f[j] + g[i][0] * g[j][0] * var_d
                            + g[i][1] * g[j][1] * var_yaw for j in range(3)] for i in range(3)]
        yaw = wrap_angle(yaw + dyaw)
        self.pose = (x + ds * c, y + ds * s, yaw)
        self.twist = (p.odom_scale_v * v, p.odom_scale_omega * omega)
