"""Gazebo (gz sim) bring-up: ros_gz_bridge + slam_node + mpc_node + recorder_node on sim time.

    ros2 launch diffopt_ros gazebo.launch.py gz_odom_topic:=/model/robot/odometry

Start the Gazebo world with a diff-drive robot and a gpu_lidar first. The bridge maps the
Gazebo topics to ``/clock``, ``odom``, ``scan`` and ``cmd_vel``, the names the nodes use (the
defaults assume the world already publishes under those names). Parameters come from the
package's ``config/<node>.yaml``; ``params_file`` is applied on top of them to every node.
Common arguments (namespace, params_file, state_topic, learned parameter files, record):
``diffopt_ros/nodes/launch_common.py``.
"""
from launch_ros.actions import Node

from diffopt_ros.nodes.launch_common import launch_description


def _nodes(factory):
    arg, node = factory.arg, factory.node
    gz_odom, gz_scan, gz_cmd = arg('gz_odom_topic'), arg('gz_scan_topic'), arg('gz_cmd_vel_topic')
    bridge = Node(
        package='ros_gz_bridge', executable='parameter_bridge', name='gz_bridge',
        namespace=arg('namespace'), output='screen',
        arguments=['/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock',
                   f'{gz_odom}@nav_msgs/msg/Odometry[gz.msgs.Odometry',
                   f'{gz_scan}@sensor_msgs/msg/LaserScan[gz.msgs.LaserScan',
                   f'{gz_cmd}@geometry_msgs/msg/Twist]gz.msgs.Twist'],
        remappings=[(gz_odom, 'odom'), (gz_scan, 'scan'), (gz_cmd, 'cmd_vel')])
    return [
        bridge,
        node('slam_node', 'slam.yaml', {'learned_params_file': arg('slam_learned_params')}),
        node('mpc_node', 'mpc.yaml', {'learned_params_file': arg('mpc_learned_params')},
             remappings=[('odom', arg('state_topic'))]),
        *factory.recorder(),
    ]


def generate_launch_description():
    return launch_description(True, 'follow /clock bridged from Gazebo', [
        ('gz_odom_topic', '/odom', "Gazebo's diff-drive odometry topic"),
        ('gz_scan_topic', '/scan', "Gazebo's lidar topic"),
        ('gz_cmd_vel_topic', '/cmd_vel', "Gazebo's diff-drive command topic"),
    ], _nodes)
