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

from diffopt_ros.params import SchemaError, schema_for

#: Keys each node accepts from a learned file: the ``learnable`` parameters of its schema.
MPC_MODEL_KEYS = schema_for('mpc_node').learnable('model')
MPC_CAR_KEYS = schema_for('mpc_node').learnable('car')      # the Ackermann model (model: bicycle)
MPC_WEIGHT_KEYS = schema_for('mpc_node').learnable('weights')
SLAM_KEYS = schema_for('slam_node').learnable()
NODE_KEYS = {'mpc_node': schema_for('mpc_node').learnable(), 'slam_node': SLAM_KEYS}


class ExportError(ValueError):
    """A learned value that cannot be written as a node parameter (unknown key, not finite)."""


def params_document(node: str, params: Mapping[str, float]) -> dict:
    """``{node: {'ros__parameters': {key: float}}}`` after checking keys and values.

    Raises:
        ExportError: ``node`` is not a node that learning writes for, a key is not one of its
            learnable parameters (:meth:`NodeSchema.learnable`), or a value is not a finite
            number in the parameter's range.
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
        try:
            values.update(schema_for(node).check({key: number}))
        except SchemaError as exc:   # out of the parameter's range: the node would refuse it
            raise ExportError(f'learned value refused: {exc}') from exc
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

