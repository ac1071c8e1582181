"""Batch-tensor helpers of the MPC solvers: rows of a batch, repeats, detaching, and normal
copies of tensors made in inference mode."""
from __future__ import annotations

import torch


def normal_tensors(result):
    """``result`` (a tensor, ``None`` or a tuple or NamedTuple of them, nested) with every inference tensor
    replaced by a normal copy (the same object where there is none, or inside inference mode).

    Tensors made in ``torch.inference_mode`` cannot be saved for backward or changed in place
    outside it; the solvers run their no-grad work in inference mode and hand out normal tensors.
    """
    if torch.is_inference_mode_enabled() or result is None:
        return result
    if isinstance(result, torch.Tensor):
        return result.clone() if result.is_inference() else result
    items = [normal_tensors(t) for t in result]
    return type(result)(*items) if hasattr(result, '_fields') else type(result)(items)


def detached(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t.detach()``, or ``None`` for ``None``."""
    return None if t is None else t.detach()


def take_rows(t: torch.Tensor | None, rows: torch.Tensor | None) -> torch.Tensor | None:
    """The ``rows`` of a batched ``(B, ...)`` tensor (``None`` rows, ``None`` and unbatched pass)."""
    if rows is None or t is None or t.ndim < 2:
        return t
    return t[rows]


def repeat_rows(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """``(B, ...)`` -> ``(B * n, ...)``, each row ``n`` times (``None`` and unbatched tensors pass)."""
    if t is None or t.ndim < 2:
        return t
    return t.repeat_interleave(n, 0)
