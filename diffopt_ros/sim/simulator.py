"""The simulator: one differential-drive robot or Ackermann car in a :class:`~diffopt_ros.sim.world.World`.

Deterministic for a given seed: odometry noise and lidar noise come from two independent
streams of ``numpy.random.SeedSequence(seed)``, so taking more or fewer scans never changes the
odometry. Example::

    from diffopt_ros.sim import Simulator, World
    sim = Simulator(World.load('loop'), seed=0)
    for _ in range(100):
        sim.step((0.5, 0.1), 0.01)        # v_cmd m/s, omega_cmd rad/s, dt s
    sim.true_state, sim.odometry, sim.scan()
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffopt_ros.lie import wrap_angle
from diffopt_ros.sim.robot import RobotParams, integrate, integrate_ackermann
from diffopt_ros.sim.sensors import SensorParams, WheelOdometry
from diffopt_ros.sim.world import World

# Longest interval between collision checks (s): at 3 m/s the robot moves 6 cm, well under its
# radius, so it cannot pass through a (zero-thickness) wall between two checks.
COLLISION_STEP = 0.02


class CollisionError(ValueError):
    """A start pose that overlaps the world's geometry."""


@dataclass
class Rollout:
    """What :meth:`Simulator.rollout` recorded (T steps, S scans).

    Attributes:
        time: ``(T + 1,)`` sim time (s).
        true_states: ``(T + 1, 5)`` true ``[x, y, yaw, v, omega]`` in the map frame.
        odometry: ``(T + 1, 5)`` odometry ``[x, y, yaw, v, omega]`` in the odom frame.
        commands: ``(T, 2)`` commands ``[v_cmd, omega_cmd]`` applied over each step.
        scan_steps: ``(S,)`` indices into ``time`` at which scans were taken.
        scans: ``(S, N)`` lidar ranges (m; ``inf`` no return).
        collisions: number of steps that ended against an obstacle.
    """

    time: np.ndarray
    true_states: np.ndarray
    odometry: np.ndarray
    commands: np.ndarray
    scan_steps: np.ndarray
    scans: np.ndarray
    collisions: int


