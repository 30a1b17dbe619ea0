"""Read an experiment store into plain data for the dashboard: no UI here, testable on its own.

`Reader(path).read()` opens the store afresh (an open zarr handle keeps a stale shape), reads the
stage records, every metrics table, the eval results and the task parameters, and returns a
`Snapshot`. The functions below it turn a snapshot into what a panel shows. Nothing here writes.

What the dashboard reads (the artefacts of `layout.py`) — anything missing shows as "waiting",
anything it cannot make sense of as a note, never an error:

- root attrs `recipe` (the resolved recipe: name, seed, env, stages, algos, sections) and
  `lock.revision`; TASKS train and test (n, p) with attrs `param`.
- STAGE records `<stage>` and `<stage>/<algo>`: attrs `status` (running | done |
  failed | partial), `started`, `updated`, `ended` (unix s), `progress` (0..1), `message`. The ETA
  is (updated − started)·(1 − progress)/progress − (now − updated). Records named by a number
  under a stage that has its own record, `<stage>/<i>`, are per-task records: counted
  (done/all), not listed (`finetune/0`, under no record of its own, is listed).
- METRICS tables: any table under the metrics root (`<stage>/<name>`), one 1-D column per array:
  * the x-axis is the first of `X_COLUMNS` present (step, iteration, epoch, …), else the row;
  * a column `<name>_<i>` (or `<name>/<i>`, which zarr stores as a nested array) is task i's
    `<name>`: the tasks' columns make one plot (mean line, min–max band), and `return_<i>` is task
    i's return; a plain column named like such a group (the stage's own mean) is not drawn twice;
  * every other numeric column is a plot of its own (`wall`/`time` columns are not);
  * NaN means "not logged in this row".
  Returns in tables of `TRAIN_STAGES` (collect, bcq) are training-task returns; in any other
  table they are test-task returns of the algo the table is named after (`<algo>`, `<algo>_eval`).
- per algorithm, each part optional:
  * EVAL_HISTORY: one row per evaluation during training: `epoch`, `score`, `returns` (T, E),
    `z_mean` (T, L) — per-task scores over epochs, and the latest embedding;
  * EVALUATION test: the final evaluation on the test tasks, `returns` (T, E), `z_mean` (T, L)
    and `z_points` (T, n, L), the posterior after every episode, drawn as each task's cluster;
  * EVALUATION unseen: its attrs `score` is shown; PROBE: attrs `score`.
  A task's score is the mean return of the episodes after the first `skip` (attrs `skip`, else
  the recipe's `eval.skip`, else 2).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import numpy as np

from ..core import layout
from ..errors import RecipeError
from ..recipe import graph
from ..core.store import Store

TRAIN_STAGES = ("collect", "bcq")                # their return columns are training tasks
X_COLUMNS = ("step", "steps", "env_steps", "iteration", "iterations", "epoch", "epochs")
HIDDEN_COLUMNS = ("time", "wall", "wall_time", "timestamp", "elapsed", "seconds")
STALE_AFTER = 600.0                              # a running stage silent this long may be dead
_TASK_COLUMN = re.compile(r"^(?P<base>.+?)[_/](?P<task>\d+)$")


# ---- the snapshot ------------------------------------------------------------------------------
@dataclass(eq=False)
class StageRecord:
    key: str                        # "bcq", "distill/mbml"
    status: str = "pending"         # pending | running | done | failed | partial | interrupted
    progress: float = 0.0
    started: float | None = None
    updated: float | None = None
    ended: float | None = None
    message: str = ""
    tasks_done: int = 0             # per-task records `stages/<stage>/<i>` that are done
    tasks_seen: int = 0             # per-task records in all


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


@dataclass(eq=False)
class EvalResult:
    """What `eval/<algo>/` holds, reduced to scores per test task."""
    algo: str
    scores: np.ndarray | None = None        # (task,): the final (else latest) score per task
    scores_from: str = ""                   # where the scores come from, for the panel
    history: np.ndarray | None = None       # (eval, task) scores of the evaluations in training
    history_x: np.ndarray | None = None     # (eval,) their epochs
    history_from: str = ""
    z_mean: np.ndarray | None = None        # (task, …, latent)
    z_from: str = ""
    unseen: tuple[int, float] | None = None # (tasks, score) of `mbml eval --unseen`
    probe: float | None = None              # the probe's score
    note: str = ""                          # what could not be read


@dataclass(eq=False)
class Snapshot:
    path: str
    read_at: float = 0.0
    error: str | None = None                # the store could not be read (this time)
    recipe: dict = field(default_factory=dict)
    revision: str = ""
    stages: list[StageRecord] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)
    tasks: dict[str, np.ndarray] = field(default_factory=dict)     # split → parameters
    task_param: str = ""
    evals: dict[str, EvalResult] = field(default_factory=dict)


# ---- reading -----------------------------------------------------------------------------------
class Reader:
    """Reads snapshots of one store; a row table is re-read only when its row count `n` changed.

    On a failed read (store deleted, not an mbml store, metadata caught mid-write) the last good
    data is returned with `error` set, so the panels keep what they showed and say why.
    """

    def __init__(self, path: str):
        self.path = str(path)
        self._tables: dict[str, Table] = {}
        self._last: Snapshot | None = None

    def read(self, now: float | None = None) -> Snapshot:
        now = time.time() if now is None else now
        try:
            snap = read_snapshot(Store.open(self.path), self._tables, now)
        except Exception as e:                      # noqa: BLE001 - a dashboard never crashes on a read
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            message = message.removeprefix(f"{self.path}: ")       # the header shows the path
            last = self._last or Snapshot(self.path)
            return Snapshot(**{**last.__dict__, "error": message, "read_at": now})
        self._last = snap
        return snap


def read_snapshot(store: Store, cache: dict[str, Table] | None = None, now: float | None = None) -> Snapshot:
    """Everything the dashboard shows, from a freshly opened store. `cache` (key → Table) is
    updated in place and saves re-reading tables whose `n` did not move."""
    cache = cache if cache is not None else {}
    root = store.root
    recipe = dict(root.attrs.get("recipe", {}) or {})
    snap = Snapshot(store.path, read_at=time.time() if now is None else now, recipe=recipe,
                    revision=str((root.attrs.get("lock", {}) or {}).get("revision", "")))
    for split in ("train", "test"):
        if store.exists(layout.TASKS(split)):
            arr = root[layout.TASKS(split)]
            snap.tasks[split] = np.asarray(arr[...])
            snap.task_param = snap.task_param or str(arr.attrs.get("param", ""))
    snap.stages = _read_stages(store, recipe, len(snap.tasks.get("train", ())))
    metrics = layout.parent(layout.METRICS)
    if store.exists(metrics):
        _walk_tables(root[metrics], "", snap.tables, cache)
    skip = int(((recipe.get("eval") or {}).get("skip", 2)) or 0)
    for algo in layout.children(store, layout.parent(layout.EVALUATION)):
        snap.evals[algo] = _read_eval(store, algo, skip, cache)
    return snap


def _read_stages(store: Store, recipe: dict, n_train: int) -> list[StageRecord]:
    found: dict[str, dict] = {}
    per_task: dict[str, list[str]] = {}
    records = layout.parent(layout.STAGE)
    if store.exists(records):
        group = store.root[records]
        for name in group.group_keys():
            sub = group[name]
            if "status" in sub.attrs:
                found[name] = dict(sub.attrs)
            for child in sub.group_keys():
                if child.isdigit() and "status" in sub.attrs:   # per-task records of that stage
                    per_task.setdefault(name, []).append(str(sub[child].attrs.get("status", "")))
                else:
                    found[f"{name}/{child}"] = dict(sub[child].attrs)
    planned = planned_keys(recipe)
    records = []
    for key in planned + sorted(k for k in set(found) | set(per_task) if k not in planned):
        rec = found.get(key, {})
        tasks = per_task.get(key, [])
        records.append(StageRecord(
            key, layout.record_status(rec), _num(rec.get("progress"), 0.0),
            _num(rec.get("started")), _num(rec.get("updated")), _num(rec.get("ended")),
            str(rec.get("message") or ""), sum(t == "done" for t in tasks), max(len(tasks), n_train if tasks else 0)))
    return records


def planned_keys(recipe: dict) -> list[str]:
    """The stage record keys a run of this (stored) recipe makes, in the stage graph's order."""
    from ..recipe.load import from_dict
    try:
        return graph.plan(from_dict(recipe, source="the stored recipe"))
    except (RecipeError, ValueError, TypeError):
        return []


