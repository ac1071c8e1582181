"""Simulated closed loop: sim_node + slam_node + mpc_node + recorder_node, all on sim time.

    ros2 launch diffopt_ros sim_demo.launch.py
    ros2 launch diffopt_ros sim_demo.launch.py mpc_learned_params:=learned/dynamics/mpc.yaml \
        slam_learned_params:=learned/slam/slam.yaml
    ros2 launch diffopt_ros sim_demo.launch.py world:=clutter robot:=ackermann

``robot``: ``diff_drive`` or ``ackermann`` (sim_node's ``robot.kind``; the car is driven by
mpc_node's ``model: bicycle``, which navigates). ``navigation:=true`` (always on for the car):
mpc_node plans ``/goal_pose`` goals on slam_node's ``/map`` and avoids obstacles
(docs/navigation.md).

The MPC closes the loop on the SLAM estimate (``/slam/odom``, map frame). slam_node's map is
anchored at the world's start pose (``initial_pose``), so ``/ground_truth/odom``, ``/slam/*``
and goals in world coordinates share one ``map`` frame. Parameters come from
the package's ``config/<node>.yaml``; ``params_file`` (sections per node name, or ``/**``)
is applied on top of them to every node. Common arguments (namespace, params_file,
state_topic, learned parameter files, record): ``diffopt_ros/nodes/launch_common.py``.
"""
from diffopt_ros.nodes.launch_common import launch_description


def _nodes(factory):
    from diffopt_ros.sim.world import World  # the world's start anchors slam_node's map

    arg, node = factory.arg, factory.node
    start = [float(v) for v in World.load(arg('world')).start]
    car = arg('robot') == 'ackermann'
    navigation = {'navigation.enabled': True, 'model': 'bicycle' if car else 'diff_drive_lag'}
    return [
        node('sim_node', 'sim.yaml', {'world': arg('world'), 'robot.kind': arg('robot')}),
        node('slam_node', 'slam.yaml', {'learned_params_file': arg('slam_learned_params'),
                                        'initial_pose': start}),
        node('mpc_node', 'mpc.yaml', {'learned_params_file': arg('mpc_learned_params'),
                                      **(navigation if car or factory.flag('navigation') else {})},
             remappings=[('odom', arg('state_topic'))]),
        *factory.recorder(),
    ]


def generate_launch_description():
    return launch_description(True, 'follow /clock published by sim_node', [
        ('world', 'loop', 'world name under config/worlds/ or a YAML path'),
        ('robot', 'diff_drive', 'simulated robot: diff_drive or ackermann (navigates)'),
        ('navigation', 'false', 'mpc_node plans /goal_pose goals on /map round obstacles'),
    ], _nodes)
