"""`mbml import arrays FILE.npz|DIR`: per-task NumPy arrays, read with `allow_pickle=False`.

Layout (rows are transitions; d = observation size, a = action size):

    obs (N, d)  act (N, a)  rew (N,)  next_obs (N, d)  terminal (N,)     required
    truncated (N,)          a time-limit cut, kept apart from terminal   optional (default: none)
    info (N, n)             per-step simulator features for the reward   optional
    action_low, action_high (a,)  the action space; actions are rescaled to [-1, 1]   optional (±1)
    task (N,) int           task id 0..K-1 of each row, for several tasks in one file   optional
    task_params             (p,) for a one-task file, (K, p) with a `task` column   optional (or --tasks)

Either one `.npz` per task (a directory of them, taken in natural order: task-2 before task-10), or
one `.npz` with a `task` column. Rows of one task keep their order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import StageError
from .batches import TaskBatch, bounds, make_columns, natural_key

REQUIRED = ("obs", "act", "rew", "next_obs", "terminal")
OPTIONAL = ("truncated", "info", "action_low", "action_high", "task", "task_params")


def files(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        found = sorted(path.glob("*.npz"), key=lambda p: natural_key(p.name))
        if not found:
            raise StageError(f"{path}: no .npz files in this directory")
        return found
    if not path.is_file():
        raise StageError(f"{path}: no such file or directory")
    return [path]


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise StageError(f"{path}: cannot be read without unpickling ({e})") from None
    except (OSError, EOFError) as e:
        raise StageError(f"{path}: not a readable .npz file ({e})") from None
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise StageError(f"{path}: missing array(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    unknown = sorted(set(arrays) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise StageError(f"{path}: unknown array(s) {', '.join(unknown)} (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    return arrays


def batch(label: str, a: dict, rows, params, n_info: int) -> TaskBatch:
    pick = (lambda x: x) if rows is None else (lambda x: np.asarray(x)[rows])
    act_dim = np.asarray(a["act"]).shape[-1]
    low, high = bounds(label, act_dim, a.get("action_low"), a.get("action_high"))
    columns = make_columns(label, *(pick(a[k]) for k in REQUIRED),
                           truncated=pick(a["truncated"]) if "truncated" in a else None,
                           info=pick(a["info"]) if "info" in a else None, n_info=n_info, low=low, high=high)
    return TaskBatch(label, columns, low, high, params)


def read(sources: list[str], n_info: int = 0) -> list[TaskBatch]:
    """Every task the sources hold, in order."""
    out = []
    for source in sources:
        for path in files(source):
            a = load_npz(path)
            params = a.get("task_params")
            if "task" not in a:
                if params is not None and np.asarray(params).ndim != 1:
                    raise StageError(f"{path}: task_params of a one-task file must be (p,), got {np.shape(params)}")
                out.append(batch(str(path), a, None, params, n_info))
                continue
            ids = np.asarray(a["task"])
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
                raise StageError(f"{path}: task must be a column of integer task ids")
            K = int(ids.max()) + 1 if len(ids) else 0
            if params is not None and (np.ndim(params) != 2 or len(params) != K):
                raise StageError(f"{path}: task_params must be (K, p) with K = {K} tasks, got {np.shape(params)}")
            for i in range(K):
                rows = np.flatnonzero(ids == i)
                if len(rows) == 0:
                    raise StageError(f"{path}: task id {i} has no rows (ids must be 0..K-1)")
                out.append(batch(f"{path}[task={i}]", a, rows, None if params is None else params[i], n_info))
    return out
