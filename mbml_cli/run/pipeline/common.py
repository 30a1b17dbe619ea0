"""Helpers shared by the stages that train batched agents (`collect`, `bcq`, `finetune`).

- shards (`--tasks 0,3,5`, or the recipe's `shards` groups): choosing the tasks still to do, training
  them in turn or as units, and the stage's record (`plan_shards`, `run_shards`, `train_unit`,
  `finish_shard`), as described in `pipeline/collect.py`;
Checkpoints are `checkpoint.py`.
"""
from __future__ import annotations

import difflib
import time

import numpy as np

from ...core import layout
from .. import context
from ...recipe.config import ALGOS
from ...errors import StageError
from ...recipe import graph


# ---- options -------------------------------------------------------------------------------------
def check_algo(ctx, algo: str = "mbml", **_) -> None:
    """A stage's `check`: an unknown --algo is refused before anything is written, with the nearest name."""
    if algo not in ALGOS:
        near = difflib.get_close_matches(algo, ALGOS, n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"one of {', '.join(ALGOS)}"
        raise StageError(f"--algo {algo}: unknown algorithm ({hint})")


# ---- shards ----------------------------------------------------------------------------------------
def select_tasks(tasks: list[int] | None, n_train: int) -> list[int]:
    if tasks is None:
        return list(range(n_train))
    bad = [i for i in tasks if not 0 <= i < n_train]
    if bad:
        raise StageError(f"--tasks: {bad} out of range (this run has training tasks 0..{n_train - 1})")
    return sorted(set(tasks))


def shard_name(tasks: list[int], n_train: int) -> str:
    """'all' for the full set, else the task indices joined by '-' (a group name)."""
    return "all" if list(tasks) == list(range(n_train)) else "-".join(map(str, tasks))


def task_record_done(store, stage: str, task: int, digest: str) -> bool:
    rec = store.stage(layout.stage_key(stage, task))
    return rec.get("status") == "done" and rec.get("hash") == digest


def shard_groups(recipe) -> list[list[int]]:
    """The recipe's shards: the training tasks in `shards` contiguous groups (np.array_split's order)."""
    return [g.tolist() for g in np.array_split(np.arange(recipe.env.n_train), recipe.shards) if len(g)]


def plan_shards(ctx, stage: str, tasks: list[int] | None) -> tuple[list[list[int]], str]:
    """(groups of tasks to train, hash). A fresh start (not ctx.resume) forgets the requested tasks'
    records; a resume keeps the tasks already done. Without --tasks and with `shards` > 1 the groups
    are the recipe's that have a task still to do, each whole (its networks are seeded from its task
    list; its checkpoint resumes it); else the one group of the requested tasks still to do."""
    n_train = ctx.recipe.env.n_train
    requested = select_tasks(tasks, n_train)
    digest = graph.digest(ctx.recipe, stage)
    if not ctx.resume:
        for i in requested:
            ctx.store.delete(layout.STAGE(layout.stage_key(stage, i)))
    todo = [i for i in requested if not task_record_done(ctx.store, stage, i, digest)]
    if tasks is None and ctx.recipe.shards > 1:
        return [g for g in shard_groups(ctx.recipe) if set(g) & set(todo)], digest
    # A kill while the previous attempt was writing its tasks' final weights and records leaves part
    # of its shard done: resume that whole shard from its checkpoint (same seeds, the same weights for
    # the tasks already done) rather than start a new, differently seeded shard of the rest.
    previous = ctx.store.stage(stage).get("shard_tasks") if ctx.resume else None
    if isinstance(previous, list) and todo and set(todo) <= set(previous) <= set(requested):
        todo = sorted(int(i) for i in previous)
    if todo:
        ctx.store.set_stage(stage, shard_tasks=todo)
    return [todo] if todo else [], digest


def run_shards(ctx, stage: str, tasks: list[int] | None, parallel=None):
    """The body of collect and bcq: every group of `plan_shards` trained by the stage's `shard`
    function, in turn here or, given `parallel(stage, groups)` (`mbml run --jobs N`), as units at
    once; then the stage's result (`finish_shard`)."""
    groups, digest = plan_shards(ctx, stage, tasks)
    if parallel is not None and len(groups) > 1:
        parallel(stage, groups)
        return finish_shard(ctx, stage, digest)
    whole, total, before = ctx.progress, sum(map(len, groups)), 0
    for todo in groups:                 # the stage's progress: this group's share of it
        ctx.progress = lambda f, a=before / total, b=len(todo) / total: whole(a + b * f)
        context.registered(stage).shard(ctx, todo, digest)
        before += len(todo)
    ctx.progress = whole
    return finish_shard(ctx, stage, digest)


def train_unit(ctx, stage: str, tasks: list[int]) -> None:
    """One group as a unit of `mbml run --jobs N` (`units.py`): the stage's record is the parent's,
    so the group's progress, and how it stops, show in its tasks' records."""
    digest = graph.digest(ctx.recipe, stage)
    keys = [layout.stage_key(stage, i) for i in tasks]

    def progress(fraction: float) -> None:
        for key in keys:
            ctx.store.set_stage(key, status="running", progress=float(fraction), updated=time.time(), **layout.holder())

    progress(0.0)
    ctx.progress = progress
    context.recorded(ctx.store, keys, lambda: context.registered(stage).shard(ctx, tasks, digest))


def finish_shard(ctx, stage: str, digest: str):
    """None (the stage is done) when every training task is done, else a 'partial' result."""
    n_train = ctx.recipe.env.n_train
    left = [i for i in range(n_train) if not task_record_done(ctx.store, stage, i, digest)]
    if not left:
        return None
    return {"status": "partial", "message": f"tasks still to do: {','.join(map(str, left))}"}
