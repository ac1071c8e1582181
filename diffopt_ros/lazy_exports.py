"""A package's public names, imported from their modules on first use (PEP 562).

``diffopt-ros pgo`` and ``diffopt-ros learn`` answer ``--help`` and usage errors before torch
is imported; their packages (``nlls``, ``learn``) still export their public API by name::

    __all__ = list(_EXPORTS)                          # {'Optimizer': 'optimizer', ...}
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package`` for ``exports``.

    Args:
        package: the package's ``__name__``.
        exports: public name -> module of the package that defines it (``'optimizer'`` for
            ``package.optimizer``).

    Returns:
        ``__getattr__(name)``: imports ``package.<module>`` and caches the value in the package;
        raises ``AttributeError`` for other names (so ``from package import submodule`` still
        imports a submodule). ``__dir__()``: the package's names and the exports.
    """
    def get_attribute(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f'module {package!r} has no attribute {name!r}')
        value = getattr(import_module(f'{package}.{module}'), name)
        setattr(sys.modules[package], name, value)
        return value

    def names() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return get_attribute, names
