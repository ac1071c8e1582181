"""Offline learning from recorded runs, end to end through the optimizers (pure PyTorch, no ROS).

- :mod:`.datasets`: rosbag2 runs -> arrays -> MPC-horizon windows (states, held commands, next
  states, the reference the MPC tracked); split by run.
- :mod:`.objectives`: system identification (multi-step prediction) and imitation of recorded
  commands through the MPC (:class:`~diffopt_ros.mpc.MPC`, implicit or unrolled gradients).
- :mod:`.slam_weights`: SLAM factor weights through the pose-graph solve.
- :mod:`.trainer`: one batched, data-parallel (torchrun/DDP), resumable training loop.
- :mod:`.export`: learned values -> ROS parameter YAML for ``mpc_node`` / ``slam_node``.
- :mod:`.api` (what the demo calls) and :mod:`.cli` (``diffopt-ros learn``).
- :mod:`.synthetic`: simulated runs with known true parameters.
"""
