"""The closed-loop demo without ROS (``diffopt-ros demo``; the drive on ROS is
``diffopt_ros.nodes.demo``).

- :mod:`.course`: the course file (``config/demo.yaml``) and its legs.
- :mod:`.metrics`: trajectory and tracking errors, estimate corrections, frame changes (numpy).
- :mod:`.results`: what a drive logged, its metrics and the before/after table.
- :mod:`.plots`: the plot of one drive.
- :mod:`.phases`: record → learn → relaunch, and the command line.
- :mod:`.closed_loop`: the same course in one deterministic loop (simulator + MPC, no nodes).
"""
