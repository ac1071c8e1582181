"""Offline learning from recorded runs, end to end through the optimizers (pure PyTorch, no ROS).

Example::

    from diffopt_ros.learn import learn_dynamics
    result = learn_dynamics(['runs/run_1'], 'out/dynamics')   # -> out/dynamics/mpc.yaml
    result.params                                            # {'model.gain_v': 0.80, ...}

Modules, by what they hold:

- :mod:`.api`: :func:`learn_dynamics`, :func:`learn_cost`, :func:`learn_slam` (what
  ``diffopt-ros learn`` (:mod:`.cli`) and the demo call); :mod:`.results`: the
  :class:`LearnResult` they return and the parameter file they write.
- :mod:`.datasets`: recorded runs as arrays (:class:`RunData`): read from rosbag2, written back,
  split by run into training and validation runs.
- :mod:`.windows`: runs -> MPC-horizon windows (states, held commands, next states, the
  reference the MPC tracked).
- :mod:`.controller`: mpc_node's MPC from its parameters, as a learnable module.
- :mod:`.objectives`: system identification (multi-step prediction) and imitation of recorded
  commands through the MPC (implicit or unrolled gradients); :mod:`.slam_weights`: SLAM factor
  weights through the pose-graph solve.
- :mod:`.trainer`: one batched, resumable training loop over :mod:`.items`, data-parallel under
  torchrun through :mod:`.distributed`; :mod:`.plots`: its PNG plots.
- :mod:`.export`: learned values -> ROS parameter YAML for ``mpc_node`` / ``slam_node``.

Simulated runs with known true parameters, to try learning without a robot, are in
:mod:`diffopt_ros.experiments.simulated_runs`.
"""
from diffopt_ros.lazy_exports import lazy_exports

# the public names and their modules: imported on first use (PEP 562), so that
# ``diffopt-ros learn --help`` and argument errors answer without importing torch
_MODULES = {
    'api': ('learn_dynamics', 'learn_cost', 'learn_slam', 'TRAINING_MODES'),
    'results': ('LearnResult',),
    'datasets': ('RunData', 'Series', 'Plan', 'load_run', 'load_runs', 'save_bag', 'split_runs',
                 'DatasetError'),
    'windows': ('ControlWindows', 'control_windows', 'prediction_step'),
    'controller': ('mpc_params', 'node_mpc'),
    'objectives': ('PredictionObjective', 'ImitationObjective'),
    'trainer': ('train', 'TrainConfig', 'TrainResult'),
    'items': ('Dataset', 'TensorItems'),
    'export': ('write_params_yaml', 'ExportError'),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
