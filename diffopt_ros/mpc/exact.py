"""Parameters set from Python floats keep those floats exactly until the module's dtype is known.

A module built from Python floats (``Pendulum(gravity=9.81)``) stores its parameters in the default
dtype (float32): converted later with ``.double()`` they would carry float32's rounding
(``9.81000166``). :class:`ExactFloats` keeps a float64 copy of each such parameter's value and, when
the module is converted (``.to``, ``.double``, ``.float``, ``.cuda``: every path goes through
``nn.Module._apply``), sets every parameter still holding its initial value to the float64 copy
rounded to the new dtype. A parameter changed in between (learned, loaded, assigned) is converted as
usual.
"""
from __future__ import annotations

import torch
from torch import nn


class ExactFloats(nn.Module):
    """Mixin for modules with parameters initialised from Python floats (see the module docstring)."""

    def record_exact(self, name: str, value: torch.Tensor) -> None:
        """Remember ``value`` (computed in float64 from Python floats) as the exact value of the
        parameter ``name`` (an attribute of this module, set to ``value`` in its dtype)."""
        sources = self.__dict__.setdefault('_exact_sources', {})
        sources[name] = value.detach().to(device='cpu', dtype=torch.float64).clone()

    def _apply(self, fn, *args, **kwargs):
        sources = self.__dict__.get('_exact_sources', {})
        unchanged = []
        for name, exact in sources.items():
            p = getattr(self, name)
            if p.is_floating_point() and torch.equal(p.detach().cpu(), exact.to(p.dtype)):
                unchanged.append(name)
        out = super()._apply(fn, *args, **kwargs)
        with torch.no_grad():
            for name in unchanged:
                p = getattr(self, name)
                if p.is_floating_point():
                    p.copy_(sources[name].to(device=p.device, dtype=p.dtype))
        return out
