"""diffopt_ros.lie"""
