"""Helpers shared by the stages that train batched agents (`collect`, `bcq`, `finetune`).

- seeds and returns: `derive_seed`, `episode_returns`;
- shards (`--tasks 0,3,5`): choosing the tasks still to do and the stage's record (`plan_shard`,
  `finish_shard`), as described in `pipeline/collect.py`;
(checkpoints are `checkpoint.py`);
- progress: `Reporter`, `format_returns`.
"""
from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import layout, stages
from ..errors import StageError
from ..recipe import section_hash


# ---- seeds and returns ---------------------------------------------------------------------------
def derive_seed(*parts: int) -> int:
    """A 32-bit seed from non-negative integers (recipe seed, purpose, task, episode, ...): independent streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def episode_returns(rew: np.ndarray, ends: np.ndarray) -> list[float]:
    """Returns of the finished episodes of one transition stream (`ends`: terminal | truncated)."""
    out, start = [], 0
    for e in np.flatnonzero(ends):
        out.append(float(rew[start:e + 1].sum()))
        start = e + 1
    return out


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


def plan_shard(ctx, stage: str, tasks: list[int] | None) -> tuple[list[int], list[int], str]:
    """(requested tasks, tasks still to do, hash). A fresh start (not ctx.resume) forgets the
    requested tasks' records; a resume keeps the tasks already done."""
    n_train = ctx.recipe.env.n_train
    requested = select_tasks(tasks, n_train)
    digest = section_hash(ctx.recipe, *stages.REGISTRY[stage].sections)
    if not ctx.resume:
        for i in requested:
            ctx.store.delete(layout.STAGE(layout.stage_key(stage, i)))
    todo = [i for i in requested if not task_record_done(ctx.store, stage, i, digest)]
    return requested, todo, digest


def finish_shard(ctx, stage: str, digest: str):
    """None (the stage is done) when every training task is done, else a 'partial' result."""
    n_train = ctx.recipe.env.n_train
    left = [i for i in range(n_train) if not task_record_done(ctx.store, stage, i, digest)]
    if not left:
        return None
    return {"status": "partial", "message": f"tasks still to do: {','.join(map(str, left))}"}


# ---- progress --------------------------------------------------------------------------------------
class Reporter:
    """A rich progress bar on a terminal; otherwise one plain line per `report` call."""

    def __init__(self, title: str, total: int, done: int = 0):
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.title, self.total = title, total
        if self.live:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                console=self.console, refresh_per_second=4)
            self.task = self.bar.add_task(title, total=total, completed=done, info="")
            self.bar.start()

    def update(self, done: int, info: str | None = None, line: bool = False) -> None:
        if self.live:
            fields = {"info": info} if info is not None else {}
            self.bar.update(self.task, completed=done, **fields)
        elif line and info is not None:
            self.console.print(f"{self.title} {done}/{self.total} {info}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.live:
            self.bar.stop()


def format_returns(tasks: list[int], returns) -> str:
    vals = [f"{i}:{r:.0f}" if np.isfinite(r) else f"{i}:–" for i, r in zip(tasks, returns)]
    if len(vals) > 12:
        finite = [r for r in returns if np.isfinite(r)]
        return f"return mean {np.mean(finite):.1f} min {np.min(finite):.1f} max {np.max(finite):.1f}" if finite else ""
    return "R " + " ".join(vals)
