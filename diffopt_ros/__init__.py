"""diffopt_ros: differentiable optimization (MPC, pose-graph SLAM) for ROS 2 robots.

The core (``lie``, ``mpc``, ``nlls``, ``slam``, ``sim``, ``learn``, ``bag``) is plain PyTorch
and never imports rclpy; only ``diffopt_ros.nodes`` does.
"""

__version__ = '0.1.0'
