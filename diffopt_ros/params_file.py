"""Read ROS 2 parameter YAML files (``node_name: ros__parameters: ...``) without rclpy.

The nodes, the CLI tools and offline learning read the same ``config/*.yaml`` and learned files;
this module is the one reader they share.
"""
from __future__ import annotations

import os
from typing import Any

import yaml


class ParamsFileError(ValueError):
    """A params file that cannot be used; the message names the file (and section)."""


def read_params_file(path: str | os.PathLike, node_name: str) -> dict[str, Any]:
    """The flat ``{name: value}`` parameters of ``node_name`` in a ROS 2 params YAML file.

    Values under ``/**`` apply to every node and are overridden by the node's own section
    (``node_name`` or ``/node_name``), as ``--params-file`` does; nested mappings are flattened to
    dotted names (``weights: {position: 1.0}`` -> ``weights.position``).

    Raises:
        ParamsFileError: the file is missing, is not YAML of that form, or has no section for
            ``node_name``.
    """
    try:
        with open(path, encoding='utf-8') as stream:
            data = yaml.safe_load(stream)
    except OSError as exc:
        raise ParamsFileError(f'{path}: cannot read params file: {exc}') from exc
    except yaml.YAMLError as exc:
        raise ParamsFileError(f'{path}: not valid YAML: {exc}') from exc
    if not isinstance(data, dict):
        raise ParamsFileError(f'{path}: expected a mapping "{node_name}: ros__parameters: ..."')
    values: dict[str, Any] = {}
    found = False
    for key in ('/**', node_name, '/' + node_name.lstrip('/')):
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or not isinstance(section.get('ros__parameters'), dict):
            raise ParamsFileError(f'{path}: section {key!r} has no "ros__parameters" mapping')
        found = True
        values.update(flatten(section['ros__parameters']))
    if not found:
        raise ParamsFileError(f'{path}: no "{node_name}:" (or "/**:") section with ros__parameters')
    return values


def flatten(mapping: dict, prefix: str = '') -> dict[str, Any]:
    """Nested mapping -> ``{'a.b.c': value}``."""
    flat = {}
    for key, value in mapping.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(flatten(value, name + '.'))
        else:
            flat[name] = value
    return flat
