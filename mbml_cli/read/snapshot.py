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

`Reader.steps()` reads the cheap head first (attrs and the task arrays) and then the heavy parts
(`HEAVY`), yielding the snapshot after each, so a view can show the run before its tables are read.
A part whose content is not what mbml writes (wrong types or shapes) becomes one plain line in
`Snapshot.problems`, is left out, and is not read again until `Reader.forget()`.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from ..core import layout
from ..core.store import Store
from ..recipe import graph
from . import records as stage_status
from .records import StageRecord
from .scores import EvalResult, read_eval
from .tables import TRAIN_STAGES, Table, algo_of, read_tables
from .values import num


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
    loading: tuple[str, ...] = ()           # heavy parts not read yet (HEAVY)
    problems: list[str] = field(default_factory=list)      # parts left out, one plain line each


HEAVY = ("tables", "evals")                 # read after the head, in this order


class Malformed(ValueError):
    """A part of the store holds something mbml does not write; the message says what, plainly."""


# what the views read of the recipe, and the type each must have
RECIPE_TYPES = {"name": (str, "a name"), "seed": (int, "a whole number"), "env": (dict, "a mapping"),
                "algos": (list, "a list of names"), "stages": (list, "a list of stage names"),
                "eval": (dict, "a mapping"), "collect": (dict, "a mapping"), "bcq": (dict, "a mapping"),
                "reward": (dict, "a mapping"), "distill": (dict, "a mapping")}
RECORD_NUMBERS = ("progress", "started", "updated", "ended")


def kind(value) -> str:
    """What a value is, in words."""
    if isinstance(value, np.ndarray):
        return "text" if value.dtype.kind in "USO" else f"an array of shape {value.shape}"
    return {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list",
            dict: "a mapping", type(None): "nothing"}.get(type(value), type(value).__name__)


# ---- reading -----------------------------------------------------------------------------------
class Reader:
    """Reads snapshots of one store; a row table is re-read only when its row count `n` changed.

    On a failed read (store deleted, not an mbml store, metadata caught mid-write) the last good
    data is returned with `error` set, so the panels keep what they showed and say why. Parts found
    malformed are remembered in `broken` (part → line) and skipped until `forget()`.
    """

    def __init__(self, path: str):
        self.path = str(path)
        self._tables: dict[str, Table] = {}
        self._last: Snapshot | None = None
        self.broken: dict[str, str] = {}

    def forget(self) -> None:
        """Read the malformed parts again on the next read (a manual refresh)."""
        self.broken.clear()

    def read(self, now: float | None = None) -> Snapshot:
        for snap in self.steps(now):
            pass
        return snap

    def steps(self, now: float | None = None) -> Iterator[Snapshot]:
        """The snapshot after the head, then after each heavy part; the last one is complete."""
        now = time.time() if now is None else now
        try:
            store = Store.open(self.path)
            snap = read_head(store, now, self.broken)
            for part in HEAVY:
                yield replace(snap, tables=dict(snap.tables), evals=dict(snap.evals),    # a copy: the
                              problems=list(snap.problems))                          # reading goes on
                snap.loading = snap.loading[1:]
                read_part(store, snap, part, self._tables, self.broken)
        except Exception as e:                      # noqa: BLE001 - a dashboard never crashes on a read
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            message = message.removeprefix(f"{self.path}: ")       # the header shows the path
            last = self._last or Snapshot(self.path)
            yield Snapshot(**{**last.__dict__, "error": message, "read_at": now, "loading": ()})
            return
        self._last = snap
        yield snap


def read_snapshot(store: Store, cache: dict[str, Table] | None = None, now: float | None = None) -> Snapshot:
    """Everything the dashboard shows, from a freshly opened store. `cache` (key → Table) is
    updated in place and saves re-reading tables whose `n` did not move."""
    snap = read_head(store, time.time() if now is None else now)
    for part in HEAVY:
        snap.loading = snap.loading[1:]
        read_part(store, snap, part, {} if cache is None else cache)
    return snap


