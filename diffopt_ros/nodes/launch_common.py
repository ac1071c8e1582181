"""What the package's launch files share: their common arguments and the node factory.

Imported only by ``launch/*.launch.py`` (it needs ROS 2 ``launch`` and ``launch_ros``, which a
ROS 2 install has and PyPI does not). Every node of the package gets its ``config/<node>.yaml``,
then the user's ``params_file``, then the launch file's own values (``use_sim_time``, learned
parameter files, …), in that order: later ones win.
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = 'diffopt_ros'

#: ``(name, default, description)`` of the arguments every launch file of the package takes;
#: ``use_sim_time``'s default and description are each file's own.
COMMON_ARGUMENTS = (
    ('namespace', '', 'namespace of all nodes'),
    ('params_file', '', 'extra params YAML applied on top of config/*.yaml'),
    ('state_topic', 'slam/odom', 'state the MPC closes the loop on (odom for raw odometry)'),
    ('mpc_learned_params', '', 'learned mpc_node YAML (diffopt-ros learn dynamics|cost)'),
    ('slam_learned_params', '', 'learned slam_node YAML (diffopt-ros learn slam)'),
    ('record', 'true', 'record a bag under runs/ with recorder_node'),
)


class NodeFactory:
    """Reads the launch arguments of one launch and makes the package's ``Node`` actions."""

    def __init__(self, context):
        self._context = context
        self.config_dir = os.path.join(get_package_share_directory(PACKAGE), 'config')

    def arg(self, name: str) -> str:
        """The value of launch argument ``name``."""
        return LaunchConfiguration(name).perform(self._context)

    def flag(self, name: str) -> bool:
        """Launch argument ``name`` read as a boolean (``true``/``false``)."""
        return self.arg(name).lower() == 'true'

    def node(self, executable: str, config_file: str, overrides: dict | None = None,
             remappings=()) -> Node:
        """``executable`` of this package named after itself, with its parameter files."""
        extra = [self.arg('params_file')] if self.arg('params_file') else []
        values = {'use_sim_time': self.flag('use_sim_time'), **(overrides or {})}
        return Node(package=PACKAGE, executable=executable, name=executable,
                    namespace=self.arg('namespace'), output='screen', remappings=list(remappings),
                    parameters=[os.path.join(self.config_dir, config_file), *extra, values])

    def recorder(self, remappings=()) -> list[Node]:
        """``[recorder_node]`` when the ``record`` argument is true, else ``[]``; give it the
        remappings of the robot's topics (its topic list is relative: ``odom``, ``scan``, ...)."""
        return ([self.node('recorder_node', 'recorder.yaml', remappings=remappings)]
                if self.flag('record') else [])


def launch_description(use_sim_time: bool, use_sim_time_description: str, arguments,
                       make_nodes) -> LaunchDescription:
    """The common arguments, then ``arguments`` (``(name, default, description)`` tuples), then
    the nodes ``make_nodes(NodeFactory)`` returns once the arguments are known."""
    declared = [('use_sim_time', str(use_sim_time).lower(), use_sim_time_description),
                *COMMON_ARGUMENTS, *arguments]
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, default, description in declared),
        OpaqueFunction(function=lambda context: make_nodes(NodeFactory(context))),
    ])
