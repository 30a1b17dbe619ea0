"""`mbml run --jobs N`: the independent parts of one run in parallel.

- shards: with the recipe's `shards` > 1, collect and then bcq train their groups of tasks as units
  (`unit.py`, kind `shard`), each writing only its tasks' groups and records; the stage's record is
  this process's (`pipeline/common.py`);
- algorithms: each algorithm's distill → eval → probe reads what the shared stages wrote and writes
  only its own groups: a unit (kind `algo`) per algorithm.
Units run in worker processes or Ray tasks (`executors.py`), each holding only its unit's writer lock
while this process holds the store's shared (`writer.py`). Every unit runs exactly what a sequential
run would, with the same seeds: the store ends the same. Their output goes to `<store>.logs/<unit>.log`;
a live view shows a row per unit.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..core import layout, writer
from ..errors import StageError
from .executors import make, run_units, share
from .live import LiveView, Tracked
from ..core.store import _is_url
from .unit import Unit


def logs_dir(ctx) -> Path:
    """Where the units of a run write their output: beside a local store, else under runs/."""
    path = ctx.store.path
    if _is_url(path):
        return Path("runs") / f"{ctx.recipe.name}-s{ctx.recipe.seed}.logs"
    return Path(path).with_suffix(".logs")


class Units:
    """The units of one `mbml run --jobs N`, `jobs` at a time on one executor (started with the first
    units, ended by `close()`)."""

    def __init__(self, ctx, jobs: int, executor: str, address: str | None, console,
                 estimates: dict[str, float] | None = None):
        self.ctx, self.jobs, self.executor, self.address, self.console = ctx, jobs, executor, address, console
        self.estimates = estimates or {}        # record key → projected seconds (pre-flight), else {}
        self.runner = None

    def unit(self, kind: str, label: str, log: str, of: int, **fields) -> Unit:
        """A unit writing its output to `<logs>/<log>`, with its share of the cores among `of` units."""
        path = self.ctx.store.path
        return Unit(kind, label, path if _is_url(path) else os.path.abspath(path),
                    str((logs_dir(self.ctx) / log).resolve()), threads=share(self.ctx.recipe.threads, min(self.jobs, of)),
                    **fields)

    def run(self, units: list[Unit], what: str) -> dict[str, int]:
        """Every unit with a live row each, this process holding the store's lock shared; label → exit code."""
        self.console.print(f"{len(units)} {what}, {min(self.jobs, len(units))} at a time ({self.executor}); "
                           f"their output in {logs_dir(self.ctx)}/", highlight=False)
        self.runner = self.runner or make(self.executor, self.address)
        tracked = [Tracked(u.label, u.store, u.keys) for u in units]
        with writer.shared(self.ctx.store.path), LiveView(f"{self.ctx.recipe.name}: {what}", tracked, self.console,
                                                          weights=self.estimates) as view:
            return run_units(units, self.runner, self.jobs, view.tick)

    def refuse_failed(self, units: list[Unit], codes: dict[str, int]) -> None:
        failed = [u for u in units if codes.get(u.label) != 0]
        if failed:
            raise StageError(f"{self.ctx.store.path}: " + "; ".join(
                f"{u.label} failed (exit {codes.get(u.label)}, log {u.log})" for u in failed))

    def shards(self, stage: str, groups: list[list[int]]) -> None:
        """The groups of tasks of collect or bcq (`pipeline/common.run_shards`), each a unit."""
        from .pipeline.common import shard_name
        units = []
        for tasks in groups:
            name = shard_name(tasks, self.ctx.recipe.env.n_train)
            units.append(self.unit("shard", f"{stage}/{name}", f"{stage}-{name}.log", len(groups), stage=stage,
                                   tasks=tasks, keys=[layout.stage_key(stage, i) for i in tasks],
                                   resume=self.ctx.resume))
        self.refuse_failed(units, self.run(units, f"{stage} shards"))

    def algos(self, steps, pending: list[str]) -> None:
        """Each algorithm's steps (`leading_block`) a unit; those finished with these inputs skipped.
        With the pre-flight's estimates the longest start first, so that the `jobs` slots finish
        together (Contextual BCQ's distillation alone can outlast the others), and a unit's row weighs
        its distill, eval and probe by their projected seconds."""
        chains: dict[str, list[str]] = {}
        for _, key, options in steps:
            chains.setdefault(options["algo"], []).append(key)
        units = []
        for algo, keys in chains.items():
            if not set(keys) & set(pending):
                for key in keys:
                    self.console.print(f"[green]✓[/green] {key}: skipped (finished, inputs unchanged)")
                continue
            units.append(self.unit("algo", algo, f"{algo}.log", len(chains), keys=keys))
        if not units:
            return
        units.sort(key=lambda u: -sum(self.estimates.get(key, 0.0) for key in u.keys))   # stable: ties keep the recipe's order
        codes = self.run(units, "algorithms")
        for u in units:
            for key in u.keys:
                if codes.get(u.label) == 0:
                    self.console.print(f"[green]✓[/green] {key}: done")
        self.refuse_failed(units, codes)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
