"""Robot bring-up: slam_node + mpc_node + recorder_node on a real robot (wall-clock time).

    ros2 launch diffopt_ros robot.launch.py odom_topic:=/wheel/odom scan_topic:=/scan
    ros2 launch diffopt_ros robot.launch.py mpc_learned_params:=/path/to/learned/mpc.yaml

The robot's driver provides ``odom`` (nav_msgs/Odometry), ``scan`` (sensor_msgs/LaserScan) and
takes ``cmd_vel`` (geometry_msgs/Twist; ``stamped_cmd:=true`` for TwistStamped). Goals come on
``goal_pose`` (e.g. RViz's 2D Goal Pose) or paths on ``plan``. Parameters come from the
package's ``config/<node>.yaml``; ``params_file`` is applied on top of them to every node.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = 'diffopt_ros'


def _nodes(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    config = os.path.join(get_package_share_directory(PACKAGE), 'config')
    extra = [arg('params_file')] if arg('params_file') else []
    common = {'use_sim_time': arg('use_sim_time').lower() == 'true'}
    inputs = [('odom', arg('odom_topic')), ('scan', arg('scan_topic'))]

    def node(executable, config_file, overrides=None, remappings=()):
        return Node(package=PACKAGE, executable=executable, name=executable,
                    namespace=arg('namespace'), output='screen', remappings=list(remappings),
                    parameters=[os.path.join(config, config_file), *extra,
                                {**common, **(overrides or {})}])

    nodes = [
        node('slam_node', 'slam.yaml', {'learned_params_file': arg('slam_learned_params')},
             remappings=inputs),
        node('mpc_node', 'mpc.yaml', {'learned_params_file': arg('mpc_learned_params'),
                                      'stamped_cmd': arg('stamped_cmd').lower() == 'true'},
             remappings=[('odom', arg('state_topic')), ('cmd_vel', arg('cmd_vel_topic'))]),
    ]
    if arg('record').lower() == 'true':
        nodes.append(node('recorder_node', 'recorder.yaml'))
    return nodes


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument('namespace', default_value='', description='namespace of all nodes'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='follow /clock instead of the wall clock'),
        DeclareLaunchArgument('params_file', default_value='',
                              description='extra params YAML applied on top of config/*.yaml'),
        DeclareLaunchArgument('odom_topic', default_value='odom',
                              description="the robot's wheel odometry (nav_msgs/Odometry)"),
        DeclareLaunchArgument('scan_topic', default_value='scan',
                              description="the robot's lidar (sensor_msgs/LaserScan)"),
        DeclareLaunchArgument('cmd_vel_topic', default_value='cmd_vel',
                              description='velocity command topic of the base'),
        DeclareLaunchArgument('stamped_cmd', default_value='false',
                              description='publish TwistStamped instead of Twist'),
        DeclareLaunchArgument('state_topic', default_value='slam/odom',
                              description='state the MPC closes the loop on'),
        DeclareLaunchArgument('mpc_learned_params', default_value='',
                              description='learned mpc_node YAML (diffopt-ros learn dynamics|cost)'),
        DeclareLaunchArgument('slam_learned_params', default_value='',
                              description='learned slam_node YAML (diffopt-ros learn slam)'),
        DeclareLaunchArgument('record', default_value='true',
                              description='record a bag under runs/ with recorder_node'),
        OpaqueFunction(function=_nodes),
    ])
