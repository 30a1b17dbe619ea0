"""Metric tables (`layout.METRICS`): any row table under the metrics root, `<stage>/<name>`, one 1-D
column per array, read as its first `n` rows (n first, then [:n]: never a torn row).

- the x-axis is the first of `X_COLUMNS` present (step, iteration, epoch, …), else the row;
- a per-task metric is one 2-D column (rows, K) whose K columns are the table's `tasks` attribute; it
  is read as K columns `<name>_<i>`, task i's `<name>` (older stores wrote those columns themselves,
  or `<name>/<i>`, which zarr stores as a nested array): the tasks' columns make one plot (mean line,
  min–max band), and `return_<i>` is task i's return;
  a plain column named like such a group (the stage's own mean) is not drawn twice;
- every other numeric column is a plot of its own (`wall`/`time` columns are not);
- NaN means "not logged in this row".
Returns in tables of `TRAIN_STAGES` (collect, bcq) are training-task returns; in any other table they
are test-task returns of the algo the table is named after (`<algo>`, `<algo>_eval`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..core import layout

TRAIN_STAGES = ("collect", "bcq")                # their return columns are training tasks
X_COLUMNS = ("step", "steps", "env_steps", "iteration", "iterations", "epoch", "epochs")
HIDDEN_COLUMNS = ("time", "wall", "wall_time", "timestamp", "elapsed", "seconds")
_TASK_COLUMN = re.compile(r"^(?P<base>.+?)[_/](?P<task>\d+)$")


@dataclass(eq=False)
class Plot:
    """What one plot draws: a line, and for a per-task group the tasks' min–max band."""
    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    tasks: int = 0                  # tasks behind the line (0: a single column)


@dataclass(eq=False)
class Table:
    """One row table (`metrics/<key>`): its first `n` rows, as columns."""
    key: str                        # "collect/train", "distill/mbml"
    n: int
    columns: dict[str, np.ndarray]

    @property
    def stage(self) -> str:
        return self.key.split("/")[0]

    @property
    def name(self) -> str:
        return self.key.partition("/")[2]

    @property
    def x_name(self) -> str:
        return next((c for c in X_COLUMNS if c in self.columns), "row")

    @property
    def x(self) -> np.ndarray:
        col = self.columns.get(self.x_name)
        return np.asarray(col, dtype=float) if col is not None else np.arange(self.n, dtype=float)

    def _numeric(self, c: str) -> bool:
        v = self.columns[c]
        return v.ndim == 1 and np.issubdtype(v.dtype, np.number) and c not in X_COLUMNS \
            and c not in HIDDEN_COLUMNS

    def groups(self) -> dict[str, dict[str, str]]:
        """Per-task columns: base name → {task: column}, tasks in order."""
        out: dict[str, dict[str, str]] = {}
        for c in self.columns:
            m = _TASK_COLUMN.match(c)
            if m and self._numeric(c):
                out.setdefault(m["base"], {})[m["task"]] = c
        return {b: dict(sorted(g.items(), key=lambda kv: int(kv[0]))) for b, g in out.items()}

    def metric_names(self) -> list[str]:
        """What the Losses panel plots: each per-task group once, each other numeric column;
        returns last."""
        groups, names = self.groups(), []
        grouped = {c for g in groups.values() for c in g.values()}
        for c in self.columns:
            if not self._numeric(c):
                continue
            name = _TASK_COLUMN.match(c)["base"] if c in grouped else c
            if name not in names and (c in grouped or c not in groups):
                names.append(name)
        return sorted(names, key=lambda n: n == "return")

    def series(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of one column, rows where it is not finite left out."""
        y = np.asarray(self.columns[column], dtype=float)
        ok = np.isfinite(y)
        return self.x[ok], y[ok]

    def plot(self, name: str) -> Plot:
        group = self.groups().get(name)
        if not group:
            return Plot(*self.series(name))
        y = np.asarray([self.columns[c] for c in group.values()], dtype=float)
        ok = np.isfinite(y).any(axis=0)
        y = y[:, ok]
        with np.errstate(all="ignore"):
            return Plot(self.x[ok], np.nanmean(y, axis=0), np.nanmin(y, axis=0), np.nanmax(y, axis=0),
                        len(group))

    def returns(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Task label → (x, y) of its return column (`return_<i>` or `return/<i>`)."""
        return {t: self.series(c) for t, c in self.groups().get("return", {}).items()}


def plot_series(table: Table) -> dict[str, Plot]:
    """name → what to draw, for each metric of a table (per-task groups as one plot each)."""
    return {name: table.plot(name) for name in table.metric_names()}


def algo_of(table: Table) -> str:
    """The algorithm a table of test-task returns belongs to (`<algo>`, `<algo>_eval`, `eval_<algo>`)."""
    first = table.name.split("/")[0] if table.name else table.stage
    for suffix in ("_eval", "-eval"):
        first = first[: -len(suffix)] if first.endswith(suffix) else first
    return first[len("eval_"):] if first.startswith("eval_") else first


# ---- reading -----------------------------------------------------------------------------------
def read_tables(store, cache: dict[str, Table] | None = None, guard=None) -> dict[str, Table]:
    """Every table under the metrics root by key; `cache` (key → Table) is updated in place and saves
    re-reading tables whose `n` did not move. `guard(key, read)`, if given, reads one table by
    calling `read()` and returns it, or None to leave the table out."""
    out: dict[str, Table] = {}
    where = layout.parent(layout.METRICS)
    if store.exists(where):
        _walk(store.root[where], "", out, {} if cache is None else cache, guard or (lambda key, read: read()))
    return out


def _walk(group, prefix: str, out: dict[str, Table], cache: dict[str, Table], guard, depth: int = 0) -> None:
    for name in sorted(group.group_keys()):
        sub, key = group[name], f"{prefix}{name}"
        if "n" in sub.attrs:
            table = guard(key, lambda: read_table(sub, key, cache))
            if table is not None:
                out[key] = table
        elif depth < 3:
            _walk(sub, key + "/", out, cache, guard, depth + 1)


def read_table(group, key: str, cache: dict[str, Table]) -> Table:
    """One row table (a zarr group with its row count `n`), from `cache` when `n` did not move."""
    n = int(group.attrs["n"])
    old = cache.get(key)
    if old is None or old.n != n:                   # n first, then [:n]: never a torn row
        cache[key] = Table(key, n, _columns(group, n))
    return cache[key]


def _columns(group, n: int, prefix: str = "", depth: int = 0) -> dict[str, np.ndarray]:
    """A table's columns, first `n` rows. A column named with a slash (`return/3`) is stored by
    zarr as a nested array (`<table>/return/3`), so subgroups are read as columns too."""
    cols = {}
    tasks = group.attrs.get("tasks")
    for k in sorted(group.array_keys()):
        values = np.asarray(group[k][:n])
        if values.ndim == 2 and isinstance(tasks, list) and len(tasks) == values.shape[1]:
            cols.update({f"{prefix}{k}_{i}": values[:, j] for j, i in enumerate(tasks)})    # one per task
        else:
            cols[f"{prefix}{k}"] = values
    if depth < 2:
        for k in sorted(group.group_keys()):
            cols.update(_columns(group[k], n, f"{prefix}{k}/", depth + 1))
    return cols
