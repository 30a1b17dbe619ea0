"""The one training loop of collect, bcq, distill and finetune: `run_loop(ctx, job, schedule)`.

The loop owns the step counter, the loss accumulators (summed on the device; one host copy per log
row), the log rows (buffered, written every `WRITE_EVERY` seconds, at checkpoints and at the end),
evaluations, divergence checks, progress, and resumable checkpoints (`core/checkpoint.py`: the
state of `job.state()`, the accumulators, and the row count of every table in `job.tables`, to
which a resume rolls the tables back). A `Job` supplies the stage's parts as hooks: what one step
does, what an evaluation does, its log rows, its own checkpoint extras, and what it writes at the
end. Evaluations must draw from their own generators: the training draws stay in step order.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..core import checkpoint
from . import divergence
from .progress import Reporter

WRITE_EVERY = 10.0      # seconds between writes of the buffered log rows
FORMAT = 1              # checkpoint meta `loop`: a checkpoint of another layout is not resumed


class Trainer(Protocol):
    """What an algorithm exposes (algos/): its networks, their optimisers, and one training step
    drawing from `gen` that returns its losses as tensors on the device."""

    def modules(self) -> dict[str, torch.nn.Module]: ...

    def optimisers(self) -> dict[str, torch.optim.Optimizer]: ...

    def step(self, gen: torch.Generator) -> dict[str, torch.Tensor]: ...


@dataclass
class Schedule:
    total: int                      # steps in all
    log_every: int                  # a log row every this many steps, and after the last
    checkpoint_every: int           # a checkpoint every this many steps (none after the last)
    eval_every: int = 0             # an evaluation every this many steps, and after the last; 0: never
    first: int = 0                  # log rows and evaluations from this step on, counted from it
    checkpoint_at: tuple = ()       # further steps with a checkpoint
    keep_checkpoint: bool = False   # also checkpoint after the last step and keep it when done
    unit: str = "step"

    def due(self, t: int, every: int) -> bool:
        return every > 0 and t >= self.first and ((t - self.first) % every == 0 or t == self.total)

    def checkpoint_due(self, t: int) -> bool:
        if t == self.total:
            return self.keep_checkpoint
        return t % self.checkpoint_every == 0 or t in self.checkpoint_at


class Job:
    """A stage's part of the loop. Set `title` (progress line), `stage` (divergence messages),
    `labels` (names of the accumulators' leading axis, or None), `checkpoint` (its store path),
    `tables` (every table it appends to), `expected` (meta a checkpoint must match to resume) and
    `size` (the whole run in words, e.g. "3 tasks × 200 steps", for the closing line)."""
    title: str
    size: str = ""
    stage: str
    labels: list | None = None
    checkpoint: str
    tables: list[str]
    expected: dict = {}
    tasks: list | None = None           # the tasks of the per-task (2-D) columns of its tables

    def state(self) -> tuple[dict, dict, dict]:
        """(modules, optimisers, generators) of the checkpoint."""
        raise NotImplementedError

    def start(self) -> None:
        """A fresh start: remove what an earlier attempt wrote besides the tables and the checkpoint."""

    def restore(self, tensors: dict, meta: dict) -> None:
        """A resume: the job's own part of the checkpoint (see `extras`)."""

    def extras(self) -> tuple[dict, dict]:
        """(tensors, meta) of the job's own in the next checkpoint; write pending data first."""
        return {}, {}

    def step(self, t: int) -> list[dict[str, torch.Tensor]]:
        """Step t (0-based): the losses of each update it made (none: no update this step)."""
        raise NotImplementedError

    def check(self, t: int) -> None:
        """Further divergence checks (e.g. data about to be stored) at log rows and checkpoints."""

    def evaluate(self, t: int, report: Reporter):
        """An evaluation after step t; its result goes to `log`."""

    def log(self, t: int, means: dict[str, torch.Tensor], result, rate: float) -> tuple[dict, str | None]:
        """({table: row} to append, a progress line or None) after step t. `means`: each loss's mean
        over the updates since the last row (empty when there were none), `result`: the evaluation
        of this step (None when none), `rate`: steps per second since the last row."""
        raise NotImplementedError

    def finish(self, t: int, report: Reporter) -> None:
        """After the last step: the stage's final files."""


def add(acc: dict[str, torch.Tensor], losses: dict[str, torch.Tensor]) -> None:
    """Sum `losses` into `acc` in float64 on the device (no host copy)."""
    for k, v in losses.items():
        v = v.double()
        acc[k] = acc[k].to(v.device) + v if k in acc else v


class Rows:
    """Log rows not yet in the store, per table; written at once (one write per column)."""

    def __init__(self, store, tasks: list | None = None):
        self.store, self.tasks, self.pending, self.written = store, tasks, {}, time.perf_counter()

    def add(self, rows: dict[str, dict]) -> None:
        for table, row in rows.items():
            self.pending.setdefault(table, []).append(row)

    def write(self) -> None:
        for table, rows in self.pending.items():
            self.store.append_rows(table, {k: np.asarray([r[k] for r in rows], np.float64) for k in rows[0]}, self.tasks)
        self.pending, self.written = {}, time.perf_counter()


def run_loop(ctx, job: Job, schedule: Schedule) -> None:
    """Train `job` to `schedule.total` steps, resuming from its checkpoint when there is one."""
    store, total = ctx.store, schedule.total
    acc: dict[str, torch.Tensor] = {}
    found = checkpoint.read(ctx, job.checkpoint, loop=FORMAT, **job.expected)
    if found is None:
        for path in (*job.tables, job.checkpoint):
            store.delete(path)
        job.start()
        t = n = 0
    else:
        tensors, meta = found
        checkpoint.load_training_state(tensors, *job.state(), {})
        acc = checkpoint.accumulators(tensors)
        t, n = int(meta["step"]), int(meta["acc_n"])
        for table, rows in meta["rows"].items():
            store.set_rows(table, rows)
        job.restore(tensors, meta)
    start, began = t, time.perf_counter()
    report = Reporter(job.title, total, t, unit=schedule.unit)
    if found is not None:
        report.console.print(f"{job.title}: resuming at {t}/{total} {schedule.unit}s", highlight=False)
    rows, last = Rows(store, job.tasks), (began, t)

    def check() -> None:
        divergence.check(job.stage, t, labels=job.labels, **{k: v / max(n, 1) for k, v in acc.items()})
        job.check(t)

    def write() -> None:
        rows.write()
        ctx.progress(t / total)

    def save() -> None:
        check()
        write()
        extra, meta = job.extras()
        tensors = {**checkpoint.training_state(*job.state(), acc), **extra}
        meta = {**meta, **job.expected, "loop": FORMAT, "step": t, "acc_n": n,
                "rows": {table: store.rows(table) for table in job.tables}}
        checkpoint.save(store, job.checkpoint, tensors, meta)

    try:
        while t < total:
            for losses in job.step(t):
                add(acc, losses)
                n += 1
            t += 1
            logs, evaluates = schedule.due(t, schedule.log_every), schedule.due(t, schedule.eval_every)
            if logs or evaluates:
                check()
                result = job.evaluate(t, report) if evaluates else None
                now = time.perf_counter()
                rate, last = (t - last[1]) / max(now - last[0], 1e-9), (now, t)
                new, line = job.log(t, {k: v / n for k, v in acc.items()} if n else {}, result, rate)
                rows.add(new)
                acc, n = {}, 0
                if t == total or now - rows.written > WRITE_EVERY:
                    write()
                report.update(t, line, line=line is not None)
            else:
                report.update(t)
            if schedule.checkpoint_due(t):
                save()
        write()
    except KeyboardInterrupt:
        ctx.progress(t / total)             # the record says where the bar was (it resumes at the checkpoint)
        raise
    finally:
        report.close()
    job.finish(t, report)
    if not schedule.keep_checkpoint:
        store.delete(job.checkpoint)
    report.console.print(f"{job.title}: {job.size or f'{total} {schedule.unit}s'} ({t - start} this run) in "
                         f"{time.perf_counter() - began:.1f}s", highlight=False)
