"""One task's offline batch on its way into or out of a store, whatever format it came in.

A `TaskBatch` holds the store's columns (`COLUMNS`, with the dtypes `mbml collect` writes), where it
came from (`label`, named in every error), its task parameters when the source carries them, and its
action bounds. The readers (`minari_io`, `arrays`) make them; `attach_tasks`, `check_agree` and
`write_batches` are shared; `episodes` and `from_episodes` convert between a transition stream and
Minari's episodes (observations one longer than actions) without touching a value.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..core import layout
from ..errors import StageError
from ..core.store import Store

COLUMNS = tuple(layout.BATCH_COLUMNS)      # the store's batch columns and dtypes (core/layout.py)
DTYPES = layout.BATCH_COLUMNS
TASKS = layout.TASKS("train")  # the array `stages.create_run` writes; its attributes record the import
HELDOUT = "heldout"            # the split of layout.HELDOUT_BATCH: episodes kept out of training
ACTION_TOLERANCE = 1e-6        # actions may exceed the space's bounds by this (float rounding) before refusal


@dataclass
class TaskBatch:
    label: str                                   # dataset id, path or file[task=i]: named in errors
    columns: dict[str, np.ndarray]               # COLUMNS, store dtypes, actions in [-1, 1]
    action_low: np.ndarray                       # (act_dim,) the source's bounds, float64
    action_high: np.ndarray
    params: np.ndarray | None = None             # (p,) task parameters, None when the source has none
    meta: dict = field(default_factory=dict)     # what the source says of itself (env, horizon, card)

    @property
    def size(self) -> int:
        return len(self.columns["rew"])


# ---- columns ----------------------------------------------------------------------------------------
def make_columns(label: str, obs, act, rew, next_obs, terminal, truncated=None, info=None,
                 n_info=None, low=None, high=None) -> dict[str, np.ndarray]:
    """The store's columns from raw arrays: shapes checked (one line naming `label`), actions rescaled
    to [-1, 1] from [low, high], dtypes those of `mbml collect`, every value finite. `n_info`: the
    info features the distribution's reward needs, a count or their names (None: any)."""
    obs, act, next_obs = (np.asarray(x) for x in (obs, act, next_obs))
    n = len(np.asarray(rew)) if np.ndim(rew) else 0
    if n == 0:
        raise StageError(f"{label}: no transitions (rew has shape {np.shape(rew)}); a task needs at least one")
    for name, x, dims in (("obs", obs, 2), ("act", act, 2), ("next_obs", next_obs, 2), ("rew", rew, 1),
                          ("terminal", terminal, 1)):
        x = np.asarray(x)
        if x.ndim != dims or len(x) != n:
            raise StageError(f"{label}: {name} has shape {x.shape}; expected {n} rows"
                             + (" of vectors" if dims == 2 else ""))
    if next_obs.shape != obs.shape:
        raise StageError(f"{label}: next_obs has shape {next_obs.shape}, obs {obs.shape}")
    count, named = wanted(n_info)
    if info is None:
        if count:
            raise StageError(f"{label}: no info features; the distribution's reward needs {named}")
        info = np.zeros((n, 0), np.float32)
    if count is not None and np.asarray(info).reshape(n, -1).shape[1] != count:
        raise StageError(f"{label}: {np.asarray(info).reshape(n, -1).shape[1]} info features; "
                         f"the distribution's reward needs {named}")
    check_finite(label, "act", act)                # NaN would pass rescale's bounds check
    cols = {"obs": obs, "act": rescale(label, act, low, high), "rew": rew, "next_obs": next_obs,
            "terminal": terminal, "truncated": np.zeros(n, bool) if truncated is None else truncated,
            "info": np.asarray(info).reshape(n, -1)}
    with np.errstate(over="ignore"):               # a float64 beyond float32 becomes ±inf: refused below
        out = {k: np.asarray(cols[k]).astype(DTYPES[k], copy=False) for k in COLUMNS}
    for k in COLUMNS:
        check_finite(label, k, out[k])
    return out


def wanted(n_info) -> tuple[int | None, str]:
    """(count, words) of the info features a reward needs: `n_info` is a count, their names or None."""
    if n_info is None or isinstance(n_info, (int, np.integer)):
        return n_info, str(n_info)
    names = list(n_info)
    return len(names), f"{len(names)} ([{', '.join(names)}])"


def check_finite(label: str, name: str, x) -> None:
    """Refuse NaN and ±inf in a float array: one line naming `label`, the array and its first bad row."""
    x = np.asarray(x)
    if x.dtype.kind not in "fc" or np.isfinite(x).all():
        return
    bad = np.argwhere(~np.isfinite(x))[0]
    raise StageError(f"{label}: {name} has a non-finite value ({x[tuple(bad)]}) at row {bad[0] if x.ndim else 0}; "
                     "mbml takes finite numbers only")


