"""diffopt_ros.learn"""
