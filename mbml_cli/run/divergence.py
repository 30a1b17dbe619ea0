"""Divergence stops a stage: non-finite values, or losses past a bound, end it with one line naming
the stage, the step and the quantity, before anything computed from them is stored.

Called at a stage's logging interval and before each checkpoint on values already on the host (the
loss accumulators), so the training loop itself gains no host round-trip. Raising keeps the
store's last good checkpoint and keeps non-finite rows out of `data/`.
"""
from __future__ import annotations

import numpy as np

from ..errors import StageError

BOUND = 1e15     # |loss| or |value| past this is divergence (a first VAE loss on raw humanoid observations reaches 2e10)


def _first_bad(value, bound: float | None) -> tuple[tuple, float] | None:
    arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bound is not None:
        bad |= np.abs(np.nan_to_num(arr, nan=0.0, posinf=np.inf, neginf=-np.inf)) > bound
    if not bad.any():
        return None
    idx = np.unravel_index(int(np.flatnonzero(bad)[0]), arr.shape) if arr.ndim else ()
    return idx, float(arr[idx])


def check(stage: str, step: int, bound: float | None = BOUND, labels=None, **quantities) -> None:
    """Raise StageError when any of `quantities` (scalars, arrays or tensors; a leading task axis is
    named by `labels`, e.g. task indices) holds a non-finite value or one beyond ±bound."""
    for name, value in quantities.items():
        found = _first_bad(value, bound)
        if found is None:
            continue
        idx, v = found
        where = ""
        if idx:
            first = labels[idx[0]] if labels is not None and idx[0] < len(labels) else idx[0]
            where = f" (task {first})" if labels is not None else f" at {list(idx)}"
        limit = "not finite" if not np.isfinite(v) else f"beyond ±{bound:.0e}"
        raise StageError(f"{stage} diverged at step {step}: {name}{where} = {v:.3g} ({limit}); stopped, "
                         "the store keeps its last good checkpoint (try a smaller learning rate)")


def check_rows(stage: str, step: int, labels=None, **columns) -> None:
    """Data about to be stored: every value finite (no bound: observations may be large)."""
    check(stage, step, None, labels, **columns)