def read_head(store: Store, now: float, broken: dict[str, str] | None = None) -> Snapshot:
    """The cheap part: the recipe, the tasks and the stage records (attrs and small arrays)."""
    broken = {} if broken is None else broken
    root = store.root
    recipe, problems = checked_recipe(root.attrs.get("recipe", {}))
    lock = root.attrs.get("lock", {})
    snap = Snapshot(store.path, read_at=now, recipe=recipe, loading=HEAVY, problems=problems,
                    revision=str(lock.get("revision", "")) if isinstance(lock, dict) else "")
    for split in ("train", "test"):
        if store.exists(layout.TASKS(split)):
            arr = _guarded(f"tasks/{split}", broken, snap, lambda: checked_tasks(root[layout.TASKS(split)]))
            if arr is not None:
                snap.tasks[split] = np.asarray(arr[...])
                snap.task_param = snap.task_param or str(arr.attrs.get("param", ""))
    snap.problems += record_problems(store)         # such records still show, their odd fields as unknown
    snap.stages = _guarded("stages", broken, snap, lambda: stage_status.stage_records(
        store, recipe, len(snap.tasks.get("train", ())))) or []
    return snap


def read_part(store: Store, snap: Snapshot, part: str, cache: dict[str, Table],
              broken: dict[str, str] | None = None) -> None:
    """One heavy part into `snap`: "tables" (every metrics table) or "evals" (per algorithm)."""
    broken = {} if broken is None else broken
    if part == "tables":
        snap.tables = read_tables(store, cache, lambda key, read: _guarded(
            f"{layout.parent(layout.METRICS)}/{key}", broken, snap, lambda: checked_table(read())))
    elif part == "evals":
        skip = int(num((snap.recipe.get("eval") or {}).get("skip", 2), 2))
        for algo in layout.children(store, layout.parent(layout.EVALUATION)):
            res = _guarded(f"eval/{algo}", broken, snap, lambda: read_eval(store, algo, skip, cache))
            if res is not None:
                snap.evals[algo] = res


def _guarded(part: str, broken: dict[str, str], snap: Snapshot, read):
    """`read()`, or None with one plain line in `snap.problems` when the part's content is malformed
    (then remembered in `broken` and not read again). Other failures (I/O, metadata caught
    mid-write) propagate: the whole read is retried."""
    if part not in broken:
        try:
            return read()
        except Malformed as e:
            broken[part] = f"{part}: {e}; left out"
        except json.JSONDecodeError:
            raise
        except (TypeError, ValueError, IndexError, KeyError, AttributeError):
            broken[part] = f"{part}: holds values of a type or shape mbml does not write; left out"
    snap.problems.append(broken[part])
    return None


# ---- checks: what the views rely on ----------------------------------------------------------------
def checked_recipe(recipe) -> tuple[dict, list[str]]:
    """The recipe with the entries of a wrong type left out, and a line per entry left out."""
    if recipe is None:
        return {}, []
    if not isinstance(recipe, dict):
        return {}, [f"recipe: the store's recipe should be a mapping, found {kind(recipe)}; left out"]
    out, problems = dict(recipe), []
    for key, (typ, words) in RECIPE_TYPES.items():
        value = recipe.get(key)
        if value is None:
            continue
        if not isinstance(value, typ) or isinstance(value, bool) or \
                (typ is list and not all(isinstance(v, str) for v in value)):
            problems.append(f"recipe: {key} should be {words}, found {kind(value)}; left out")
            del out[key]
    return out, problems


def checked_tasks(arr):
    """The task parameters' array, if it holds numbers, one row per task."""
    if arr.dtype.kind not in "biuf":
        raise Malformed(f"expected numbers (a row of parameters per task), found {kind(np.zeros(0, arr.dtype))}")
    if arr.ndim not in (1, 2):
        raise Malformed(f"expected a row of parameters per task, found an array of shape {arr.shape}")
    return arr


def record_problems(store) -> list[str]:
    """A line per stage record with fields of the wrong type."""
    out = []
    for key, rec in stage_status.read_records(store)[0].items():
        wrong = [] if isinstance(rec.get("status"), str) else [f"status should be a word, found {kind(rec.get('status'))}"]
        wrong += [f"{name} should be a number, found {kind(rec[name])}" for name in RECORD_NUMBERS
                  if rec.get(name) is not None and num(rec[name]) is None]
        if wrong:
            out.append(f"stage record {key}: " + "; ".join(wrong) + "; shown as unknown")
    return out


def checked_table(table: Table) -> Table:
    """The table, if each column holds a value per row."""
    for name, col in table.columns.items():
        if col.ndim != 1 or len(col) != table.n:
            raise Malformed(f"column {name} should hold one value per row ({table.n}), "
                            f"found an array of shape {col.shape}")
    return table


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
            tuple((k, v.shape) for k, v in snap.tasks.items()), snap.loading, tuple(snap.problems))


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
