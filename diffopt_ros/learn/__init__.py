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
from importlib import import_module

# the public names and their modules: imported on first use (PEP 562), so that
# ``diffopt-ros learn --help`` and argument errors answer without importing torch
_EXPORTS = {
    'TRAINING_MODES': 'api', 'learn_cost': 'api', 'learn_dynamics': 'api', 'learn_slam': 'api',
    'LearnResult': 'results',
    'DatasetError': 'datasets', 'Plan': 'datasets', 'RunData': 'datasets', 'Series': 'datasets',
    'load_run': 'datasets', 'load_runs': 'datasets', 'save_bag': 'datasets',
    'split_runs': 'datasets',
    'ControlWindows': 'windows', 'control_windows': 'windows', 'prediction_step': 'windows',
    'mpc_params': 'controller', 'node_mpc': 'controller',
    'ImitationObjective': 'objectives', 'PredictionObjective': 'objectives',
    'TrainConfig': 'trainer', 'TrainResult': 'trainer', 'train': 'trainer',
    'Dataset': 'items', 'TensorItems': 'items',
    'ExportError': 'export', 'write_params_yaml': 'export',
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(import_module(f'{__name__}.{module}'), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
