"""Checks of :class:`~diffopt_ros.mpc.MPC`'s inputs at the API boundary.

Shapes, dtypes and the order of the bounds are checked before a solve (attribute comparisons, no
tensor operations on the hot path except one comparison of the bounds); non-finite inputs are
diagnosed after a solve whose costs are not finite (so a finite solve pays one test), naming the
argument. Every error is a ``ValueError`` (``TypeError`` for a wrong kind of value) that names the
argument and gives the shapes or dtypes involved.
"""
from __future__ import annotations

import torch

from .costs import Cost
from .dynamics import Dynamics


def dtype_probe(module: torch.nn.Module) -> tuple[dict, str] | None:
    """Where a module's first floating parameter or buffer lives: its owner's ``_parameters`` or
    ``_buffers`` dict and its name (``None``: none). Looked up again on every use (:func:`probe_dtype`),
    so it tells the module's dtype after a conversion (which replaces buffers)."""
    for kind in ('_parameters', '_buffers'):
        for owner in module.modules():
            for name, t in getattr(owner, kind).items():
                if t is not None and t.is_floating_point():
                    return getattr(owner, kind), name
    return None


def probe_dtype(probe: tuple[dict, str] | None) -> torch.dtype | None:
    """The dtype of the tensor a :func:`dtype_probe` points to (``None``: none, or it was removed)."""
    if probe is None:
        return None
    t = probe[0].get(probe[1])
    return None if t is None else t.dtype


def _shape(t) -> tuple:
    return tuple(t.shape)