class Progress:
    """Where a run (or one unit of it) stands, from its stage records."""
    status: str = "waiting"         # waiting | running | done | failed | interrupted | partial | stopped
    stage: str = ""                 # the stage running now, else the next one to run
    fraction: float = 0.0           # of the keys' work done (weighted)
    started: float | None = None    # the earliest start among the records
    message: str = ""


def progress(store: Store, keys: list[str], weights: dict[str, float] | None = None) -> Progress:
    """Progress over `keys`: each key done counts its weight (projected seconds, else 1), a running or
    interrupted one its weight × its own progress."""
    total = made = 0.0
    statuses, starts, following = [], [], ""
    current, latest, message = "", -1.0, ""
    for key in keys:
        rec = store.stage(key)
        status = layout.record_status(rec) if rec else "pending"
        w = (weights or {}).get(key, 1.0)
        total += w
        made += w * (1.0 if status == "done" else min(1.0, max(0.0, _num(rec.get("progress"), 0.0))))
        statuses.append(status)
        if _num(rec.get("started")) is not None:
            starts.append(_num(rec.get("started")))
        when = _num(rec.get("updated"), _num(rec.get("started"), 0.0))
        if status == "running" and when >= latest:
            current, latest = key, when
        if status in ("failed", "interrupted") and not message:
            message = f"{key}: {rec.get('message') or status}"
        following = following or ("" if status == "done" else key)
    order = ("running", "failed", "interrupted", "partial")
    status = next((s for s in order if s in statuses), None)
    if status is None:
        status = "done" if statuses and all(s == "done" for s in statuses) else \
            "waiting" if all(s == "pending" for s in statuses) else "stopped"
    return Progress(status, current or following, made / total if total else 0.0, min(starts) if starts else None,
                    message)


