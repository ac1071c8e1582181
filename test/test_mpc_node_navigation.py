"""mpc_node with navigation.enabled: a goal behind a wall, driven by the simulator in wall-clock time."""
import time

import numpy as np
from nav_msgs.msg import Path
from sensor_msgs.msg import LaserScan
from test_mpc_node import Rig

from diffopt_ros.maps import world_grid
from diffopt_ros.nodes import ros_convert
from diffopt_ros.sim import Simulator, World
from diffopt_ros.slam.occupancy import save_map

# 5 m x 3 m; a wall from the north down to y = 1.0 between start (1, 1.8) and goal (4, 1.8)
# and a closed box in the south-east corner
WORLD = World.from_dict({'start': [1.0, 1.8, 0.0],
                   'walls': [{'box': [0, 0, 5, 3]}, [2.5, 1.0, 2.5, 3.0],
                                   {'box': [3.6, 0.2, 4.8, 0.8]}]})


def _rig(tmp_path):
    _, map_file = save_map(world_grid(WORLD, 0.05), tmp_path / 'map')
    rig = Rig(**{'navigation.enabled': True, 'map_file': str(map_file), 'horizon': 20})
    rig.global_paths = []
    rig.robot.create_subscription(Path, 'plan_global', rig.global_paths.append, 10)
    rig.scan_pub = rig.robot.create_publisher(LaserScan, 'scan', 10)
    return rig


def _drive(rig, sim, seconds, stop_when=None):
    """Step the simulator in wall-clock time with the latest command, publishing its true state
    (map frame) at ~50 Hz and scans at ~10 Hz."""
    start = last = time.monotonic()
    next_scan = 0.0
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        command = rig.last_cmd() if rig.cmds else (0.0, 0.0)
        sim.step(command, now - last)
        last = now
        rig.odom(sim.true_state, frame='map')
        if now >= next_scan:
            stamp = rig.robot.get_clock().now().to_msg()
            p, angles = sim.sensors, sim.sensors.lidar_angles()
            rig.scan_pub.publish(ros_convert.ranges_to_scan(sim.scan(), stamp, 'base_scan', angles[0],
                                                            angles[1] - angles[0], p.lidar_range_min,
                                                            p.lidar_range_max))
            next_scan = now + 0.1
        rig.spin_for(0.02)
        if stop_when is not None and stop_when():
            break


def test_goal_behind_a_wall_is_reached_without_collision(tmp_path):
    rig = _rig(tmp_path)
    try:
        sim = Simulator(WORLD, start_pose=[1.0, 1.8, 0.0])
        _drive(rig, sim, 1.0)
        rig.goal(4.0, 1.8, frame='map')
        _drive(rig, sim, 40.0, stop_when=lambda: np.hypot(*(sim.true_state[:2] - [4.0, 1.8])) < 0.15
               and rig.last_status()[1] == 'goal reached')
        assert np.hypot(*(sim.true_state[:2] - [4.0, 1.8])) < 0.2, sim.true_state
        assert sim.collisions == 0
        assert rig.global_paths and len(rig.global_paths[0].poses) > 10
        ys = [p.pose.position.y for p in rig.global_paths[0].poses]
        assert min(ys) < 1.0, 'the path goes round the wall end'
    finally:
        rig.close()


def test_unreachable_goal_stops_and_warns(tmp_path):
    rig = _rig(tmp_path)
    try:
        sim = Simulator(WORLD, start_pose=[1.0, 1.8, 0.0])
        _drive(rig, sim, 0.5)
        rig.goal(4.2, 0.5, frame='map')               # inside the closed box
        _drive(rig, sim, 2.0)
        status, mode = rig.last_status()
        assert mode == 'unreachable'
        assert rig.last_cmd() == (0.0, 0.0)
        assert rig.global_paths and len(rig.global_paths[-1].poses) == 0
    finally:
        rig.close()
