"""Read ROS 2 parameter YAML files (``node_name: ros__parameters: ...``) without rclpy.

The nodes, the CLI tools and offline learning read the same ``config/*.yaml`` and learned files;
this module is the one reader they share. Values are typed as ROS types them (rcl's parser, not
PyYAML's: ``1e-4`` is a float, a quoted ``"0.3"`` a string) and checked against the node's schema
(:mod:`diffopt_ros.params`); every error names the file and line.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml


class ParamsFileError(ValueError):
    """A params file that cannot be used; the message names the file (and section)."""


#: Plain scalars that rcl's params-file parser reads as booleans and as special floats.
_TRUE = {'Y', 'y', 'yes', 'Yes', 'YES', 'true', 'True', 'TRUE', 'on', 'On', 'ON'}
_FALSE = {'N', 'n', 'no', 'No', 'NO', 'false', 'False', 'FALSE', 'off', 'Off', 'OFF'}
_FLOAT_WORDS = {'.nan': math.nan, '.NaN': math.nan, '.NAN': math.nan, '.inf': math.inf,
                '.Inf': math.inf, '.INF': math.inf}


@dataclass
class Section:
    """The ``ros__parameters`` of one node entry of a params file.

    Attributes:
        name: the fully qualified node name or pattern (``/mpc_node``, ``/robot1/mpc_node``,
            ``/**``).
        line: 1-based line of the entry.
        values: flat ``{dotted.name: value}`` typed as rcl types them.
        lines: ``{dotted.name: line}``.
    """

    name: str
    line: int
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def matches(self, fqn: str) -> bool:
        """Whether this entry applies to the node ``fqn`` (``/ns/name``): equal, or a pattern
        with ``*`` (one name level) and ``**`` (any levels)."""
        if self.name == '/**':
            return True
        pattern = (re.escape(self.name).replace(r'/\*\*/', '/(?:.*/)?')
                   .replace(r'\*\*', '.*').replace(r'\*', '[^/]*'))
        return re.fullmatch(pattern, fqn) is not None

    @property
    def node_name(self) -> str:
        """The last level of :attr:`name` (the node name without namespace)."""
        return self.name.rsplit('/', 1)[-1]


def scalar(text: str, quoted: bool = False) -> Any:
    """A YAML scalar typed the way rcl's params-file parser types it: quoted -> str; else bool
    (``true``, ``yes``, ``on``...), int (``strtol``), float (``strtod``, ``.inf``, ``.nan``),
    else str. (PyYAML differs: ``1e-4`` is a str there, ``0.3`` quoted or not a float for ROS.)"""
    if quoted:
        return text
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if '_' in text:                        # Python's int()/float() take 1_000, strtol not
        return text
    try:
        return int(text, 0)
    except ValueError:
        pass
    if re.fullmatch(r'[+-]?0[0-7]+', text):   # strtol base 0: octal
        return int(text, 8)
    word = text.lstrip('+-')
    if word in _FLOAT_WORDS:
        value = _FLOAT_WORDS[word]
        return -value if text.startswith('-') else value
    try:
        return float(text)
    except ValueError:
        return text


def load_params_yaml(path: str | os.PathLike) -> list[Section]:
    """Every node entry of a ROS 2 params file, values typed as rcl types them.

    Nested keys above ``ros__parameters`` are namespaces (``robot1: mpc_node: ros__parameters``
    is ``/robot1/mpc_node``); nested keys below are flattened to dotted names.

    Raises:
        ParamsFileError: the file cannot be read, is not YAML (``file:line: ...``), or is not
            of that form (``file:line``).
    """
    try:
        with open(path, encoding='utf-8') as stream:
            text = stream.read()
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):   # rcl's parser refuses them
                raise ParamsFileError(f'{path}:{event.start_mark.line + 1}: a YAML alias '
                                      f'(*{event.anchor}): ROS params files cannot hold aliases')
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except OSError as exc:
        raise ParamsFileError(f'{path}: cannot read params file: {exc.strerror or exc}') from exc
    except UnicodeDecodeError as exc:
        raise ParamsFileError(f'{path}: not a text file ({exc.reason})') from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = f'{path}:{mark.line + 1}' if mark is not None else str(path)
        problem = getattr(exc, 'problem', None) or str(exc)
        context = getattr(exc, 'context', None)
        raise ParamsFileError(f'{where}: not valid YAML: {problem}'
                              + (f' ({context})' if context else '')) from exc
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise ParamsFileError(f'{path}:{root.start_mark.line + 1}: expected a mapping '
                              '"<node_name>: ros__parameters: ..."')
    sections: list[Section] = []
    _collect_sections(path, root, [], sections)
    return sections


def _line(node) -> int:
    return node.start_mark.line + 1


def _pairs(path, mapping: yaml.MappingNode):
    """``(key text, key node, value node)`` of a mapping; a repeated key is an error."""
    seen = {}
    for key, value in mapping.value:
        if not isinstance(key, yaml.ScalarNode):
            raise ParamsFileError(f'{path}:{_line(key)}: a key must be a plain name')
        if key.value in seen:
            raise ParamsFileError(f'{path}:{_line(key)}: {key.value!r} given twice (first on '
                                  f'line {seen[key.value]})')
        seen[key.value] = _line(key)
        yield key.value, key, value


