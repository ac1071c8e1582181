"""Simulated closed loop: sim_node + slam_node + mpc_node + recorder_node, all on sim time.

    ros2 launch diffopt_ros sim_demo.launch.py
    ros2 launch diffopt_ros sim_demo.launch.py mpc_learned_params:=config/learned/mpc.yaml \
        slam_learned_params:=config/learned/slam.yaml

The MPC closes the loop on the SLAM estimate (``/slam/odom``, map frame). Parameters come from
the package's ``config/<node>.yaml``; ``params_file`` (sections per node name, or ``/**``)
is applied on top of them to every node.
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

    def node(executable, config_file, overrides=None, remappings=()):
        return Node(package=PACKAGE, executable=executable, name=executable,
                    namespace=arg('namespace'), output='screen', remappings=list(remappings),
                    parameters=[os.path.join(config, config_file), *extra,
                                {**common, **(overrides or {})}])

    nodes = [
        node('sim_node', 'sim.yaml', {'world': arg('world')}),
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
                              description='follow /clock published by sim_node'),
        DeclareLaunchArgument('params_file', default_value='',
                              description='extra params YAML applied on top of config/*.yaml'),
        DeclareLaunchArgument('world', default_value='loop',
                              description='world name under config/worlds/ or a YAML path'),
        DeclareLaunchArgument('state_topic', default_value='slam/odom',
                              description='state the MPC closes the loop on (odom for raw odometry)'),
        DeclareLaunchArgument('mpc_learned_params', default_value='',
                              description='learned mpc_node YAML (diffopt-ros learn dynamics|cost)'),
        DeclareLaunchArgument('slam_learned_params', default_value='',
                              description='learned slam_node YAML (diffopt-ros learn slam)'),
        DeclareLaunchArgument('record', default_value='true',
                              description='record a bag under runs/ with recorder_node'),
        OpaqueFunction(function=_nodes),
    ])