def rescale(label: str, act: np.ndarray, low, high) -> np.ndarray:
    """Actions from the space [low, high] to [-1, 1]; untouched (bit for bit) when already ±1."""
    act = np.asarray(act)
    low, high = bounds(label, act.shape[-1], low, high)
    if np.all(low == -1) and np.all(high == 1):
        out = act
    else:
        out = 2.0 * (act.astype(np.float64) - low) / (high - low) - 1.0
    if out.size and np.abs(out).max() > 1 + ACTION_TOLERANCE:
        raise StageError(f"{label}: actions lie outside the action space's bounds {low.tolist()}..{high.tolist()}")
    return out


def original_units(act, low, high) -> np.ndarray:
    """Inverse of `rescale`: a policy's action in [-1, 1] → the dataset's own units."""
    act, low, high = (np.asarray(x, np.float64) for x in (act, low, high))
    return act if np.all(low == -1) and np.all(high == 1) else low + (act + 1.0) * 0.5 * (high - low)


def bounds(label: str, act_dim: int, low, high) -> tuple[np.ndarray, np.ndarray]:
    for name, given in (("action_low", low), ("action_high", high)):
        if given is not None and (np.ndim(given) > 1 or np.size(given) not in (1, act_dim)):
            raise StageError(f"{label}: {name} has shape {np.shape(given)}; expected ({act_dim},) or one number")
    low = -np.ones(act_dim) if low is None else np.broadcast_to(np.asarray(low, np.float64), (act_dim,))
    high = np.ones(act_dim) if high is None else np.broadcast_to(np.asarray(high, np.float64), (act_dim,))
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
        raise StageError(f"{label}: the action space must be bounded (finite low < high) to rescale it to [-1, 1]")
    return low, high


# ---- episodes (Minari) <-> a transition stream ----------------------------------------------------------
def episodes(columns: dict) -> list[tuple[int, int]]:
    """[start, end) row ranges of the stream's episodes: a range ends after a terminal or truncated
    row, or where the next row does not start from this row's next_obs (then both flags stay as
    they are, so the stream comes back unchanged)."""
    n = len(columns["rew"])
    ends = np.asarray(columns["terminal"], bool) | np.asarray(columns["truncated"], bool)
    if n > 1:
        jump = np.any(columns["obs"][1:] != columns["next_obs"][:-1], axis=tuple(range(1, columns["obs"].ndim)))
        ends[:-1] |= jump
    cuts = np.flatnonzero(ends[:-1]) + 1
    starts = np.concatenate([[0], cuts]).astype(int)
    stops = np.concatenate([cuts, [n]]).astype(int)
    return [(int(s), int(e)) for s, e in zip(starts, stops) if e > s]


def from_episodes(label: str, eps, n_info, low=None, high=None) -> dict[str, np.ndarray]:
    """Columns from episodes, each a dict with observations (T+1, d), actions (T, a), rewards,
    terminations, truncations (T,) and optionally features (T, n) — concatenated in order. `n_info`:
    as in `make_columns`."""
    parts = {k: [] for k in ("obs", "act", "rew", "next_obs", "terminal", "truncated", "info")}
    count, named = wanted(n_info)
    for ep in eps:
        o = np.asarray(ep["observations"])
        T = len(ep["rewards"])
        if len(o) != T + 1:
            raise StageError(f"{label}: an episode has {len(o)} observations for {T} steps (expected {T + 1})")
        parts["obs"].append(o[:-1])
        parts["next_obs"].append(o[1:])
        parts["act"].append(np.asarray(ep["actions"]))
        parts["rew"].append(np.asarray(ep["rewards"]))
        parts["terminal"].append(np.asarray(ep["terminations"]))
        parts["truncated"].append(np.asarray(ep["truncations"]))
        feats = ep.get("features")
        if feats is None and count:
            raise StageError(f"{label}: episodes without infos['features']; the distribution's reward needs {named} "
                             "at every step (how to record them: README.md, Your own data, Recording features)")
        parts["info"].append(np.zeros((T, 0), np.float32) if feats is None else np.asarray(feats).reshape(T, -1))
    if not parts["rew"]:
        raise StageError(f"{label}: no episodes")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return make_columns(label, cat["obs"], cat["act"], cat["rew"], cat["next_obs"], cat["terminal"],
                        cat["truncated"], cat["info"], n_info, low, high)


