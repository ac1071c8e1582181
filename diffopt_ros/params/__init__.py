"""Node parameter schemas (ROS-free): :mod:`diffopt_ros.params.schema` and one module per node.

``schema_for('mpc_node')`` returns a node's :class:`~diffopt_ros.params.schema.NodeSchema`; the
node modules are imported on demand (the slam schema reads its defaults from the SLAM core).
"""
from __future__ import annotations

import importlib

from diffopt_ros.params.schema import NodeSchema, Param, SchemaError

#: node name -> module of its schema.
NODE_MODULES = {'sim_node': 'sim', 'mpc_node': 'mpc', 'slam_node': 'slam',
                'recorder_node': 'recorder'}

__all__ = ['NODE_MODULES', 'NodeSchema', 'Param', 'SchemaError', 'schema_for']


def schema_for(node: str) -> NodeSchema:
    """The schema of the diffopt_ros node ``node`` (``KeyError`` for another name)."""
    module = NODE_MODULES[node]
    return importlib.import_module(f'diffopt_ros.params.{module}').SCHEMA
