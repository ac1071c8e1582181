"""A small deterministic 2D world for a differential-drive robot (no ROS needed).

- :class:`World`: walls, round obstacles and landmark posts from ``config/worlds/*.yaml``, with
  vectorized raycasting.
- :class:`RobotParams`: the true dynamics (gains, first-order lag, acceleration limits, drag).
- :class:`SensorParams`: drifting wheel odometry and lidar.
- :class:`Simulator`: steps the robot, reads the sensors, records rollouts.

Example::

    from diffopt_ros.sim import Simulator, World
    sim = Simulator(World.load('loop'), seed=0)
    sim.step((0.5, 0.0), 0.1)     # [v_cmd m/s, omega_cmd rad/s], dt s
    sim.true_state                # (5,) [x, y, yaw, v, omega], map frame
    sim.odometry                  # (5,) same, odom frame, drifting
    sim.scan()                    # (360,) ranges, m
"""
from diffopt_ros.sim.robot import RobotParams, integrate, lag_response
from diffopt_ros.sim.sensors import SensorParams, WheelOdometry
from diffopt_ros.sim.simulator import CollisionError, Rollout, Simulator
from diffopt_ros.sim.world import World, WorldError

__all__ = ['CollisionError', 'RobotParams', 'Rollout', 'SensorParams', 'Simulator',
           'WheelOdometry', 'World', 'WorldError', 'integrate', 'lag_response']
