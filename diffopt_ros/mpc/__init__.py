"""diffopt_ros.mpc"""
