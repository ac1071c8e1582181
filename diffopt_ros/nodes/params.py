"""Declared, validated node parameters.

A node's parameters are the :class:`~diffopt_ros.params.schema.Param` rows of its schema
(:mod:`diffopt_ros.params`); :func:`declare_params` declares each with a ``ParameterDescriptor``
(type, range, description), checks the start-up values (a bad value in a
params file stops the node with a :class:`ParameterError` naming the parameter), and installs a
set-parameters callback that rejects bad run-time changes with a reason (the node keeps its old
value) and hands accepted ones to the node.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node

from diffopt_ros import params_file
from diffopt_ros.params.schema import Param


class ParameterError(ValueError):
    """A parameter value that a node refuses (start-up or run time)."""


def descriptor(spec: Param) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` of ``spec``, shown by ``ros2 param describe``."""
    desc = ParameterDescriptor(name=spec.name, description=spec.full_description(),
                               read_only=spec.read_only)
    if spec.kind is float and (spec.low is not None or spec.high is not None):
        desc.floating_point_range = [FloatingPointRange(
            from_value=-math.inf if spec.low is None else float(spec.low),
            to_value=math.inf if spec.high is None else float(spec.high), step=0.0)]
    elif spec.kind is int and (spec.low is not None or spec.high is not None):
        desc.integer_range = [IntegerRange(
            from_value=-2**63 if spec.low is None else int(spec.low),
            to_value=2**63 - 1 if spec.high is None else int(spec.high), step=1)]
    return desc


def declare_params(node: Node, specs: Iterable[Param],
                   on_change: Callable[[dict[str, Any]], str | None] | None = None
                   ) -> dict[str, Any]:
    """Declare ``specs`` on ``node``, validate start-up values, watch run-time changes.

    Args:
        node: the node.
        specs: the parameters.
        on_change: called with ``{name: new_value}`` for an accepted change set; it may return a
            reason to reject the whole set after all (e.g. a combination that does not fit).

    Returns:
        ``{name: value}`` of the start-up values.

    Raises:
        ParameterError: a start-up value (from a params file or ``-p``) is invalid.
    """
    specs = {spec.name: spec for spec in specs}
    values = {}
    for spec in specs.values():
        try:
            param = node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except Exception as exc:  # rclpy raises several types for range/type violations
            raise ParameterError(f'{node.get_name()}: parameter {spec.name}: {exc}') from exc
        value = param.value
        reason = spec.reason_to_reject(value)
        if reason:
            raise ParameterError(f'{node.get_name()}: invalid start-up value: {reason}')
        values[spec.name] = value

    def _on_set(params) -> SetParametersResult:
        changes = {}
        for param in params:
            spec = specs.get(param.name)
            if spec is None:
                continue
            reason = spec.reason_to_reject(param.value)
            if reason:
                node.get_logger().warning(f'rejected parameter change: {reason}')
                return SetParametersResult(successful=False, reason=reason)
            changes[param.name] = param.value
        if changes and on_change is not None:
            reason = on_change(changes)
            if reason:
                node.get_logger().warning(f'rejected parameter change: {reason}')
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(_on_set)
    return values


def read_params_file(path: str, node_name: str) -> dict[str, Any]:
    """The ``ros__parameters`` of ``node_name`` in a params YAML file (see
    :func:`diffopt_ros.params_file.read_params_file`).

    Raises:
        ParameterError: the file is missing, is not YAML of that form, or has no section for
            ``node_name`` (the message names the file).
    """
    try:
        return params_file.read_params_file(path, node_name)
    except params_file.ParamsFileError as exc:
        raise ParameterError(str(exc)) from exc


def apply_params_file(node: Node, path: str) -> dict[str, Any]:
    """Set ``node``'s declared parameters from the node's section of a params YAML file.

    Used for ``learned_params_file``: loaded after the node's own parameters, its values
    override them and go through the same validation as a run-time change. Integers given for
    floating-point parameters are converted.

    Returns:
        ``{name: value}`` that were applied.

    Raises:
        ParameterError: the file cannot be read, names an undeclared parameter, or a value is
            rejected (the message names the file, the parameter and the reason).
    """
    from rclpy.parameter import Parameter

    values = read_params_file(path, node.get_name())
    params = []
    for name, value in values.items():
        if not node.has_parameter(name):
            raise ParameterError(f'{path}: {node.get_name()} has no parameter {name!r}')
        if node.get_parameter(name).type_ == Parameter.Type.DOUBLE and isinstance(value, int) \
                and not isinstance(value, bool):
            value = float(value)
        params.append(Parameter(name, value=value))
    result = node.set_parameters_atomically(params)  # checked together, like a params file
    if not result.successful:
        raise ParameterError(f'{path}: rejected: {result.reason}')
    return {param.name: param.value for param in params}


def apply_learned_params_file(node: Node, path: str) -> None:
    """:func:`apply_params_file` for a node's ``learned_params_file`` parameter, logged; nothing
    when ``path`` is empty. Call it once the node's ``on_change`` can take the values."""
    if path:
        applied = apply_params_file(node, path)
        node.get_logger().info(f'loaded {len(applied)} learned parameters from {path}: {applied}')
