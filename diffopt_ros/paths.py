"""Locate the package's data (``config/``, ``launch/``) in a source checkout, a pip install
or a colcon install alike."""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = 'diffopt_ros'


def share_dir() -> Path:
    """Return the folder that holds ``config/`` and ``launch/``.

    Looked up in this order: the source checkout next to this module (``pip install -e .``,
    running from the repository), the ament index (colcon install, ``AMENT_PREFIX_PATH``), and
    ``<prefix>/share/diffopt_ros`` of the running interpreter (``pip install .``).
    """
    source = Path(__file__).resolve().parent.parent
    if (source / 'config').is_dir() and (source / 'package.xml').is_file():
        return source
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        candidate = Path(prefix) / 'share' / PACKAGE
        if prefix and (candidate / 'config').is_dir():
            return candidate
    # colcon install: <prefix>/lib/pythonX.Y/site-packages/diffopt_ros -> <prefix>/share/diffopt_ros
    for parent in Path(__file__).resolve().parents:
        candidate = parent / 'share' / PACKAGE
        if (candidate / 'config').is_dir():
            return candidate
    candidate = Path(sys.prefix) / 'share' / PACKAGE
    if (candidate / 'config').is_dir():
        return candidate
    raise FileNotFoundError(
        f'cannot find the {PACKAGE} share directory (config/, launch/): looked next to {source}, '
        f'in AMENT_PREFIX_PATH and under {sys.prefix}/share')


def config_path(*parts: str) -> Path:
    """Path of a file under ``config/`` (e.g. ``config_path('worlds', 'loop.yaml')``)."""
    return share_dir().joinpath('config', *parts)


def resolve_config(name: str | os.PathLike, *subdir: str) -> Path:
    """An explicit path if it exists, else the file of that name under ``config/<subdir>``."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = config_path(*subdir, str(name))
    if candidate.is_file():
        return candidate
    if not candidate.suffix:
        with_suffix = candidate.with_suffix('.yaml')
        if with_suffix.is_file():
            return with_suffix
    raise FileNotFoundError(f'{name}: no such file, and not found under {candidate.parent}')
