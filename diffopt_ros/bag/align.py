"""Time alignment of recorded topics (numpy): states interpolated, commands held, and the
starts of fully valid windows. :mod:`diffopt_ros.learn.windows` builds learning windows on them.

States are ``(x, y, yaw, v, omega)`` (docs/CONTRACTS.md). Interpolated yaw is continuous in
time (the samples are unwrapped first), so a window never jumps by 2 pi; wrap it with
``np.angle(np.exp(1j * yaw))`` if needed.
"""
from __future__ import annotations

import numpy as np

YAW = 2  # index of yaw in a state row


def _check_times(t: np.ndarray, values: np.ndarray, what: str) -> None:
    if t.ndim != 1 or values.shape[0] != t.shape[0]:
        raise ValueError(f'{what}: times {t.shape} and values {values.shape} do not match')
    if t.size and np.any(np.diff(t) < 0):
        raise ValueError(f'{what}: times are not sorted')


def interpolate_states(t: np.ndarray, states: np.ndarray, t_query: np.ndarray,
                       max_gap: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of states at query times (yaw unwrapped, see module doc).

    Args:
        t: ``(N,)`` sorted sample times (s).
        states: ``(N, 5)`` states at ``t``.
        t_query: ``(M,)`` query times (s).
        max_gap: a query is invalid when its bracketing samples are more than ``max_gap`` s
            apart (a dropout of the state topic).

    Returns:
        ``(M, 5)`` states (NaN rows where invalid) and ``(M,)`` bool validity: inside
        ``[t[0], t[-1]]`` and not in a gap.
    """
    t, states, t_query = np.asarray(t, float), np.asarray(states, float), np.asarray(t_query, float)
    _check_times(t, states, 'states')
    out = np.full((t_query.size, states.shape[1]), np.nan)
    if t.size == 0:
        return out, np.zeros(t_query.size, bool)
    unwrapped = states.copy()
    unwrapped[:, YAW] = np.unwrap(states[:, YAW])
    if t.size == 1:
        lo = hi = np.zeros(t_query.size, dtype=np.int64)
    else:
        hi = np.clip(np.searchsorted(t, t_query, side='left'), 1, t.size - 1)
        lo = hi - 1
    span = t[hi] - t[lo]
    valid = (t_query >= t[0]) & (t_query <= t[-1]) & (span <= max_gap)
    w = np.where(span > 0, (t_query - t[lo]) / np.where(span > 0, span, 1.0), 0.0)[:, None]
    interp = (1.0 - w) * unwrapped[lo] + w * unwrapped[hi]
    out[valid] = interp[valid]
    return out, valid


def hold(t: np.ndarray, values: np.ndarray, t_query: np.ndarray,
         max_age: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Sample and hold: the latest value at or before each query time.

    Args:
        t: ``(N,)`` sorted sample times (s).
        values: ``(N, k)`` values (e.g. commands ``[v_cmd, omega_cmd]``).
        t_query: ``(M,)`` query times (s).
        max_age: a held value older than this (s) is invalid (e.g. the robot's command
            timeout).

    Returns:
        ``(M, k)`` held values (NaN where invalid) and ``(M,)`` bool validity.
    """
    t, values, t_query = np.asarray(t, float), np.asarray(values, float), np.asarray(t_query, float)
    _check_times(t, values, 'values')
    idx = np.searchsorted(t, t_query, side='right') - 1
    valid = idx >= 0
    safe = np.maximum(idx, 0)
    if t.size:
        valid &= (t_query - t[safe]) <= max_age
    out = np.full((t_query.size, values.shape[1]), np.nan)
    out[valid] = values[safe[valid]]
    return out, valid


def window_starts(valid: np.ndarray, length: int, stride: int = 1) -> np.ndarray:
    """Start indices ``k`` (multiples of ``stride``) with ``valid[k:k+length]`` all true."""
    if length < 1 or stride < 1:
        raise ValueError(f'length and stride must be >= 1, got {length}, {stride}')
    valid = np.asarray(valid, bool)
    if valid.size < length:
        return np.zeros(0, dtype=np.int64)
    bad = np.concatenate([[0], np.cumsum(~valid)])
    starts = np.arange(0, valid.size - length + 1, stride)
    return starts[bad[starts + length] - bad[starts] == 0]
