"""`mbml import arrays FILE.npz|DIR`: per-task NumPy arrays, read with `allow_pickle=False`.

Layout (rows are transitions; d = observation size, a = action size):

    obs (N, d)  act (N, a)  rew (N,)  next_obs (N, d)  terminal (N,)     required
    truncated (N,)          a time-limit cut, kept apart from terminal   optional (default: none)
    info (N, n)             per-step simulator features for the reward   optional
    action_low, action_high (a,)  the action space; actions are rescaled to [-1, 1]   optional (±1)
    task (N,) int           task id 0..K-1 of each row, for several tasks in one file   optional
    task_params             (p,) for a one-task file, (K, p) with a `task` column   optional (or --tasks)

Either one `.npz` per task (a directory of them, taken in natural order: task-2 before task-10), or
one `.npz` with a `task` column. Rows of one task keep their order. Before a byte of data is read,
the `.npy` headers inside the zip are checked: the names, the row counts, and the memory the declared
shapes would take; then every float array must be finite.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from ..recipe import limits
from ..errors import StageError
from .batches import DTYPES, TaskBatch, bounds, check_finite, make_columns, natural_key

REQUIRED = ("obs", "act", "rew", "next_obs", "terminal")
OPTIONAL = ("truncated", "info", "action_low", "action_high", "task", "task_params")
PER_ROW = REQUIRED + ("truncated", "info", "task")      # one entry per transition
HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


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


def headers(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """{array: (declared shape, dtype)} from the .npy headers inside the zip; no data is read."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                with z.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in HEADERS:
                        raise StageError(f"{path}: {member} is .npy format {version}; mbml reads 1.0 and 2.0")
                    shape, _, dtype = HEADERS[version](f)
                out[member.removesuffix(".npy")] = (shape, dtype)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise StageError(f"{path}: not a readable .npz file ({e})") from None
    return out


def check_headers(path: Path, heads: dict, held: int = 0) -> int:
    """Names, row counts and memory of one file from its headers (one line naming the array);
    `held`: bytes the files before it keep. Returns the bytes this file's batch will keep."""
    missing = [k for k in REQUIRED if k not in heads]
    if missing:
        raise StageError(f"{path}: missing array(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    unknown = sorted(set(heads) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise StageError(f"{path}: unknown array(s) {', '.join(unknown)} (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    for name, (_, dtype) in heads.items():
        if dtype.hasobject:
            raise StageError(f"{path}: {name} cannot be read without unpickling (dtype {dtype})")
        if dtype.kind not in "biuf":
            raise StageError(f"{path}: {name} has dtype {dtype}; expected numbers (bool, integer or float)")
    size = {k: math.prod(shape) * dtype.itemsize for k, (shape, dtype) in heads.items()}
    kept = sum(math.prod(heads[k][0]) * np.dtype(DTYPES[k]).itemsize for k in DTYPES if k in heads)
    need, have = held + sum(size.values()) + kept, limits.machine_memory()     # the file, then the store's copy
    if need > have:
        big = max(size, key=size.get)
        raise StageError(f"{path}: {big} declares shape {heads[big][0]} {heads[big][1]}; reading it would need "
                         f"about {limits.gib(need)} of memory (this machine has {limits.gib(have)})")
    obs = heads["obs"][0]
    for name in PER_ROW:
        if name in heads and heads[name][0][:1] != obs[:1]:
            raise StageError(f"{path}: {name} declares shape {heads[name][0]}, obs {obs}: the row counts differ")
    return kept


def load_npz(path: Path, held: int = 0) -> tuple[dict[str, np.ndarray], int]:
    """The file's arrays, once its headers pass `check_headers`, every float array finite; and the
    bytes its batch will keep."""
    kept = check_headers(path, headers(path), held)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise StageError(f"{path}: not a readable .npz file ({e})") from None
    for name, x in arrays.items():
        check_finite(str(path), name, x)
    return arrays, kept


def batch(label: str, a: dict, rows, params, n_info) -> TaskBatch:
    pick = (lambda x: x) if rows is None else (lambda x: np.asarray(x)[rows])
    act_dim = np.asarray(a["act"]).shape[-1]
    low, high = bounds(label, act_dim, a.get("action_low"), a.get("action_high"))
    columns = make_columns(label, *(pick(a[k]) for k in REQUIRED),
                           truncated=pick(a["truncated"]) if "truncated" in a else None,
                           info=pick(a["info"]) if "info" in a else None, n_info=n_info, low=low, high=high)
    return TaskBatch(label, columns, low, high, params)


def read(sources: list[str], n_info=None) -> list[TaskBatch]:
    """Every task the sources hold, in order; `n_info` as in `batches.make_columns`."""
    out, held = [], 0
    for source in sources:
        for path in files(source):
            a, kept = load_npz(path, held)
            held += kept
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
