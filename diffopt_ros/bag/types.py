"""Message types unknown to rosbags' built-in typestore, from installed ``.msg`` files.

A ROS installation (apt, colcon or the PyPI wheels) puts ``<prefix>/share/<pkg>/msg/<Type>.msg``
next to the Python message classes; registering a type from there (with every type it uses)
lets the recorder store custom messages with their full definition.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from rosbags.typesys import get_types_from_msg
from rosbags.typesys.base import Nodetype
from rosbags.typesys.store import Typestore

from diffopt_ros.bag.errors import BagError


def default_share_dirs() -> list[Path]:
    """``<prefix>/share`` of every ``AMENT_PREFIX_PATH`` entry, then of this interpreter."""
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    return [Path(p) / 'share' for p in [*prefixes, sys.prefix]]


def _used_types(fields) -> list[str]:
    """Type names referenced by rosbags field definitions (nested in arrays and sequences)."""
    names = []
    for _, (kind, detail) in fields:
        while kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            (kind, detail), _ = detail
        if kind == Nodetype.NAME:
            names.append(detail)
    return names


def register_msg_files(typestore: Typestore, msgtype: str,
                       share_dirs: Iterable[Path] | None = None) -> None:
    """Register ``msgtype`` (``pkg/msg/Type``) and the types it uses from ``.msg`` files.

    Types the typestore knows already are kept as they are.

    Raises:
        BagError: a needed ``.msg`` file is in none of ``share_dirs`` (the error names the type
            and the folders searched).
    """
    dirs = list(default_share_dirs() if share_dirs is None else share_dirs)
    pending, found = [msgtype], {}
    while pending:
        name = pending.pop()
        if name in typestore.fielddefs or name in found:
            continue
        package, _, type_name = name.partition('/msg/')
        candidates = [d / package / 'msg' / f'{type_name}.msg' for d in dirs]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise BagError(f'message type {name}: no {package}/msg/{type_name}.msg under '
                           f'{", ".join(str(d) for d in dirs)}')
        types = get_types_from_msg(path.read_text(encoding='utf-8'), name)
        found.update(types)
        pending += _used_types(types[name][1])
    typestore.register(found)
