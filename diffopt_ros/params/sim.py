"""Parameters of ``sim_node`` (the 2D simulator). The ``robot.*``, ``odom.*`` and ``lidar.*``
defaults are the fields of :class:`~diffopt_ros.sim.robot.RobotParams` and
:class:`~diffopt_ros.sim.sensors.SensorParams` (written once, there)."""
from __future__ import annotations

import math

from diffopt_ros.params.schema import NodeSchema, Param
from diffopt_ros.sim.robot import KINDS, RobotParams
from diffopt_ros.sim.sensors import SensorParams

NODE_NAME = 'sim_node'

_ROBOT, _SENSORS = RobotParams(), SensorParams()
_BIG = 1e6

SCHEMA = NodeSchema(NODE_NAME, (
    Param('world', 'loop', 'world: name under config/worlds/ or path of a world YAML file',
          read_only=True),
    Param('seed', 0, 'seed of the odometry and lidar noise', low=0, high=2**31 - 1,
          read_only=True),
    Param('step_rate', 100.0, 'simulation steps per simulated second', low=1.0, high=10000.0,
          read_only=True, unit='Hz'),
    Param('real_time_factor', 1.0, 'simulated seconds per wall second; 0 = as fast as possible',
          low=0.0, high=1000.0),
    Param('odom_rate', 50.0, '/odom and /ground_truth/odom rate (sim time)', low=0.1,
          high=10000.0, unit='Hz'),
    Param('scan_rate', 10.0, '/scan rate (sim time)', low=0.1, high=1000.0, unit='Hz'),
    Param('cmd_timeout', 0.5, 'stop when /cmd_vel is silent this long (sim time)', low=0.001,
          high=_BIG, unit='s'),
    Param('wait_for_cmd', 0.0,
          'lock-step with a controller: once a /cmd_vel has arrived, never run more than this '
          'beyond the latest one (sim time; 0 = never wait). Set it a little above the '
          'controller period: sim time then advances only as fast as the controller keeps up',
          low=0.0, high=_BIG, unit='s'),
    Param('publish_clock', True, 'publish /clock (rosgraph_msgs/Clock) every step'),
    Param('paused', False, 'freeze the simulation (time, robot, publishing)'),
    Param('stamped_cmd', False, '/cmd_vel is geometry_msgs/TwistStamped (else Twist)',
          read_only=True),
    Param('use_world_start', True, "start at the world's start pose, else at start_pose",
          read_only=True),
    Param('start_pose', [0.0, 0.0, 0.0], 'start pose [x, y, yaw] in the map frame', length=3,
          read_only=True, unit='m, m, rad'),
    Param('robot.gain_v', _ROBOT.gain_v, 'true actuator gain on v', low=0.0, high=10.0, unit='1'),
    Param('robot.gain_omega', _ROBOT.gain_omega, 'true actuator gain on omega', low=0.0,
          high=10.0, unit='1'),
    Param('robot.tau_v', _ROBOT.tau_v, 'true lag time constant of v', low=1e-4, high=100.0,
          unit='s'),
    Param('robot.tau_omega', _ROBOT.tau_omega, 'true lag time constant of omega', low=1e-4,
          high=100.0, unit='s'),
    Param('robot.drag_v', _ROBOT.drag_v, 'true linear drag on v', low=0.0, high=100.0,
          unit='1/s'),
    Param('robot.drag_omega', _ROBOT.drag_omega, 'true linear drag on omega', low=0.0,
          high=100.0, unit='1/s'),
    Param('robot.max_accel_v', _ROBOT.max_accel_v, 'forward acceleration limit', low=1e-3,
          high=_BIG, unit='m/s^2'),
    Param('robot.max_accel_omega', _ROBOT.max_accel_omega, 'yaw acceleration limit', low=1e-3,
          high=_BIG, unit='rad/s^2'),
    Param('robot.radius', _ROBOT.radius, 'footprint radius for collisions', low=0.01, high=5.0,
          unit='m'),
    Param('robot.kind', _ROBOT.kind, 'the robot base: differential drive or Ackermann car (the car '
          'turns /cmd_vel into a steering angle atan(omega wheelbase / v); robot.*_omega do not '
          'apply to it)', choices=KINDS, read_only=True),
    Param('robot.wheelbase', _ROBOT.wheelbase, 'axle distance of the car', low=0.01, high=20.0,
          unit='m'),
    Param('robot.max_steer', _ROBOT.max_steer, 'steering limit of the car', low=0.01, high=1.5,
          unit='rad'),
    Param('robot.max_steer_rate', _ROBOT.max_steer_rate, 'steering rate limit of the car',
          low=1e-3, high=100.0, unit='rad/s'),
    Param('robot.tau_steer', _ROBOT.tau_steer, 'first-order steering lag of the car', low=1e-3,
          high=5.0, unit='s'),
    Param('odom.scale_v', _SENSORS.odom_scale_v, 'odometry distance scale error', low=0.5,
          high=2.0, unit='1'),
    Param('odom.scale_omega', _SENSORS.odom_scale_omega, 'odometry heading scale error',
          low=0.5, high=2.0, unit='1'),
    Param('odom.noise_v', _SENSORS.odom_noise_v, 'odometry distance noise', low=0.0, high=1.0,
          unit='m/sqrt(m)'),
    Param('odom.noise_omega', _SENSORS.odom_noise_omega, 'odometry heading noise from turning',
          low=0.0, high=1.0, unit='rad/sqrt(rad)'),
    Param('odom.noise_omega_from_v', _SENSORS.odom_noise_omega_from_v,
          'odometry heading noise from driving', low=0.0, high=1.0, unit='rad/sqrt(m)'),
    Param('lidar.beams', _SENSORS.lidar_beams, 'number of lidar beams', low=1, high=10000),
    Param('lidar.fov', _SENSORS.lidar_fov, 'lidar field of view', low=1e-3, high=2.0 * math.pi,
          unit='rad'),
    Param('lidar.range_min', _SENSORS.lidar_range_min, 'lidar minimum range', low=0.0,
          high=_BIG, unit='m'),
    Param('lidar.range_max', _SENSORS.lidar_range_max, 'lidar maximum range', low=0.01,
          high=_BIG, unit='m'),
    Param('lidar.noise', _SENSORS.lidar_noise, 'lidar range noise std', low=0.0, high=10.0,
          unit='m'),
    Param('frames.map', 'map', 'frame of /ground_truth/odom', read_only=True),
    Param('frames.odom', 'odom', 'frame of /odom', read_only=True),
    Param('frames.base', 'base_link', 'child frame of both odometry topics', read_only=True),
    Param('frames.scan', 'base_scan', 'frame of /scan', read_only=True),
), summary='2D simulator: odometry, lidar, ground truth, /clock')