def _walk_tables(group, prefix: str, out: dict[str, Table], cache: dict[str, Table], depth: int = 0) -> None:
    for name in sorted(group.group_keys()):
        sub, key = group[name], f"{prefix}{name}"
        if "n" in sub.attrs:
            out[key] = _read_table(sub, key, cache)
        elif depth < 3:
            _walk_tables(sub, key + "/", out, cache, depth + 1)


def _read_table(group, key: str, cache: dict[str, Table]) -> Table:
    n = int(group.attrs["n"])
    old = cache.get(key)
    if old is None or old.n != n:                   # n first, then [:n]: never a torn row
        cache[key] = Table(key, n, _columns(group, n))
    return cache[key]


def _columns(group, n: int, prefix: str = "", depth: int = 0) -> dict[str, np.ndarray]:
    """A table's columns, first `n` rows. A column named with a slash (`return/3`) is stored by
    zarr as a nested array (`<table>/return/3`), so subgroups are read as columns too."""
    cols = {}
    for k in sorted(group.array_keys()):
        cols[f"{prefix}{k}"] = np.asarray(group[k][:n])
    if depth < 2:
        for k in sorted(group.group_keys()):
            cols.update(_columns(group[k], n, f"{prefix}{k}/", depth + 1))
    return cols


def _read_eval(store: Store, algo: str, default_skip: int, cache: dict[str, Table]) -> EvalResult:
    res = EvalResult(algo)
    notes = []
    # evaluations during training: (T, E) returns and (T, L) z_mean per row
    where = layout.EVAL_HISTORY(algo)
    if store.exists(where) and "n" in store.root[where].attrs:
        hist = _read_table(store.root[where], where, cache)
        returns = hist.columns.get("returns")
        if hist.n and returns is not None and returns.ndim == 3:
            skip = int(store.root[where].attrs.get("skip", default_skip))
            res.history = _episode_scores(returns.astype(float), -1, skip)
            res.history_x, res.history_from = hist.x, where
            res.scores = res.history[-1]
            res.scores_from = f"{where}, {hist.x_name} {fmt_num(hist.x[-1])}"
        z = hist.columns.get("z_mean")
        if hist.n and z is not None and z.ndim >= 3:
            res.z_mean = z[-1].astype(float)
            res.z_from = f"{where}, {hist.x_name} {fmt_num(hist.x[-1])}"
    # the eval stage on the test tasks
    where = layout.EVALUATION(algo, "test")
    if store.exists(where):
        node = store.root[where]
        names = set(node.array_keys())
        if "returns" in names:
            values = np.asarray(node["returns"][...], dtype=float)
            if values.ndim == 2:
                res.scores = _episode_scores(values, 1, int(node.attrs.get("skip", default_skip)))
                res.scores_from = where
            else:
                notes.append(f"{where}/returns: shape {values.shape}, expected (task, episode)")
        name = "z_points" if "z_points" in names else "z_mean" if "z_mean" in names else None
        if name:
            z = np.asarray(node[name][...], dtype=float)
            if z.ndim >= 2 and z.shape[0] > 0:
                res.z_mean, res.z_from = z, where
            else:
                notes.append(f"{where}/{name}: shape {z.shape}, expected (task, [episode,] latent)")
    unseen = layout.read_attrs(store, layout.EVALUATION(algo, "unseen"))
    if _num(unseen.get("score")) is not None:
        n_tasks = store.root[layout.EVALUATION(algo, "unseen")]["returns"].shape[0] \
            if store.exists(f"{layout.EVALUATION(algo, 'unseen')}/returns") else 0
        res.unseen = (n_tasks, _num(unseen.get("score")))
    res.probe = _num(layout.read_attrs(store, layout.PROBE(algo)).get("score"))
    res.note = "; ".join(notes)
    return res