class Simulator:
    """A seeded 2D simulation of the true robot, its wheel odometry and its lidar.

    Args:
        world: the static world.
        robot: true dynamics and radius (default :class:`RobotParams`).
        sensors: odometry and lidar parameters (default :class:`SensorParams`).
        seed: random seed (odometry and lidar noise).
        start_pose: ``(3,)`` ``[x, y, yaw]`` in the map frame; default ``world.start``.
        max_substep: longest sub-step of the dynamics integration (s).

    Raises:
        CollisionError: the robot would start overlapping a wall or obstacle.
    """

    def __init__(self, world: World, robot: RobotParams | None = None,
                 sensors: SensorParams | None = None, seed: int = 0, start_pose=None,
                 max_substep: float = 0.005):
        self.world = world
        self.robot = robot or RobotParams()
        self._sensors = sensors or SensorParams()
        self.max_substep = float(max_substep)
        self.time = 0.0
        self.reset(seed, start_pose)

    # ------------------------------------------------------------------ state
    def reset(self, seed: int | None = None, start_pose=None) -> None:
        """Put the robot at rest at ``start_pose`` (default: the last start pose), zero the
        odometry and restart the noise streams from ``seed`` (default: the last seed).
        Sim time keeps running (a clock that jumps back confuses sim-time consumers)."""
        if seed is not None:
            self.seed = int(seed)
        if start_pose is not None or not hasattr(self, 'start_pose'):
            pose = self.world.start if start_pose is None else start_pose
            pose = np.asarray(pose, dtype=np.float64).reshape(3)
            if not np.all(np.isfinite(pose)):
                raise ValueError(f'start pose {pose.tolist()} is not finite')
            self.start_pose = pose
        clearance = self.world.clearance(self.start_pose[:2])
        if clearance < self.robot.radius:
            raise CollisionError(
                f'world {self.world.name}: start pose {self.start_pose.tolist()} is '
                f'{clearance:.3f} m from an obstacle, less than the robot radius '
                f'{self.robot.radius} m')
        odom_seed, lidar_seed = np.random.SeedSequence(self.seed).spawn(2)
        self._lidar_rng = np.random.default_rng(lidar_seed)
        self._odometry = WheelOdometry(self._sensors, np.random.default_rng(odom_seed))
        self._state = [*self.start_pose.tolist(), 0.0, 0.0]
        self.steer = 0.0                           # the car's steering angle (rad; ackermann only)
        self._state[2] = wrap_angle(self._state[2])
        self._free_disc = (self._state[0], self._state[1], clearance)  # clearance known here
        self.distance = 0.0
        self.collisions = 0
        self.collided = False

    @property
    def sensors(self) -> SensorParams:
        """Odometry and lidar parameters (assignable; the odometry keeps its pose)."""
        return self._sensors

    @sensors.setter
    def sensors(self, params: SensorParams) -> None:
        self._sensors = params
        self._odometry.params = params

    @property
    def true_state(self) -> np.ndarray:
        """``(5,)`` true ``[x, y, yaw, v, omega]`` in the map frame (a copy)."""
        return np.array(self._state)

    @property
    def odometry(self) -> np.ndarray:
        """``(5,)`` odometry ``[x, y, yaw, v, omega]`` in the odom frame (a copy)."""
        return np.array([*self._odometry.pose, *self._odometry.twist])

    @property
    def odometry_covariance(self) -> np.ndarray:
        """``(3, 3)`` covariance of the odometry pose ``[x, y, yaw]`` (m², rad²)."""
        return np.array(self._odometry.covariance)

    # ------------------------------------------------------------------ stepping
    def step(self, command, dt: float) -> np.ndarray:
        """Apply ``command`` ``(2,)`` ``[v_cmd, omega_cmd]`` (m/s, rad/s) for ``dt`` seconds (a car
        turns the Twist into a steering command, see :func:`~diffopt_ros.sim.robot.ackermann_steer`).

        The robot stops (v = 0, turning still allowed) instead of moving closer to a wall or
        obstacle than its radius. Returns the new true state ``(5,)``.
        """
        v_cmd, omega_cmd = float(command[0]), float(command[1])
        if not (math.isfinite(v_cmd) and math.isfinite(omega_cmd)):
            raise ValueError(f'command {command!r} is not finite')
        if not dt >= 0.0:
            raise ValueError(f'dt must be >= 0, got {dt}')
        chunks = max(1, math.ceil(dt / COLLISION_STEP - 1e-9))
        h = dt / chunks
        distance = turned = 0.0
        self.collided = False
        car = self.robot.kind == 'ackermann'
        for _ in range(chunks):
            if car:
                state, steer, ds, dyaw = integrate_ackermann(self._state, self.steer, (v_cmd, omega_cmd),
                                                             h, self.robot, self.max_substep)
            else:
                state, ds, dyaw = integrate(self._state, (v_cmd, omega_cmd), h, self.robot,
                                            self.max_substep)
            if self._hits_obstacle(state):
                state[0], state[1], state[3] = self._state[0], self._state[1], 0.0
                ds = 0.0
                if car:            # stopped against the obstacle: no yaw without motion
                    state[2], state[4], dyaw = self._state[2], 0.0, 0.0
                self.collided = True
            if car:
                self.steer = steer
            self._state = state
            distance += ds
            turned += dyaw
        self._state[2] = wrap_angle(self._state[2])
        self.collisions += self.collided
        self.distance += abs(distance)
        self.time += dt
        self._odometry.update(distance, turned, self._state[3], self._state[4])
        return self.true_state

    def _hits_obstacle(self, state: list[float]) -> bool:
        """Whether moving to ``state`` brings the robot closer than its radius to an obstacle
        (moving away from one it already touches is allowed). The world is only queried once
        the robot has left the free disc around the last query point."""
        x, y = state[0], state[1]
        cx, cy, known = self._free_disc
        if math.hypot(x - cx, y - cy) < known - self.robot.radius:
            return False
        clearance = self.world.clearance((x, y))
        if clearance < self.robot.radius and clearance < self.world.clearance(self._state[:2]):
            return True
        self._free_disc = (x, y, clearance)
        return False

    def scan(self) -> np.ndarray:
        """``(lidar_beams,)`` noisy lidar ranges from the current true pose (m).

        ``+inf``: no return within ``lidar_range_max``; ``-inf``: closer than
        ``lidar_range_min`` (REP-117). Beam angles: ``sensors.lidar_angles()``. The raycast
        runs in float32 (errors ~1e-5 m, ~1e-3 m for rays grazing a wall: below the noise).
        """
        p = self._sensors
        x, y, yaw = self._state[:3]
        ranges = self.world.raycast((x, y), yaw + p.lidar_angles(), p.lidar_range_max,
                                    dtype=np.float32).astype(np.float64)
        hit = np.isfinite(ranges)
        noise = self._lidar_rng.standard_normal(ranges.shape) * p.lidar_noise
        ranges[hit] += noise[hit]
        ranges[ranges > p.lidar_range_max] = np.inf
        ranges[ranges < p.lidar_range_min] = -np.inf
        return ranges

    def rollout(self, commands, dt: float, scan_every: int = 0) -> Rollout:
        """Step through ``commands`` ``(T, 2)`` (each held for ``dt`` s) and record everything.

        Args:
            commands: ``(T, 2)`` ``[v_cmd, omega_cmd]`` per step.
            dt: step length (s).
            scan_every: take a scan every this many steps (0: none), starting at step 0.
        """
        commands = np.asarray(commands, dtype=np.float64).reshape(-1, 2)
        steps = len(commands)
        time, true_states, odometry = (np.empty(steps + 1), np.empty((steps + 1, 5)),
                                       np.empty((steps + 1, 5)))
        scans, scan_steps = [], []
        collisions = self.collisions
        for k in range(steps + 1):
            time[k], true_states[k], odometry[k] = self.time, self._state, self.odometry
            if scan_every and k % scan_every == 0:
                scans.append(self.scan())
                scan_steps.append(k)
            if k < steps:
                self.step(commands[k], dt)
        beams = int(self._sensors.lidar_beams)
        return Rollout(time=time, true_states=true_states, odometry=odometry, commands=commands,
                       scan_steps=np.array(scan_steps, dtype=np.int64),
                       scans=np.array(scans).reshape(-1, beams),
                       collisions=self.collisions - collisions)
