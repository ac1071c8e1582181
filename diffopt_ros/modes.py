"""How a differentiable solver's output is differentiated: one spelling for the MPC and the NLLS optimizer.

Both :class:`diffopt_ros.mpc.MPC` and :class:`diffopt_ros.nlls.Optimizer` take ``backward=`` a
:class:`Backward` member or its plain string value (``'implicit'`` and ``Backward.IMPLICIT`` are
the same thing: ``Backward`` is a ``str`` enum), and each lists the modes it implements as
``BACKWARD_MODES``. Example::

    from diffopt_ros.modes import Backward
    mpc = MPC(model, cost, horizon=20, backward=Backward.UNROLL)    # or backward='unroll'
"""
from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """A ``str`` enum whose members compare equal to, format and print as their values
    (:class:`enum.StrEnum` for Python 3.10)."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Backward(StrEnum):
    """A backward (gradient) mode; compares equal to its string value."""

    #: Implicit function theorem at the solution (KKT conditions / normal equations).
    IMPLICIT = 'implicit'
    #: Autograd through every iteration of the solve.
    UNROLL = 'unroll'
    #: Autograd through the last ``backward_steps`` iterations only (NLLS).
    TRUNCATED = 'truncated'
    #: Direct loss minimization (Theseus' DLM estimate, NLLS).
    DLM = 'dlm'
    #: No graph: the solution is a constant (MPC; what a control loop runs).
    NONE = 'none'


def backward_mode(value: str | Backward, allowed: tuple[Backward, ...], where: str) -> Backward:
    """``value`` as a :class:`Backward` member, checked against the modes ``allowed`` there.

    Raises:
        ValueError: ``value`` is not one of ``allowed``; the message names ``where`` (the
            function or class that took it) and the accepted spellings.
    """
    try:
        mode = Backward(value)
    except (ValueError, TypeError):
        mode = None
    if mode not in allowed:
        choices = ', '.join(repr(m.value) for m in allowed)
        raise ValueError(f'{where}: backward must be one of {choices}, got {value!r}')
    return mode
