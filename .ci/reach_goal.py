"""External client for CI: send a goal to a running diffopt_ros launch, wait until the robot is
there. Uses rclpy and message packages only (nothing of diffopt_ros), as a user's tool would.

    python .ci/reach_goal.py --goal 4.0 1.5 [--frame map] [--tolerance 0.3] [--timeout 150]

Exit status 0 when ``/ground_truth/odom`` comes within ``--tolerance`` m of the goal, 1 when it
does not within ``--timeout`` s (wall time), 2 on bad arguments.
"""
import argparse
import math
import sys
import time

import rclpy
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--goal', nargs=2, type=float, required=True, metavar=('X', 'Y'))
    parser.add_argument('--frame', default='map')
    parser.add_argument('--tolerance', type=float, default=0.3)
    parser.add_argument('--timeout', type=float, default=150.0)
    args = parser.parse_args(argv)
    rclpy.init()
    node = rclpy.create_node('ci_reach_goal')
    latest = {}
    node.create_subscription(Odometry, '/ground_truth/odom',
                             lambda m: latest.update(pose=m.pose.pose.position),
                             qos_profile_sensor_data)
    durable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    goal_pub = node.create_publisher(PoseStamped, '/goal_pose', durable)
    deadline = time.monotonic() + args.timeout
    goal = PoseStamped()
    goal.header.frame_id = args.frame
    goal.pose.position.x, goal.pose.position.y = args.goal
    goal.pose.orientation.w = 1.0
    sent = False
    distance = math.inf
    try:
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
            if not sent and goal_pub.get_subscription_count() > 0 and 'pose' in latest:
                goal.header.stamp = node.get_clock().now().to_msg()
                goal_pub.publish(goal)
                sent = True
                print(f'goal ({args.goal[0]}, {args.goal[1]}) in {args.frame} sent', flush=True)
            if sent and 'pose' in latest:
                p = latest['pose']
                distance = math.hypot(p.x - args.goal[0], p.y - args.goal[1])
                if distance <= args.tolerance:
                    print(f'reached: {distance:.3f} m from the goal', flush=True)
                    return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(f'not reached in {args.timeout:g} s: goal sent {sent}, {distance:.3f} m from the goal',
          file=sys.stderr)
    return 1


if __name__ == '__main__':
    raise SystemExit(main())