def _episode_scores(values: np.ndarray, axis: int, skip: int) -> np.ndarray:
    """Mean over the episodes after the first `skip` (all of them when there are no more)."""
    if values.shape[axis] > skip:
        values = np.take(values, range(skip, values.shape[axis]), axis=axis)
    with np.errstate(all="ignore"):
        return np.nanmean(values, axis=axis)


def _num(value, default=None):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _task_order(label: str):
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


def signature(snap: Snapshot) -> tuple:
    """Changes whenever what the panels show changes (row counts, records, eval results)."""
    def h(v):
        return None if v is None else (v.shape, hash(np.ascontiguousarray(v).tobytes()))
    evals = tuple((a, h(r.scores), h(r.history), h(r.z_mean), r.unseen, r.probe, r.note)
                  for a, r in snap.evals.items())
    stages = tuple((s.key, s.status, s.progress, s.updated, s.ended, s.tasks_done) for s in snap.stages)
    return (snap.error, tuple((k, t.n) for k, t in snap.tables.items()), stages, evals,
            tuple((k, v.shape) for k, v in snap.tasks.items()))


# ---- views: a snapshot → what a panel shows ------------------------------------------------------
def current_stage(snap: Snapshot) -> StageRecord | None:
    """The stage running now (the most recently updated, if several), else None."""
    running = [s for s in snap.stages if s.status == "running"]
    return max(running, key=lambda s: s.updated or s.started or 0.0) if running else None


