"""Gazebo (gz sim) bring-up: ros_gz_bridge + slam_node + mpc_node + recorder_node on sim time.

    ros2 launch diffopt_ros gazebo.launch.py gz_odom_topic:=/model/robot/odometry

Start the Gazebo world with a diff-drive robot and a gpu_lidar first. The bridge maps the
Gazebo topics to ``/clock``, ``odom``, ``scan`` and ``cmd_vel``, the names the nodes use (the
defaults assume the world already publishes under those names). Parameters come from the
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
    gz_odom, gz_scan, gz_cmd = arg('gz_odom_topic'), arg('gz_scan_topic'), arg('gz_cmd_vel_topic')

    def node(executable, config_file, overrides=None, remappings=()):
        return Node(package=PACKAGE, executable=executable, name=executable,
                    namespace=arg('namespace'), output='screen', remappings=list(remappings),
                    parameters=[os.path.join(config, config_file), *extra,
                                {**common, **(overrides or {})}])

    bridge = Node(
        package='ros_gz_bridge', executable='parameter_bridge', name='gz_bridge',
        namespace=arg('namespace'), output='screen',
        arguments=['/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock',
                   f'{gz_odom}@nav_msgs/msg/Odometry[gz.msgs.Odometry',
                   f'{gz_scan}@sensor_msgs/msg/LaserScan[gz.msgs.LaserScan',
                   f'{gz_cmd}@geometry_msgs/msg/Twist]gz.msgs.Twist'],
        remappings=[(gz_odom, 'odom'), (gz_scan, 'scan'), (gz_cmd, 'cmd_vel')])
    nodes = [
        bridge,
        node('slam_node', 'slam.yaml', {'learned_params_file': arg('slam_learned_params')}),
        node('mpc_node', 'mpc.yaml', {'learned_params_file': arg('mpc_learned_params')},
             remappings=[('odom', arg('state_topic'))]),
    ]
    if arg('record').lower() == 'true':
        nodes.append(node('recorder_node', 'recorder.yaml'))
    return nodes


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument('namespace', default_value='', description='namespace of all nodes'),
        DeclareLaunchArgument('use_sim_time', default_value='true',
                              description='follow /clock bridged from Gazebo'),
        DeclareLaunchArgument('params_file', default_value='',
                              description='extra params YAML applied on top of config/*.yaml'),
        DeclareLaunchArgument('gz_odom_topic', default_value='/odom',
                              description="Gazebo's diff-drive odometry topic"),
        DeclareLaunchArgument('gz_scan_topic', default_value='/scan',
                              description="Gazebo's lidar topic"),
        DeclareLaunchArgument('gz_cmd_vel_topic', default_value='/cmd_vel',
                              description="Gazebo's diff-drive command topic"),
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
