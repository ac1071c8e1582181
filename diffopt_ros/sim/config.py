"""Simulator settings from flat ``sim_node`` parameter dictionaries (``robot.*``, ``odom.*``,
``lidar.*``), so the CLI and the node read ``config/sim.yaml`` the same way."""
from __future__ import annotations

import os
from typing import Any

from diffopt_ros.params_file import read_params_file
from diffopt_ros.sim.robot import RobotParams
from diffopt_ros.sim.sensors import SensorParams

NODE_NAME = 'sim_node'


def robot_params(values: dict[str, Any]) -> RobotParams:
    """:class:`RobotParams` from the ``robot.<field>`` entries of ``values`` (others ignored)."""
    fields = {name[len('robot.'):]: value if name == 'robot.kind' else float(value)
              for name, value in values.items() if name.startswith('robot.')}
    return RobotParams(**_known(fields, RobotParams, 'robot.'))


def sensor_params(values: dict[str, Any]) -> SensorParams:
    """:class:`SensorParams` from the ``odom.<x>`` / ``lidar.<x>`` entries of ``values``
    (fields ``odom_<x>`` / ``lidar_<x>``; others ignored)."""
    fields = {}
    for name, value in values.items():
        group, _, rest = name.partition('.')
        if group in ('odom', 'lidar') and rest:
            fields[f'{group}_{rest}'] = int(value) if rest == 'beams' else float(value)
    return SensorParams(**_known(fields, SensorParams, ''))


def _known(fields: dict[str, Any], cls: type, prefix: str) -> dict[str, Any]:
    for name in fields:
        if name not in cls.__dataclass_fields__:
            shown = prefix + name if prefix else name.replace('_', '.', 1)
            raise ValueError(f'unknown simulator parameter {shown!r}')
    return fields


def read_sim_params(path: str | os.PathLike) -> dict[str, Any]:
    """The flat ``{name: value}`` of the ``sim_node`` (and ``/**``) section of a params file.

    Raises:
        ParamsFileError: (a ``ValueError``) the file is not YAML of the form
            ``sim_node: ros__parameters: {...}`` (the message names the file and the key).
    """
    return read_params_file(path, NODE_NAME)
