"""`mbml run --jobs N`: the algorithms of one run in parallel.

Each algorithm's distill → eval → probe reads what the shared stages wrote and writes only its own
groups, so the algorithms are independent units (`units.py`, kind `algo`), run in worker processes
or Ray tasks (`executors.py`), each holding only its algorithm's writer lock while this process
holds the store's shared (`writer.py`). Every unit runs exactly the stages a sequential run would, with
the same seeds: the store ends the same. Their output goes to `<store>.logs/<algo>.log`; a live view
shows a row per algorithm.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import writer
from .config import PER_ALGO
from .errors import StageError
from .executors import make, run_units, share
from .live import LiveView, Tracked
from .store import _is_url
from .units import Unit


def leading_block(steps: list[tuple[str, str, dict]]) -> list[tuple[str, str, dict]]:
    """The per-algorithm steps at the head of `steps` (distill, eval, probe of every algo)."""
    block = []
    for step in steps:
        if step[0] not in PER_ALGO or "algo" not in step[2]:
            break
        block.append(step)
    return block


def logs_dir(ctx) -> Path:
    """Where the units of a run write their output: beside a local store, else under runs/."""
    path = ctx.store.path
    if _is_url(path):
        return Path("runs") / f"{ctx.recipe.name}-s{ctx.recipe.seed}.logs"
    return Path(path).with_suffix(".logs")


def run_algos(ctx, steps, jobs: int, executor: str, address: str | None, console, pending: list[str]) -> None:
    chains: dict[str, list[str]] = {}
    for _, key, options in steps:
        chains.setdefault(options["algo"], []).append(key)
    units = []
    for algo, keys in chains.items():
        if not set(keys) & set(pending):
            for key in keys:
                console.print(f"[green]✓[/green] {key}: skipped (finished, inputs unchanged)")
            continue
        log = logs_dir(ctx) / f"{algo}.log"
        units.append(Unit("algo", algo, os.path.abspath(ctx.store.path) if not _is_url(ctx.store.path) else ctx.store.path,
                          str(log.resolve()), keys=keys, threads=share(ctx.recipe.threads, min(jobs, len(chains)))))
    if not units:
        return
    console.print(f"{len(units)} algorithms, {min(jobs, len(units))} at a time ({executor}); "
                  f"their output in {logs_dir(ctx)}/", highlight=False)
    tracked = [Tracked(u.label, u.store, u.keys) for u in units]
    runner = make(executor, address)
    try:
        with writer.shared(ctx.store.path), LiveView(f"{ctx.recipe.name}: algorithms", tracked, console) as view:
            codes = run_units(units, runner, jobs, view.tick)
    finally:
        runner.close()
    for u in units:
        for key in u.keys:
            if codes.get(u.label) == 0:
                console.print(f"[green]✓[/green] {key}: done")
    failed = [u for u in units if codes.get(u.label) != 0]
    if failed:
        raise StageError(f"{ctx.store.path}: " + "; ".join(f"{u.label} failed (exit {codes.get(u.label)}, log {u.log})"
                                                            for u in failed))
