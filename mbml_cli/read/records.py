"""Stage status: the one fold of a store's stage records (`layout.STAGE`) that `mbml info`, the
dashboards and the live view of units read.

Records `<stage>` and `<stage>/<algo>` are listed; records named by a number under a stage that
has its own record, `<stage>/<i>`, are per-task records: counted (done/all), not listed
(`finetune/0`, under no record of its own, is listed). The status is the record's own (a `running`
record whose process is gone reads `interrupted`, `layout.record_status`), except that a `done`
record whose inputs changed since it ran reads `stale` (`graph.status` with the store's recipe; a
stored recipe that no longer parses leaves the records' own status). Keys come in the order of the
stage graph's plan for the stored recipe, then the other records by name.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core import layout
from ..core.guard import reading
from ..errors import RecipeError
from ..recipe import graph
from .values import num

SILENT_AFTER = 600.0                             # a running stage silent this long may be dead


@dataclass(eq=False)
class StageRecord:
    key: str                        # "bcq", "distill/mbml"
    status: str = "pending"         # pending | running | done | stale | failed | partial | interrupted
    progress: float = 0.0
    started: float | None = None
    updated: float | None = None
    ended: float | None = None
    message: str = ""
    tasks_done: int = 0             # per-task records `stages/<stage>/<i>` that are done
    tasks_seen: int = 0             # per-task records in all (at least the training tasks, when any)
    hash: str = ""                  # the record's digest (`graph.digest` when it ran)


def parsed(recipe: dict):
    """The stored recipe as a `Recipe`, or None when it no longer parses (a foreign or older store)."""
    from ..recipe.load import from_dict
    try:
        return from_dict(recipe, source="the stored recipe")
    except (RecipeError, ValueError, TypeError, KeyError, AttributeError):
        return None


def planned_keys(recipe: dict) -> list[str]:
    """The stage record keys a run of this (stored) recipe makes, in the stage graph's order."""
    r = parsed(recipe)
    try:
        return graph.plan(r) if r is not None else []
    except ValueError:
        return []


def read_records(store) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """(record key → record, stage → statuses of its per-task records), straight from the store."""
    found: dict[str, dict] = {}
    per_task: dict[str, list[str]] = {}
    where = layout.parent(layout.STAGE)
    if store.exists(where):
        with reading(store.path, where):            # a damaged record: one line naming it, no traceback
            _fold(store.root[where], found, per_task)
    return found, per_task


def _fold(group, found: dict[str, dict], per_task: dict[str, list[str]]) -> None:
    for name in group.group_keys():
        sub = group[name]
        if "status" in sub.attrs:
            found[name] = dict(sub.attrs)
        for child in sub.group_keys():
            if child.isdigit() and "status" in sub.attrs:   # per-task records of that stage
                per_task.setdefault(name, []).append(layout.record_status(dict(sub[child].attrs)))
            else:
                found[layout.stage_key(name, child)] = dict(sub[child].attrs)


def statuses(recipe: dict, records: dict[str, dict]) -> dict[str, str]:
    """Key → status of every planned or recorded key (see the module's docstring), in order."""
    own = {k: layout.record_status(rec) for k, rec in records.items()}
    r = parsed(recipe)
    try:
        by_graph = graph.status(r, records) if r is not None else {}
        planned = graph.plan(r) if r is not None else []
    except Exception:                               # noqa: BLE001 - a graph it cannot judge: the records' own
        by_graph, planned = {}, []
    keys = planned + sorted(k for k in records if k not in planned)
    return {k: by_graph.get(k, "done") if own.get(k) == "done" else own.get(k, "pending") for k in keys}