def check_tensor(name: str, t, dtype: torch.dtype, shapes: tuple[tuple[int, ...], ...], what: str) -> None:
    """``t`` is a tensor of ``dtype`` with one of ``shapes`` (``what`` describes them)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f'MPC: {name} must be a torch.Tensor, got {type(t).__name__}')
    if t.dtype != dtype:
        raise ValueError(f'MPC: {name} has dtype {t.dtype}, expected {dtype} (the dtype of x_init '
                         f'and of the model); convert it with .to({dtype})')
    if _shape(t) not in shapes:
        raise ValueError(f'MPC: {name} must be {what}, got shape {_shape(t)}')


def check_problem(dynamics: Dynamics, cost: Cost, x_init, horizon: int,
                  probes: tuple | None = None) -> None:
    """``x_init (B, n_x)``: a floating tensor with a non-empty batch, the dtype of the model and the
    cost, ``n_x`` entries; the cost's ``n_x``/``n_u`` (where it declares them) those of the dynamics,
    and the cost's own data fit the batch and horizon (:meth:`Cost.check`). ``probes``: the
    :func:`dtype_probe` of the dynamics and the cost where already found.
    """
    if not isinstance(x_init, torch.Tensor):
        raise TypeError(f'MPC: x_init must be a torch.Tensor (B, n_x), got {type(x_init).__name__}')
    if not x_init.is_floating_point():
        raise ValueError(f'MPC: x_init must be a floating-point tensor, got dtype {x_init.dtype} '
                         f'(e.g. torch.tensor([[0, 0]]) is int64: write 0.0 or pass dtype=)')
    if x_init.ndim != 2:
        raise ValueError(f'MPC: x_init must be (B, n_x), got shape {_shape(x_init)}')
    if x_init.shape[0] == 0:
        raise ValueError(f'MPC: x_init has an empty batch, shape {_shape(x_init)}; pass at least one state')
    n_x, n_u = dynamics.n_x, dynamics.n_u
    if x_init.shape[1] != n_x:
        raise ValueError(f'MPC: x_init has {x_init.shape[1]} entries per state (shape {_shape(x_init)}), '
                         f'the dynamics {type(dynamics).__name__} has n_x={n_x}')
    if probes is None:
        probes = dtype_probe(dynamics), dtype_probe(cost)
    for label, module, probe in (('dynamics', dynamics, probes[0]), ('cost', cost, probes[1])):
        dtype = probe_dtype(probe)
        if dtype is not None and dtype != x_init.dtype:
            raise ValueError(f'MPC: x_init has dtype {x_init.dtype} but the {label} '
                             f'{type(module).__name__} holds {dtype}; convert one of them '
                             f'(x_init.to({dtype}) or mpc.to({x_init.dtype}))')
    cost_nx, cost_nu = getattr(cost, 'n_x', None), getattr(cost, 'n_u', None)
    if (cost_nx is not None and cost_nx != n_x) or (cost_nu is not None and cost_nu != n_u):
        raise ValueError(f'MPC: the cost {type(cost).__name__} has n_x={cost_nx}, n_u={cost_nu}, the '
                         f'dynamics {type(dynamics).__name__} n_x={n_x}, n_u={n_u}')
    cost.check(x_init.shape[0], horizon, x_init.dtype)
    dynamics.check(x_init.shape[0], horizon, x_init.dtype)


def check_inputs(batch: int, T: int, n_x: int, n_u: int, dtype: torch.dtype, target, u_init, u_prev) -> None:
    """``target`` ``(B, n_x)``, ``(n_x,)`` or ``(B, T+1, n_x)``; ``u_init (B, T, n_u)``;
    ``u_prev (B, n_u)``."""
    if target is not None:
        check_tensor('target', target, dtype, ((batch, n_x), (n_x,), (batch, T + 1, n_x)),
                     f'a goal (B, n_x) = {(batch, n_x)} or (n_x,), or a reference (B, T+1, n_x) = '
                     f'{(batch, T + 1, n_x)}')
    if u_init is not None:
        check_tensor('u_init', u_init, dtype, ((batch, T, n_u),), f'(B, T, n_u) = {(batch, T, n_u)}')
    if u_prev is not None:
        check_tensor('u_prev', u_prev, dtype, ((batch, n_u),), f'(B, n_u) = {(batch, n_u)}')


def bound_tensor(name: str, value, batch: int, T: int, n_u: int, like: torch.Tensor) -> torch.Tensor | None:
    """A control bound as ``(B, T, n_u)``: a float, ``(n_u,)``, ``(T, n_u)`` or ``(B, T, n_u)``
    (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.dtype != like.dtype:
            raise ValueError(f'MPC: {name} has dtype {value.dtype}, expected {like.dtype} '
                             f'(the dtype of x_init)')
        b = value.to(device=like.device, dtype=like.dtype)
    else:
        try:
            b = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f'MPC: {name} must be a float, a sequence or a tensor, got {value!r}') from err
    try:
        if b.ndim > 3:
            raise RuntimeError
        return b.expand(batch, T, n_u)
    except RuntimeError:
        raise ValueError(f'MPC: {name} has shape {_shape(b)}; expected a float, (n_u,) = {(n_u,)}, '
                         f'(T, n_u) = {(T, n_u)} or (B, T, n_u) = {(batch, T, n_u)}') from None


def check_bound_order(lower: torch.Tensor, upper: torch.Tensor) -> None:
    """``lower <= upper`` everywhere (one comparison; ``nan`` is diagnosed after the solve)."""
    if bool((lower > upper).any()):
        where = (lower > upper).nonzero()[0].tolist()
        raise ValueError(f'MPC: u_lower > u_upper at (b, t, i) = {tuple(where)}: u_lower = '
                         f'{float(lower[tuple(where)])}, u_upper = {float(upper[tuple(where)])}')


def diagnose_nonfinite(named: dict, cost: Cost, dynamics: Dynamics) -> None:
    """Raise a ``ValueError`` naming the first input, cost or dynamics tensor that is not finite
    (called when a solve's costs are not finite); return if all are finite (a diverged solve)."""
    for name, t in named.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f'MPC: {name} (shape {_shape(t)}) contains NaN or inf')
    for label, module in (('cost', cost), ('dynamics', dynamics)):
        for pname, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f'MPC: the {label} {type(module).__name__}.{pname} (shape {_shape(t)}) '
                                 f'contains NaN or inf')
        for pname, t in vars(module).items():           # plain tensor attributes (QuadraticCost's C, c)
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f'MPC: the {label} {type(module).__name__}.{pname} (shape {_shape(t)}) '
                                 f'contains NaN or inf')
