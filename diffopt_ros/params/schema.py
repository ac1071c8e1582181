"""The declarative parameter schema of a node (ROS-free).

Each node lists its parameters once, as :class:`Param` rows of a :class:`NodeSchema` (name, type
by its default, default, unit, range or choices, read-only or dynamic, learnable group,
description). From the schema come the node's ROS declarations and run-time validation
(:mod:`diffopt_ros.nodes.params`), its settings object, ``--help``, the keys that learning may
write, the type checks of params files (:mod:`diffopt_ros.params_file`) and the parameter tables
of ``docs/nodes.md``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Parameters every rclpy node has besides its own (rclpy declares them): no unknown-key warning.
ROS_BUILTIN_PARAMS = ('use_sim_time', 'start_type_description_service')
ROS_BUILTIN_PREFIXES = ('qos_overrides.',)


@dataclass(frozen=True)
class Param:
    """One node parameter.

    Attributes:
        name: parameter name (dots for groups, e.g. ``weights.position``).
        default: default value; its Python type fixes the parameter type (bool, int, float, str,
            or a non-empty list of one of them).
        description: what it is (without the unit).
        low, high: inclusive range for numbers (each element of a list too).
        choices: allowed values for strings.
        read_only: cannot change after start-up (else: dynamic, ``ros2 param set`` works).
        check: extra check ``value -> reason or None``.
        length: required list length, if any.
        unit: SI unit (``'m/s'``, ``'1/m^2'``, ``'Hz'``...), empty when dimensionless or text.
        learnable: the group of offline learning that may write this parameter into a learned
            params file (``'model'``, ``'weights'``), or None.
    """

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False
    check: Callable[[Any], str | None] | None = None
    length: int | None = None
    unit: str = ''
    learnable: str | None = None

    @property
    def kind(self) -> type:
        """The scalar type: ``bool``, ``int``, ``float`` or ``str`` (of each element of a list)."""
        scalar = self.default[0] if isinstance(self.default, list) else self.default
        return type(scalar)

    @property
    def is_list(self) -> bool:
        return isinstance(self.default, list)

    @property
    def type_name(self) -> str:
        """``float``, ``integer``, ``bool``, ``string`` or ``list of float`` etc."""
        name = _TYPE_NAMES[self.kind]
        return f'list of {name}' if self.is_list else name

    def type_error(self, value: Any, ints_as_floats: bool = True) -> str | None:
        """Why ``value`` does not have this parameter's type, or None.

        ``ints_as_floats``: an integer is a valid float (offline readers convert it); ROS
        itself (a params file given to a node) does not convert, so its check passes False.
        """
        if self.is_list:
            if not isinstance(value, (list, tuple)):
                return f'expected {_a(self.type_name)}, got {value!r}'
            items = value
        else:
            if isinstance(value, (list, tuple, dict)):
                return f'expected {_a(self.type_name)}, got {value!r}'
            items = [value]
        for item in items:
            if not _is_kind(item, self.kind, ints_as_floats):
                what = f'{_TYPE_NAMES.get(type(item), type(item).__name__)} {item!r}'
                hint = ''
                if self.kind is float and isinstance(item, numbers.Integral) \
                        and not isinstance(item, bool):
                    hint = f' (write {float(item)!r})'
                elif isinstance(item, str) and self.kind in (int, float):
                    hint = ' (a quoted or non-numeric value is a string)'
                return f'expected {_a(self.type_name)}, got the {what}{hint}'
        return None

    def reason_to_reject(self, value: Any) -> str | None:
        """Why ``value`` (of the right type) is not acceptable, or None when it is."""
        values = value if isinstance(value, (list, tuple)) else [value]
        if self.is_list and self.length is not None and len(values) != self.length:
            return f'{self.name}: expected {self.length} values, got {len(values)}'
        for item in values:
            if isinstance(item, float) and not math.isfinite(item):
                return f'{self.name}: {item} is not finite'
            numeric = isinstance(item, (int, float)) and not isinstance(item, bool)
            if self.low is not None and numeric and item < self.low:
                return f'{self.name}: {item} is below the minimum {self.low}'
            if self.high is not None and numeric and item > self.high:
                return f'{self.name}: {item} is above the maximum {self.high}'
            if self.choices is not None and item not in self.choices:
                return f'{self.name}: {item!r} is not one of {", ".join(self.choices)}'
        return self.check(value) if self.check else None

    def convert(self, value: Any) -> Any:
        """``value`` (type-checked with integers allowed for floats) in this parameter's type."""
        if self.kind in (float, int):
            return [self.kind(v) for v in value] if self.is_list else self.kind(value)
        return list(value) if self.is_list else value

    def range_text(self) -> str:
        """``'0.05 .. 10.0'``, ``'one of cpu, cuda'`` or ``''``."""
        if self.low is not None or self.high is not None:
            return f'{"" if self.low is None else _number(self.low)} .. ' \
                   f'{"" if self.high is None else _number(self.high)}'
        if self.choices:
            return f'one of {", ".join(self.choices)}'
        return ''

    def full_description(self, choices: bool = True) -> str:
        """The description with the unit (and the ``choices``), as shown by ``ros2 param
        describe`` and ``--help``."""
        text = self.description + (f' ({self.unit})' if self.unit else '')
        if choices and self.choices:
            text += f' (one of: {", ".join(self.choices)})'
        return text


