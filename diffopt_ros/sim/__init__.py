"""diffopt_ros.sim"""
