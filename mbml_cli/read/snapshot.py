"""Read an experiment store into plain data for the dashboard: no UI here, testable on its own.

`Reader(path).read()` opens the store afresh (an open zarr handle keeps an outdated shape), reads
the stage records (`records.py`), every metrics table (`tables.py`), the eval results
(`scores.py`) and the task parameters, and returns a `Snapshot`. The functions below it turn a
snapshot into what a panel shows. Nothing here writes.

What the dashboard reads (the artefacts of `layout.py`) — anything missing shows as "waiting",
anything it cannot make sense of as a note, never an error: root attrs `recipe` (the resolved
recipe: name, seed, env, stages, algos, sections) and `lock.revision`; TASKS train and test (n, p)
with attrs `param`; the stage records, their status as `records.stage_records` folds them (the ETA
of a running one is (updated − started)·(1 − progress)/progress − (now − updated)); the METRICS
tables as `tables.py` reads them; per algorithm what `scores.read_eval` reads.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..core import layout
from ..core.store import Store
from ..recipe import graph
from . import records as stage_status
from .records import StageRecord
from .scores import EvalResult, read_eval
from .tables import TRAIN_STAGES, Table, algo_of, read_tables


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
    snap.stages = stage_status.stage_records(store, recipe, len(snap.tasks.get("train", ())))
    snap.tables = read_tables(store, cache)
    skip = int(((recipe.get("eval") or {}).get("skip", 2)) or 0)
    for algo in layout.children(store, layout.parent(layout.EVALUATION)):
        snap.evals[algo] = read_eval(store, algo, skip, cache)
    return snap


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
    active = stage_status.current_stage(snap.stages)
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
            mine = [k for k in mine if algo_of(snap.tables[k]) == algo] or mine
        if mine:
            return mine[0]
    return keys[-1]


def algos(snap: Snapshot) -> list[str]:
    """The recipe's algos first, then any other found in records, eval results or tables."""
    found = list(snap.recipe.get("algos") or [])
    extra = [s.key.partition("/")[2] for s in snap.stages if graph.split(s.key)[1]]
    extra += list(snap.evals)
    extra += [algo_of(t) for t in snap.tables.values()
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
               and algo_of(snap.tables[k]) == algo}
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