def _collect_sections(path, mapping: yaml.MappingNode, levels: list[str],
                      out: list[Section], entry_line: int = 1) -> None:
    for name, key, value in _pairs(path, mapping):
        if name == 'ros__parameters':
            if not levels:
                raise ParamsFileError(f'{path}:{_line(key)}: ros__parameters without a node name')
            if not isinstance(value, yaml.MappingNode):
                raise ParamsFileError(f'{path}:{_line(key)}: ros__parameters must be a mapping '
                                      'of parameter names to values')
            fqn = '/'.join(levels)
            section = Section('/' + fqn.lstrip('/'), entry_line)
            _collect_values(path, value, '', section)
            out.append(section)
        elif isinstance(value, yaml.MappingNode):
            _collect_sections(path, value, levels + [name], out, _line(key))
        else:
            raise ParamsFileError(f'{path}:{_line(key)}: {"/".join(levels + [name])!r}: expected '
                                  '"ros__parameters:" (a mapping) under a node name')


def _collect_values(path, mapping: yaml.MappingNode, prefix: str, section: Section) -> None:
    for name, key, value in _pairs(path, mapping):
        full = prefix + name
        if isinstance(value, yaml.MappingNode):
            _collect_values(path, value, full + '.', section)
            continue
        if full in section.values:
            raise ParamsFileError(f'{path}:{_line(key)}: {full!r} given twice (first on line '
                                  f'{section.lines[full]})')
        section.values[full] = _value(path, full, value)
        section.lines[full] = _line(key)


def _value(path, name: str, node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        quoted = node.style in ("'", '"')
        if not quoted and node.value == '':
            raise ParamsFileError(f'{path}:{_line(node)}: {name}: no value')
        return scalar(node.value, quoted)
    items = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode):
            raise ParamsFileError(f'{path}:{_line(item)}: {name}: a list holds only plain values')
        items.append(scalar(item.value, item.style in ("'", '"')))
    kinds = {type(v) for v in items}
    if len(kinds) > 1:
        raise ParamsFileError(f'{path}:{_line(node)}: {name}: a list mixes '
                              f'{" and ".join(sorted(k.__name__ for k in kinds))} values '
                              '(ROS lists hold one type: write 1.0, not 1, in a list of floats)')
    return items


def node_values(sections: list[Section], fqn: str) -> tuple[dict[str, Any], dict[str, int]]:
    """``({name: value}, {name: line})`` of the entries that apply to node ``fqn``: patterns
    (``/**``...) first, then the node's own entries, later ones overriding earlier ones."""
    values, lines = {}, {}
    ordered = [s for s in sections if '*' in s.name] + [s for s in sections if '*' not in s.name]
    for section in ordered:
        if section.matches(fqn):
            values.update(section.values)
            lines.update(section.lines)
    return values, lines


def read_params_file(path: str | os.PathLike, node_name: str,
                     validate: bool = True) -> dict[str, Any]:
    """The flat ``{name: value}`` parameters of ``node_name`` in a ROS 2 params YAML file.

    Entries for ``/**`` (and other patterns) apply to every node and are overridden by the
    node's own entry (``node_name`` or ``/node_name``), as ``--params-file`` does; nested mappings
    are flattened to dotted names (``weights: {position: 1.0}`` -> ``weights.position``). Values
    are typed as ROS types them. For a diffopt_ros node (``validate``) every value is checked
    against the node's schema (:mod:`diffopt_ros.params`): unknown names, wrong types and values
    out of range are errors; integers given for floats are converted.

    Raises:
        ParamsFileError: the file is missing, is not YAML of that form, has no entry for
            ``node_name``, or a value does not fit (``file:line: node parameter name: why``).
    """
    sections = load_params_yaml(path)
    fqn = '/' + node_name.lstrip('/')
    if not any(s.matches(fqn) for s in sections):
        raise ParamsFileError(f'{path}: no "{node_name}:" (or "/**:") section with ros__parameters'
                              + _section_hint(sections, node_name))
    values, lines = node_values(sections, fqn)
    if not validate:
        return values
    schema = _schema(node_name)
    if schema is None:
        return values
    out = {}
    for name, value in values.items():
        try:
            out.update(schema.check({name: value}, f'{path}:{lines[name]}'))
        except ValueError as exc:
            raise ParamsFileError(str(exc)) from exc
    return out


def _schema(node_name: str):
    from diffopt_ros.params import NODE_MODULES, schema_for

    name = node_name.rsplit('/', 1)[-1]
    return schema_for(name) if name in NODE_MODULES else None


def _other_node_has(key: str, node: str) -> bool:
    """Whether a diffopt_ros node other than ``node`` has the parameter ``key``."""
    from diffopt_ros.params import NODE_MODULES, schema_for

    return any(key in schema_for(other) for other in NODE_MODULES if other != node)