def eta(rec: StageRecord, now: float) -> float | None:
    """Seconds left for a running stage, from its start, last update and progress."""
    if rec.status != "running" or not rec.started or rec.progress <= 0 or rec.progress >= 1:
        return None
    updated = rec.updated or now
    left = (updated - rec.started) * (1 - rec.progress) / rec.progress
    return max(0.0, left - max(0.0, now - updated))


def stale(rec: StageRecord, now: float) -> float | None:
    """Seconds since a running stage last reported, when that is suspiciously long."""
    last = rec.updated or rec.started
    if rec.status == "running" and last and now - last > STALE_AFTER:
        return now - last
    return None


def plot_tables(snap: Snapshot) -> list[str]:
    """Tables with something to plot, in pipeline order (then by name)."""
    order = {s.key.split("/")[0]: i for i, s in enumerate(snap.stages)}
    keys = [k for k, t in snap.tables.items() if t.n and (t.metric_names() or t.returns())]
    return sorted(keys, key=lambda k: (order.get(k.split("/")[0], len(order)), k))


def default_table(snap: Snapshot) -> str | None:
    """The table to follow: the running stage's (its own algo's for per-algo stages); when nothing
    runs, the distillation of the recipe's first algorithm, else the table of the stage that ran last."""
    keys = plot_tables(snap)
    if not keys:
        return None
    active = current_stage(snap)
    first = (snap.recipe.get("algos") or [""])[0]
    if active is None and layout.stage_key("distill", first) in keys:
        return layout.stage_key("distill", first)
    if active is None:
        ran = [s for s in snap.stages if s.status != "pending"]
        active = max(ran, key=lambda s: s.ended or s.updated or s.started or 0.0) if ran else None
    if active is not None:
        stage, _, algo = active.key.partition("/")
        mine = [k for k in keys if k.split("/")[0] == stage]
        if algo:
            mine = [k for k in mine if _algo_of(snap.tables[k]) == algo] or mine
        if mine:
            return mine[0]
    return keys[-1]


def plot_series(table: Table) -> dict[str, Plot]:
    """name → what to draw, for each metric of a table (per-task groups as one plot each)."""
    return {name: table.plot(name) for name in table.metric_names()}


def _algo_of(table: Table) -> str:
    first = table.name.split("/")[0] if table.name else table.stage
    for suffix in ("_eval", "-eval"):
        first = first[: -len(suffix)] if first.endswith(suffix) else first
    return first[len("eval_"):] if first.startswith("eval_") else first


def algos(snap: Snapshot) -> list[str]:
    """The recipe's algos first, then any other found in records, eval results or tables."""
    found = list(snap.recipe.get("algos") or [])
    extra = [s.key.partition("/")[2] for s in snap.stages if graph.split(s.key)[1]]
    extra += list(snap.evals)
    extra += [_algo_of(t) for t in snap.tables.values()
              if t.stage not in TRAIN_STAGES and t.returns()]
    for a in extra:
        if a and a not in found:
            found.append(a)
    return found


def task_labels(snap: Snapshot, split: str, seen=()) -> list[str]:
    n = len(snap.tasks[split]) if split in snap.tasks else 0
    labels = [str(i) for i in range(n)]
    return labels + sorted((s for s in set(seen) if s not in labels), key=_task_order)


def task_param_text(snap: Snapshot, split: str, label: str) -> str:
    params = snap.tasks.get(split)
    if params is None or not label.isdigit() or int(label) >= len(params):
        return ""
    v = np.asarray(params[int(label)], dtype=float).reshape(-1)
    return ", ".join(f"{x:.2f}" for x in v[:4]) + (", …" if v.size > 4 else "")


@dataclass(eq=False)
class ReturnRow:
    task: str
    param: str
    cells: dict[str, tuple[np.ndarray, np.ndarray]]     # source → (x, y) history (may be empty)
    score: float | None = None                          # eval/<algo> final score (test rows)


