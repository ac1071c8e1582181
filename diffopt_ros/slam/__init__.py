"""diffopt_ros.slam"""
