"""diffopt_ros.bag"""
