"""diffopt_ros.nlls"""