# ---- task parameters ------------------------------------------------------------------------------------
def read_task_file(path: str | Path) -> list | dict:
    """A YAML list (in dataset order) or mapping (dataset → parameters), or CSV rows of numbers
    (in order) or `dataset,p1,p2,...`."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: no such task file")
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            raise StageError(f"{path}: not valid YAML") from None
        if not isinstance(data, (list, dict)):
            raise StageError(f"{path}: expected a list or a mapping of task parameters")
        return data
    rows = [r for r in csv.reader(path.read_text().splitlines()) if r and any(c.strip() for c in r)]
    try:
        return [[float(c) for c in r] for r in rows]
    except ValueError:
        pass
    try:
        return {r[0].strip(): [float(c) for c in r[1:]] for r in rows}
    except ValueError:
        raise StageError(f"{path}: expected rows of numbers, or dataset,p1,p2,... rows") from None


def _lookup(table: dict, label: str):
    for key in (label, label.rstrip("/").rsplit("/", 1)[-1], Path(label).stem):
        if key in table:
            return table[key]
    return None


def attach_tasks(batches: list[TaskBatch], task_file: str | None = None) -> np.ndarray:
    """(K, p) task parameters: from `task_file` when given, else each source's own; one line
    naming the dataset that has none or a different number of them."""
    given = read_task_file(task_file) if task_file else None
    if isinstance(given, list) and len(given) != len(batches):
        raise StageError(f"{task_file}: {len(given)} rows of task parameters for {len(batches)} datasets")
    rows = []
    for k, b in enumerate(batches):
        value = b.params if given is None else (given[k] if isinstance(given, list) else _lookup(given, b.label))
        if value is None:
            where = f"not in {task_file}" if given is not None else \
                "none in its metadata (key task_params); give them with --tasks FILE"
            raise StageError(f"{b.label}: no task parameters ({where})")
        try:
            rows.append(np.asarray(value, np.float64).reshape(-1))
        except (TypeError, ValueError):
            raise StageError(f"{b.label}: task parameters {value!r} are not numbers") from None
        check_finite(b.label, f"the task parameters in {task_file}" if given is not None else "task_params", rows[-1])
        if len(rows[-1]) != len(rows[0]):
            raise StageError(f"{b.label}: {len(rows[-1])} task parameters, {batches[0].label} has {len(rows[0])}")
    return np.stack(rows)


def check_agree(batches: list[TaskBatch]) -> None:
    """Observation and action spaces must agree across datasets: one line naming the first that differs."""
    first = batches[0]
    for b in batches[1:]:
        for what, x, y in (("observation size", b.columns["obs"].shape[1:], first.columns["obs"].shape[1:]),
                           ("action size", b.columns["act"].shape[1:], first.columns["act"].shape[1:]),
                           ("info features", b.columns["info"].shape[1:], first.columns["info"].shape[1:])):
            if x != y:
                raise StageError(f"{b.label}: {what} {x} differs from {first.label}'s {y}")
        if not (np.array_equal(b.action_low, first.action_low) and np.array_equal(b.action_high, first.action_high)):
            raise StageError(f"{b.label}: action bounds {b.action_low.tolist()}..{b.action_high.tolist()} differ "
                             f"from {first.label}'s {first.action_low.tolist()}..{first.action_high.tolist()}")


def natural_key(text: str):
    """Sort key that puts task-2 before task-10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


# ---- the store ------------------------------------------------------------------------------------------
def split_episodes(columns: dict, fraction: float) -> tuple[dict, dict | None]:
    """(training rows, held-out rows): the last `fraction` of the stream's episodes (at least one,
    never all) held out; (columns, None) when `fraction` is 0 or there is a single episode."""
    ranges = episodes(columns)
    k = min(len(ranges) - 1, max(1, round(fraction * len(ranges)))) if fraction > 0 else 0
    if k == 0:
        return columns, None
    cut = ranges[-k][0]
    return {c: v[:cut] for c, v in columns.items()}, {c: v[cut:] for c, v in columns.items()}


def write_batches(store: Store, batches: list[TaskBatch], params: np.ndarray, record: dict,
                  holdout: float = 0.0) -> int:
    """Each batch → `data/train/<i>` (replacing what was there) less the last `holdout` of its
    episodes, which go to `data/heldout/<i>`; the task parameters → `tasks/train` with the import's
    record (source, labels, action bounds) in its attributes. Returns the rows held out."""
    held = 0
    store.delete(TASKS)                  # its record says the batches are complete: gone until they are
    for i, b in enumerate(batches):
        train, out = split_episodes(b.columns, holdout)
        for split, columns in (("train", train), (HELDOUT, out)):
            store.delete(layout.BATCH(split, i))
            if columns is not None:
                store.append_rows(layout.BATCH(split, i), columns)
        held += 0 if out is None else len(out["rew"])
    store.write_array(TASKS, params, {**record, "labels": [b.label for b in batches],
                                      "action_low": batches[0].action_low.tolist(),
                                      "action_high": batches[0].action_high.tolist()})
    return held


def action_scale(store: Store) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the imported data's action space; ±1 for collected data. A trained policy's
    action a ∈ [-1, 1] is `original_units(a, low, high)` in the data's own units."""
    attrs = dict(store.root[TASKS].attrs) if store.exists(TASKS) else {}
    n = store.read_rows(layout.BATCH("train", 0), 0, 1).get("act", np.zeros((0, 0))).shape[-1]
    return (np.asarray(attrs.get("action_low", -np.ones(n)), np.float64),
            np.asarray(attrs.get("action_high", np.ones(n)), np.float64))


def read_batch(store: Store, i: int) -> dict[str, np.ndarray]:
    rows = store.read_rows(layout.BATCH("train", i))
    if not rows or len(rows.get("rew", [])) == 0:
        raise StageError(f"{store.path}: no data for training task {i}")
    return rows


def episode_returns(rew: np.ndarray, ends: np.ndarray) -> list[float]:
    """Returns of the finished episodes of one transition stream (`ends`: terminal | truncated)."""
    out, start = [], 0
    for e in np.flatnonzero(ends):
        out.append(float(rew[start:e + 1].sum()))
        start = e + 1
    return out
