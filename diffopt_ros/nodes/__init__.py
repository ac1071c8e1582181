"""The ROS 2 shell: rclpy nodes that convert messages, call the core and publish.

This is the only sub-package that imports rclpy or ROS message packages.
"""
