"""Parameters of ``mpc_node`` (the receding-horizon iLQR controller): the one place they and their
defaults are written. :class:`diffopt_ros.mpc.receding.MpcSettings` takes its defaults from here."""
from __future__ import annotations

from diffopt_ros.params.schema import NodeSchema, Param

NODE_NAME = 'mpc_node'


def _check_combination(values: dict) -> str | None:
    """``bounds.v_min`` < ``bounds.v_max``; ``cmd_steering_angle`` needs ``model`` bicycle.

    Returns why a full set of values breaks these rules, or None."""
    if values['bounds.v_min'] >= values['bounds.v_max']:
        return (f'bounds.v_min ({values["bounds.v_min"]}) must be below bounds.v_max '
                f'({values["bounds.v_max"]})')
    if values['cmd_steering_angle'] and values['model'] != 'bicycle':
        return (f'cmd_steering_angle needs model bicycle (an Ackermann car), got model '
                f'{values["model"]}')
    return None


_W = 1e6   # largest cost weight

SCHEMA = NodeSchema(NODE_NAME, (
    Param('model', 'diff_drive_lag', 'dynamics model of the MPC: diff_drive_lag (speed and yaw-rate '
          'lags), unicycle (kinematic, commands act at once), bicycle (an Ackermann car)',
          choices=('diff_drive_lag', 'unicycle', 'bicycle')),
    Param('model.gain_v', 1.0, 'actuator gain of the forward speed', 0.05, 10.0, unit='1',
          learnable='model'),
    Param('model.gain_omega', 1.0, 'actuator gain of the yaw rate', 0.05, 10.0, unit='1',
          learnable='model'),
    Param('model.tau_v', 0.05, 'first-order lag of the forward speed', 1e-3, 5.0, unit='s',
          learnable='model'),
    Param('model.tau_omega', 0.05, 'first-order lag of the yaw rate', 1e-3, 5.0, unit='s',
          learnable='model'),
    Param('horizon', 20, 'prediction horizon', 2, 200, unit='steps'),
    Param('dt', 0.1, 'prediction step', 0.005, 1.0, unit='s'),
    Param('control_rate', 20.0, 'rate of the control loop (node clock)', 0.5, 200.0, unit='Hz'),
    Param('weights.position', 10.0, 'weight of the squared position error', 0.0, _W,
          unit='1/m^2', learnable='weights'),
    Param('weights.heading', 1.0, 'weight of the squared heading error', 0.0, _W,
          unit='1/rad^2', learnable='weights'),
    Param('weights.v', 0.1, 'weight of the squared speed error', 0.0, _W, unit='s^2/m^2',
          learnable='weights'),
    Param('weights.omega', 0.1, 'weight of the squared yaw-rate error', 0.0, _W,
          unit='s^2/rad^2', learnable='weights'),
    Param('weights.v_cmd', 0.1, 'weight of the squared speed command', 0.0, _W, unit='s^2/m^2',
          learnable='weights'),
    Param('weights.omega_cmd', 0.1, 'weight of the squared yaw-rate command', 0.0, _W,
          unit='s^2/rad^2', learnable='weights'),
    Param('weights.rate', 0.5, 'weight of the squared change of command between steps '
          '(0 = no rate term)', 0.0, _W, learnable='weights'),
    Param('weights.terminal_scale', 5.0, 'factor on the state weights at the last step', 0.0, _W,
          unit='1', learnable='weights'),
    Param('bounds.v_max', 0.7, 'largest forward speed command', 0.0, 20.0, unit='m/s'),
    Param('bounds.v_min', -0.2, 'smallest forward speed command (< 0 allows reverse)',
          -20.0, 20.0, unit='m/s'),
    Param('bounds.omega_max', 1.5, 'largest yaw-rate command magnitude', 0.0, 20.0, unit='rad/s'),
    Param('max_iterations', 10, 'iLQR iterations per control step', 1, 200),
    Param('tolerance', 1e-4, 'iLQR stops when the control update is below this', 0.0, 1.0),
    Param('device', 'cpu', 'torch device of the solver (cuda falls back to cpu)',
          choices=('cpu', 'cuda')),
    Param('state_timeout', 0.5, 'a state older than this is stale: zero command', 0.0, 60.0,
          unit='s'),
    Param('future_stamp_tolerance', 0.5, 'a state stamped further ahead of the node clock than '
          'this is rejected', 0.0, 3600.0, unit='s'),
    Param('solve_budget', 0.0, 'wall time one solve may take before the tick publishes the '
          'shifted previous plan instead (0 = 80 % of 1/control_rate)', 0.0, 60.0, unit='s'),
    Param('goal_tolerance', 0.15, 'goal reached within this distance: zero command', 0.0, 10.0,
          unit='m'),
    Param('reference_speed', 0.4, 'speed along an untimed /plan', 0.0, 20.0, unit='m/s'),
    Param('stamped_cmd', False, 'publish geometry_msgs/TwistStamped instead of Twist',
          read_only=True),
    Param('state_topic', 'odom', 'state topic (nav_msgs/Odometry)', read_only=True),
    Param('autostart', True, 'configure and activate at start (no lifecycle manager needed)',
          read_only=True),
    Param('torch_threads', 1, 'threads of torch and of the BLAS of numpy/scipy in this process '
          '(small problems: 1)',
          1, 64, read_only=True),
    Param('learned_params_file', '',
          'YAML from offline learning; its mpc_node.ros__parameters override these',
          read_only=True),
    Param('navigation.enabled', False, 'plan goal_pose goals on the map, avoid map and scan '
          'obstacles', read_only=True),
    Param('map_file', '', 'map_server YAML of a static map (empty: the map topic)',
          read_only=True),
    Param('navigation.radius', 0.2, 'robot radius: lethal distance of the planner', 0.01, 10.0,
          unit='m', read_only=True),
    Param('navigation.inflation', 0.02, 'clearance wanted beyond the radius', 1e-4, 10.0,
          unit='m', read_only=True),
    Param('navigation.obstacle_weight', 1000.0, 'weight of the clearance penalty', 1e-3, 1e9,
          unit='1/m^2', read_only=True),
    Param('navigation.scan_map_margin', 0.3, 'a scan point this close to a map obstacle is the '
          "map's (pose uncertainty): it does not block the path", 0.0, 10.0, unit='m',
          read_only=True),
    Param('navigation.stop_margin', 0.05, 'the speed is cut so that the robot, going on '
          'for one MPC step (straight, or on the commanded or the measured turn) and then braking '
          '(the model\'s speed lag from the measured speed), '
          'stays this far from the scan points in its way (a stop zone after '
          'the MPC; negative: off)', -1.0, 1.0, unit='m', read_only=True),
    Param('navigation.progress_radius', 0.3, 'the robot makes progress when it moves this far '
          'from where it last did', 0.01, 10.0, unit='m', read_only=True),
    Param('navigation.progress_timeout', 15.0, 'a goal is given up (mode "no progress", zero '
          'command) when the robot, tracking or blocked, has not moved progress_radius in this '
          'long (0: never)', 0.0, 3600.0, unit='s', read_only=True),
    Param('navigation.cost_tolerance', 1e-4, 'iLQR of a navigation tick stops when its predicted '
          'or achieved relative cost decrease is below this (the next tick goes on from its plan)',
          0.0, 0.1, unit='1', read_only=True),
    Param('model.wheelbase', 0.3, 'wheelbase of the Ackermann car (model bicycle)', 0.01, 20.0,
          unit='m', read_only=True, learnable='car'),
    Param('model.tau_steer', 0.1, 'steering lag of the car (model bicycle)', 1e-3, 5.0,
          unit='s', read_only=True, learnable='car'),
    Param('model.max_steer_rate', 2.0, 'steering rate limit of the car', 1e-3, 100.0,
          unit='rad/s', read_only=True),
    Param('bounds.max_steer', 0.6, 'steering limit of the car', 0.01, 1.5, unit='rad',
          read_only=True),
    Param('cmd_steering_angle', False, 'model bicycle: cmd_vel angular.z is the steering angle '
          '(rad) instead of the yaw rate (teb_local_planner cmd_angle_instead_rotvel)',
          read_only=True),
), summary='receding-horizon iLQR controller', combination=_check_combination)