def _section_hint(sections: list[Section], node_name: str) -> str:
    if not sections:
        return ' (the file holds no node entry)'
    names = [s.name for s in sections]
    close = difflib.get_close_matches(node_name.rsplit('/', 1)[-1],
                                      [s.node_name for s in sections], n=1, cutoff=0.6)
    hint = f'; is "{close[0]}" a misspelling of "{node_name}"?' if close else ''
    return f' (its entries: {", ".join(names)}){hint}'


@dataclass
class RosArgs:
    """What the ``--ros-args`` of a node's command line say about its parameters.

    Attributes:
        params_files: the ``--params-file`` paths, in order.
        overrides: ``[(name, value text), ...]`` of ``-p name:=value``.
        node_name: from ``-r __node:=NAME`` (or ``__name``), else None.
        namespace: from ``-r __ns:=/NS``, else None.
    """

    params_files: list[str] = field(default_factory=list)
    overrides: list[tuple[str, str]] = field(default_factory=list)
    node_name: str | None = None
    namespace: str | None = None


def parse_ros_args(args: list[str], node_name: str) -> RosArgs:
    """The parameter-related ROS arguments of a command line (``--ros-args ... [--]``, several
    blocks allowed); remaps and ``-p`` with a ``node:`` prefix count when it is ``node_name``."""
    out = RosArgs()
    inside, i = False, 0
    while i < len(args):
        arg = args[i]
        if arg == '--ros-args':
            inside = True
        elif arg == '--':
            inside = False
        elif inside and arg == '--params-file' and i + 1 < len(args):
            out.params_files.append(args[i + 1])
            i += 1
        elif inside and arg in ('-p', '--param', '-r', '--remap') and i + 1 < len(args):
            target, sep, value = args[i + 1].partition(':=')
            prefix, colon, name = target.rpartition(':')
            i += 1
            if not sep or (colon and prefix != node_name):
                pass
            elif arg in ('-p', '--param'):
                out.overrides.append((name, value))
            elif name in ('__node', '__name'):
                out.node_name = value
            elif name == '__ns':
                out.namespace = value
        i += 1
    return out


def check_ros_args(args: list[str], node_name: str) -> list[str]:
    """Check the params files and ``-p`` values of a node's command line against the node's
    schema, before ROS reads them.

    Returns:
        Warnings: a file's unknown parameters ("params file X sets unknown parameter Y of
        node Z"; in an entry for several nodes, ``/**``, only names no diffopt_ros node has),
        an entry whose node name is close to the node's but does not match it, a file with
        nothing for this node, an unknown ``-p`` name.

    Raises:
        ParamsFileError: a file cannot be read or is not valid YAML (``file:line``), or a value
            for this node has the wrong type or is out of range (``file:line: node parameter
            name: why``).
    """
    ros = parse_ros_args(args, node_name)
    schema = _schema(node_name)
    name = ros.node_name or node_name
    namespace = '/' + (ros.namespace or '').strip('/')
    fqn = (namespace.rstrip('/') + '/' + name)
    warnings = []
    for path in ros.params_files:
        sections = load_params_yaml(path)
        values, lines = node_values(sections, fqn)
        if not any(s.matches(fqn) for s in sections):
            warnings.append(f'params file {path} sets nothing for node {fqn}'
                            + _section_hint(sections, name))
        else:
            for section in sections:
                if not section.matches(fqn) and section.node_name != name and \
                        difflib.get_close_matches(section.node_name, [name], cutoff=0.75):
                    warnings.append(f'params file {path}:{section.line}: entry {section.name!r} '
                                    f'does not match node {fqn} (misspelt?)')
        if schema is None:
            continue
        own = {key for s in sections if '*' not in s.name and s.matches(fqn) for key in s.values}
        for key, value in values.items():
            if key not in schema and not schema.is_builtin(key):
                if key in own or not _other_node_has(key, schema.node):
                    warnings.append(f'params file {path}:{lines[key]} sets unknown parameter '
                                    f'{key} of node {fqn}{schema.suggest(key)}')
                continue    # else: a shared (/**) entry with another node's parameter
            try:
                schema.check({key: value}, f'{path}:{lines[key]}', ints_as_floats=False)
            except ValueError as exc:
                raise ParamsFileError(str(exc)) from exc
    for key, text in ros.overrides:
        if schema is None:
            continue
        if key not in schema and not schema.is_builtin(key):
            warnings.append(f'-p {key}:={text}: unknown parameter {key} of node {fqn}'
                            f'{schema.suggest(key)}')
            continue
        try:
            value = _override_value(text)
            schema.check({key: value}, f'-p {key}:={text}', ints_as_floats=False)
        except ValueError as exc:
            raise ParamsFileError(str(exc)) from exc
    return warnings


def _override_value(text: str) -> Any:
    """A ``-p name:=value`` value typed as rcl types it (a scalar, or a ``[a, b]`` list)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return text
    if isinstance(node, yaml.SequenceNode):
        return _value('-p', text, node)
    if isinstance(node, yaml.ScalarNode):
        return scalar(node.value, node.style in ("'", '"'))
    return text