def stage_records(store, recipe: dict | None = None, n_train: int | None = None) -> list[StageRecord]:
    """The store's stage records with their status, in order (see the module's docstring). `recipe`
    defaults to the stored one; `n_train` (the training tasks, for the per-task count) to the stored tasks."""
    recipe = dict(store.root.attrs.get("recipe", {}) or {}) if recipe is None else recipe
    if n_train is None:
        n_train = len(layout.read_tasks(store, "train")) if store.exists(layout.TASKS("train")) else 0
    found, per_task = read_records(store)
    status = statuses(recipe, found)
    out = []
    for key, st in status.items():
        rec, tasks = found.get(key, {}), per_task.get(key, [])
        out.append(StageRecord(key, st, num(rec.get("progress"), 0.0), num(rec.get("started")),
                               num(rec.get("updated")), num(rec.get("ended")), str(rec.get("message") or ""),
                               sum(t == "done" for t in tasks), max(len(tasks), n_train if tasks else 0),
                               str(rec.get("hash") or "")))
    return out


# ---- a run's (or a unit's) progress ------------------------------------------------------------
@dataclass
class Progress:
    """Where a run (or one unit of it) stands, from its stage records."""
    status: str = "waiting"         # waiting | running | done | failed | interrupted | partial | stopped
    stage: str = ""                 # the stage running now, else the next one to run
    fraction: float = 0.0           # of the keys' work done (weighted)
    started: float | None = None    # the earliest start among the records
    message: str = ""


def progress(store, keys: list[str], weights: dict[str, float] | None = None) -> Progress:
    """Progress over `keys`: each key done counts its weight (projected seconds, else 1), a running or
    interrupted one its weight × its own progress, a stale one (to be run again) nothing."""
    records = read_records(store)[0]                # all of them: freshness reads what a key needs
    status_of = statuses(store.recipe, records)
    total = made = 0.0
    found, starts, following = [], [], ""
    current, latest, message = "", -1.0, ""
    for key in keys:
        rec = records.get(key, {})
        status = status_of.get(key, "pending")
        if key not in records and key.rpartition("/")[2].isdigit():    # a shard unit's per-task record
            rec = store.stage(key)
            status = layout.record_status(rec) if rec else "pending"
        w = (weights or {}).get(key, 1.0)
        total += w
        if status != "stale":
            made += w * (1.0 if status == "done" else min(1.0, max(0.0, num(rec.get("progress"), 0.0))))
        found.append(status)
        if num(rec.get("started")) is not None:
            starts.append(num(rec.get("started")))
        when = num(rec.get("updated"), num(rec.get("started"), 0.0))
        if status == "running" and when >= latest:
            current, latest = key, when
        if status in ("failed", "interrupted") and not message:
            message = f"{key}: {rec.get('message') or status}"
        following = following or ("" if status == "done" else key)
    order = ("running", "failed", "interrupted", "partial")
    status = next((s for s in order if s in found), None)
    if status is None:
        status = "done" if found and all(s == "done" for s in found) else \
            "waiting" if all(s == "pending" for s in found) else "stopped"
    return Progress(status, current or following, made / total if total else 0.0, min(starts) if starts else None,
                    message)


# ---- one record, now ---------------------------------------------------------------------------
def current_stage(records: list[StageRecord]) -> StageRecord | None:
    """The stage running now (the most recently updated, if several), else None."""
    running = [s for s in records if s.status == "running"]
    return max(running, key=lambda s: s.updated or s.started or 0.0) if running else None


def eta(rec: StageRecord, now: float) -> float | None:
    """Seconds left for a running stage, from its start, last update and progress."""
    if rec.status != "running" or not rec.started or rec.progress <= 0 or rec.progress >= 1:
        return None
    updated = rec.updated or now
    left = (updated - rec.started) * (1 - rec.progress) / rec.progress
    return max(0.0, left - max(0.0, now - updated))


def silent(rec: StageRecord, now: float) -> float | None:
    """Seconds since a running stage last reported, when that is suspiciously long."""
    last = rec.updated or rec.started
    if rec.status == "running" and last and now - last > SILENT_AFTER:
        return now - last
    return None