def _number(x: float) -> str:
    return f'{x:g}' if isinstance(x, float) else str(x)


_TYPE_NAMES = {bool: 'bool', int: 'integer', float: 'float', str: 'string'}


def _a(noun: str) -> str:
    return ('an ' if noun[0] in 'aeiou' else 'a ') + noun


def _is_kind(item: Any, kind: type, ints_as_floats: bool) -> bool:
    """``item`` is a ``kind`` (numpy scalars count as ints and floats; a bool is no number)."""
    if kind is bool or isinstance(item, bool):
        return kind is bool and isinstance(item, bool)
    if kind is int:
        return isinstance(item, numbers.Integral)
    if kind is float:
        if isinstance(item, numbers.Integral):
            return ints_as_floats
        return isinstance(item, numbers.Real)
    return isinstance(item, kind)


class SchemaError(ValueError):
    """Values that do not fit a node's schema; the message names the parameter."""


@dataclass(frozen=True)
class NodeSchema:
    """The parameters of one node.

    Attributes:
        node: the node's default name (``mpc_node``).
        params: its parameters, in the order of ``--help`` and the docs.
        summary: one line saying what the node does (docs table heading).
        combination: check of a full set of values together (``values -> reason or None``).
    """

    node: str
    params: tuple[Param, ...]
    summary: str = ''
    combination: Callable[[dict], str | None] | None = None

    def __post_init__(self):
        names = [p.name for p in self.params]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f'{self.node}: parameters listed twice: {", ".join(twice)}')

    def __iter__(self):
        return iter(self.params)

    def __getitem__(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(f'{self.node} has no parameter {name!r}')

    def __contains__(self, name: str) -> bool:
        return any(p.name == name for p in self.params)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def defaults(self) -> dict[str, Any]:
        """``{name: default}`` of every parameter (lists copied)."""
        return {p.name: list(p.default) if p.is_list else p.default for p in self.params}

    def learnable(self, *groups: str) -> tuple[str, ...]:
        """Names of the parameters learning may write (of ``groups``, default: all groups)."""
        return tuple(p.name for p in self.params
                     if p.learnable is not None and (not groups or p.learnable in groups))

    def is_builtin(self, name: str) -> bool:
        """A parameter rclpy gives every node (``use_sim_time``, ``qos_overrides.*``)."""
        return name in ROS_BUILTIN_PARAMS or name.startswith(ROS_BUILTIN_PREFIXES)

    def check(self, values: dict[str, Any], where: str = '',
              ints_as_floats: bool = True) -> dict[str, Any]:
        """Type- and range-check ``values`` (a subset of the parameters) and convert them.

        Args:
            values: ``{name: value}``.
            where: prefix of the messages (a file name).
            ints_as_floats: accept integers for float parameters (converted).

        Returns:
            ``{name: value}`` in the parameters' types (builtin ROS parameters dropped).

        Raises:
            SchemaError: an unknown name, a wrong type or a value out of range (the message
                names the parameter).
        """
        prefix = f'{where}: ' if where else ''
        out = {}
        for name, value in values.items():
            if self.is_builtin(name):
                continue
            if name not in self:
                raise SchemaError(f'{prefix}{self.node} has no parameter {name!r}'
                                  f'{self.suggest(name)}')
            param = self[name]
            reason = param.type_error(value, ints_as_floats)
            if reason:
                raise SchemaError(f'{prefix}{self.node} parameter {name}: {reason}')
            value = param.convert(value)
            reason = param.reason_to_reject(value)
            if reason:
                raise SchemaError(f'{prefix}{self.node} parameter {reason}')
            out[name] = value
        return out

    def settings(self, values: dict[str, Any] | None = None, where: str = '') -> dict[str, Any]:
        """Every parameter: the defaults updated by ``values`` (checked), and the combination
        of all checked.

        Raises:
            SchemaError: see :meth:`check`, or values that do not fit together.
        """
        merged = self.defaults()
        merged.update(self.check(values or {}, where))
        if self.combination is not None:
            reason = self.combination(merged)
            if reason:
                raise SchemaError(f'{where + ": " if where else ""}{self.node}: {reason}')
        return merged

    def suggest(self, name: str) -> str:
        """``'; did you mean X?'`` for a mistyped ``name``, or ``''``."""
        import difflib

        close = difflib.get_close_matches(name, self.names, n=1, cutoff=0.7)
        return f'; did you mean {close[0]!r}?' if close else ''

    def change(self, values: dict, changes: dict) -> tuple[dict, str | None]:
        """``values`` updated by a run-time change set, and why :attr:`combination` rejects the
        result (``None``: accepted). Nodes call it from their parameter callback."""
        merged = {**values, **changes}
        return merged, self.combination(merged) if self.combination is not None else None

    def combination_rule(self) -> str:
        """The rule :attr:`combination` checks: the first paragraph of its docstring."""
        return (self.combination.__doc__ or '').split('\n\n')[0].strip() if self.combination else ''

    def help_text(self) -> str:
        """The ``parameters`` part of ``--help``: one entry per parameter."""
        lines = ['parameters (type, default; range):']
        for p in self.params:
            bounds = p.range_text()
            lines.append(f'  {p.name} ({p.type_name}, {p.default!r}{"; " + bounds if bounds else ""})')
            flags = [' [read-only]' if p.read_only else '',
                     f' [learnable: {p.learnable}]' if p.learnable else '']
            lines.append(f'      {p.full_description(choices=False)}{"".join(flags)}')
        if self.combination is not None:
            lines.append(f'  together: {self.combination_rule().replace("``", "")}')
        return '\n'.join(lines)

    def markdown_table(self) -> str:
        """The docs table: name, type, default, unit, range, dynamic, learnable, description."""
        rows = ['| parameter | type | default | unit | range | dynamic | learned | description |',
                '|---|---|---|---|---|---|---|---|']
        for p in self.params:
            default = _yaml_scalar(p.default)
            rows.append(f'| `{p.name}` | {p.type_name} | `{default}` | {p.unit} | '
                        f'{p.range_text()} | {"no" if p.read_only else "yes"} | '
                        f'{p.learnable or ""} | {p.description.replace("|", "/")} |')
        return '\n'.join(rows)


def _yaml_scalar(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()
