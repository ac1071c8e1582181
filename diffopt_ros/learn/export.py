"""Learned parameters -> ROS 2 parameter YAML (``node_name: ros__parameters: {...}``).

The files are exactly the form of docs/CONTRACTS.md ("Node parameters that learning writes"):
one node, flat dotted keys, plain floats, loadable with ``--ros-args --params-file`` or through a
node's ``learned_params_file`` parameter.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

#: Keys each node accepts from a learned file (docs/CONTRACTS.md).
MPC_MODEL_KEYS = ('model.gain_v', 'model.gain_omega', 'model.tau_v', 'model.tau_omega')
MPC_CAR_KEYS = ('model.wheelbase', 'model.tau_steer')      # the Ackermann model (model: bicycle)
MPC_WEIGHT_KEYS = ('weights.position', 'weights.heading', 'weights.v', 'weights.omega',
                   'weights.v_cmd', 'weights.omega_cmd', 'weights.rate', 'weights.terminal_scale')
SLAM_KEYS = ('weights.odom_xy', 'weights.odom_yaw', 'weights.scan_xy', 'weights.scan_yaw',
             'robust.scale')
NODE_KEYS = {'mpc_node': MPC_MODEL_KEYS + MPC_CAR_KEYS + MPC_WEIGHT_KEYS, 'slam_node': SLAM_KEYS}


class ExportError(ValueError):
    """A learned value that cannot be written as a node parameter (unknown key, not finite)."""


def params_document(node: str, params: Mapping[str, float]) -> dict:
    """``{node: {'ros__parameters': {key: float}}}`` after checking keys and values.

    Raises:
        ExportError: ``node`` is not a node that learning writes for, a key is not one of its
            learnable parameters, or a value is not a finite number.
    """
    if node not in NODE_KEYS:
        raise ExportError(f'no learned parameters for node {node!r}; expected one of {sorted(NODE_KEYS)}')
    values = {}
    for key, value in params.items():
        if key not in NODE_KEYS[node]:
            raise ExportError(f'{node}: {key!r} is not a learnable parameter; '
                              f'expected one of {", ".join(NODE_KEYS[node])}')
        number = float(value)
        if not math.isfinite(number):
            raise ExportError(f'{node}: learned {key} = {number} is not finite')
        values[key] = number
    return {node: {'ros__parameters': values}}


def write_params_yaml(path: str | os.PathLike, node: str, params: Mapping[str, float]) -> Path:
    """Write ``params`` as a ROS parameter file for ``node`` at ``path`` (folders created).

    The file is written to a temporary name and renamed, so a node never reads half a file.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(params_document(node, params), sort_keys=False, default_flow_style=False)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(text)
    tmp.replace(path)
    return path