def train_returns(snap: Snapshot) -> tuple[list[str], list[ReturnRow]]:
    """Sources (tables of collect/bcq with returns) and one row per training task."""
    sources = {k: snap.tables[k].returns() for k in plot_tables(snap)
               if snap.tables[k].stage in TRAIN_STAGES and snap.tables[k].returns()}
    seen = {task for rets in sources.values() for task in rets}
    rows = [ReturnRow(task, task_param_text(snap, "train", task),
                      {src: rets.get(task, _EMPTY) for src, rets in sources.items()})
            for task in task_labels(snap, "train", seen)]
    return list(sources), rows


def test_returns(snap: Snapshot, algo: str) -> tuple[list[str], list[ReturnRow]]:
    """Sources (metrics tables of `algo`, and `eval/<algo>` when it holds several evaluations)
    and one row per test task, with the final eval score where `eval/<algo>` has one."""
    sources = {k: snap.tables[k].returns() for k in plot_tables(snap)
               if snap.tables[k].stage not in TRAIN_STAGES and snap.tables[k].returns()
               and _algo_of(snap.tables[k]) == algo}
    res = snap.evals.get(algo)
    if res is not None and res.history is not None:
        sources[res.history_from] = {str(i): (res.history_x, res.history[:, i])
                                   for i in range(res.history.shape[1])}
    seen = {task for rets in sources.values() for task in rets}
    n_scores = len(res.scores) if res is not None and res.scores is not None else 0
    seen |= {str(i) for i in range(n_scores)}
    rows = []
    for task in task_labels(snap, "test", seen):
        score = None
        if task.isdigit() and int(task) < n_scores and np.isfinite(res.scores[int(task)]):
            score = float(res.scores[int(task)])
        rows.append(ReturnRow(task, task_param_text(snap, "test", task),
                              {src: rets.get(task, _EMPTY) for src, rets in sources.items()}, score))
    return list(sources), rows


_EMPTY = (np.zeros(0), np.zeros(0))


@dataclass(eq=False)
class Embedding:
    points: np.ndarray          # (N, 2) PCA projection
    labels: np.ndarray          # (N,) task index of each point
    explained: np.ndarray       # (2,) fraction of variance along each axis
    latent: int
    separation: float | None    # mean distance between task centres / mean spread within a task


def embedding(z_mean: np.ndarray) -> Embedding | None:
    """Project posterior means (task, …, latent) to 2-D by PCA (an SVD of the centred points)."""
    z = np.asarray(z_mean, dtype=float)
    if z.ndim < 2 or z.shape[0] == 0:
        return None
    labels = np.repeat(np.arange(z.shape[0]), int(np.prod(z.shape[1:-1], dtype=int)))
    x = z.reshape(-1, z.shape[-1])
    ok = np.isfinite(x).all(axis=1)
    x, labels = x[ok], labels[ok]
    if len(x) == 0:
        return None
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    k = min(2, vt.shape[0])
    pts = np.zeros((len(x), 2))
    pts[:, :k] = xc @ vt[:k].T
    for i in range(k):              # a deterministic sign: the largest |loading| is positive
        if vt[i, np.argmax(np.abs(vt[i]))] < 0:
            pts[:, i] = -pts[:, i]
    var = s ** 2
    explained = np.zeros(2)
    if var.sum() > 0:
        explained[:k] = var[:k] / var.sum()
    return Embedding(pts, labels, explained, x.shape[1], _separation(x, labels))


def _separation(x: np.ndarray, labels: np.ndarray) -> float | None:
    tasks = np.unique(labels)
    if len(tasks) < 2:
        return None
    centres = np.stack([x[labels == t].mean(axis=0) for t in tasks])
    within = np.mean([np.linalg.norm(x[labels == t] - c, axis=1).mean() for t, c in zip(tasks, centres)])
    d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    between = d[np.triu_indices(len(tasks), 1)].mean()
    return float(between / within) if within > 1e-12 else None
