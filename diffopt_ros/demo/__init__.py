"""The closed-loop demo without ROS (``diffopt-ros demo``; the drive on ROS is
``diffopt_ros.nodes.demo``).

- :mod:`.course`: the course file (``config/demo.yaml``: goals only) and the map the MPC navigates on.
- :mod:`.metrics`: trajectory errors, path length, deviation from the global path, frames (numpy).
- :mod:`.results`: what a drive logged, its metrics and the before/after table.
- :mod:`.plots`: the plot of one drive.
- :mod:`.phases`: record → learn → relaunch, and the command line.
- :mod:`.closed_loop`: the same goals in one deterministic loop (no nodes), the model's prediction error.
"""
