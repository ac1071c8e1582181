"""Robot bring-up: slam_node + mpc_node + recorder_node on a real robot (wall-clock time).

    ros2 launch diffopt_ros robot.launch.py odom_topic:=/wheel/odom scan_topic:=/scan
    ros2 launch diffopt_ros robot.launch.py mpc_learned_params:=/path/to/learned/mpc.yaml

The robot's driver provides ``odom`` (nav_msgs/Odometry), ``scan`` (sensor_msgs/LaserScan) and
takes ``cmd_vel`` (geometry_msgs/Twist; ``stamped_cmd:=true`` for TwistStamped). Goals come on
``goal_pose`` (e.g. RViz's 2D Goal Pose) or paths on ``plan``. Parameters come from the
package's ``config/<node>.yaml``; ``params_file`` is applied on top of them to every node.
Common arguments (namespace, params_file, state_topic, learned parameter files, record):
``diffopt_ros/nodes/launch_common.py``.
"""
from diffopt_ros.nodes.launch_common import launch_description


def _nodes(factory):
    arg, node = factory.arg, factory.node
    inputs = [('odom', arg('odom_topic')), ('scan', arg('scan_topic'))]
    command = ('cmd_vel', arg('cmd_vel_topic'))
    return [
        node('slam_node', 'slam.yaml', {'learned_params_file': arg('slam_learned_params')},
             remappings=inputs),
        node('mpc_node', 'mpc.yaml', {'learned_params_file': arg('mpc_learned_params'),
                                      'stamped_cmd': factory.flag('stamped_cmd')},
             remappings=[('odom', arg('state_topic')), command]),
        *factory.recorder(remappings=[*inputs, command]),
    ]


def generate_launch_description():
    return launch_description(False, 'follow /clock instead of the wall clock', [
        ('odom_topic', 'odom', "the robot's wheel odometry (nav_msgs/Odometry)"),
        ('scan_topic', 'scan', "the robot's lidar (sensor_msgs/LaserScan)"),
        ('cmd_vel_topic', 'cmd_vel', 'velocity command topic of the base'),
        ('stamped_cmd', 'false', 'publish TwistStamped instead of Twist'),
    ], _nodes)
