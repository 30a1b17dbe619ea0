"""Units of work, and how a worker runs one (`executors.py` says where: a local process or a Ray task).

A unit is
- `run`: a whole run of a sweep — `mbml run RUN.yaml --store STORE` without the pre-flight (the
  sweep made one for all its runs); it takes the store's whole writer lock;
- `algo`: inside one run, one algorithm's distill → eval → probe (`mbml run --jobs N`); it takes
  only that algorithm's unit lock (`writer.py`), so that the algorithms of a run train at once;
- `shard`: inside one run, one group of the recipe's `shards` of collect or bcq (`mbml run --jobs
  N`); it takes only that group's unit lock (`collect/0-1-2`) and writes only its tasks' groups and
  records, while the stage's own record is its parent's (`pipeline/common.py`).

A unit's output (the same lines its command prints) goes to its log file; its result is the exit
code that command would give: 0 done, 1 failed, 2 bad input, 130 interrupted.

    python -m mbml_cli.units '{"kind": "run", ...}'      # what a local worker process runs
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field


@dataclass
class Unit:
    kind: str                   # run | algo | shard
    label: str                  # its row in the live view: the run's name, the algorithm, or stage/shard
    store: str                  # absolute store path (or URL)
    log: str                    # absolute path of its output
    recipe: str = ""            # run: the run's recipe file (resolved recipe + lock)
    keys: list = field(default_factory=list)   # algo: the stage record keys to run, in order; shard: its tasks' records
    stage: str = ""             # shard: collect or bcq
    tasks: list = field(default_factory=list)  # shard: its training tasks
    resume: bool = False        # shard: the stage resumes (else its group starts afresh)
    threads: int = 1            # its share of the CPU cores
    gpus: float = 0.0           # GPUs it asks for (Ray)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@contextmanager
def output_to(path: str):
    """This process's stdout and stderr (file descriptors too) appended to `path`, then restored
    (a Ray worker process runs many tasks)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, old in zip((1, 2), saved):
            os.dup2(old, fd)
            os.close(old)


def execute(unit: dict | Unit, redirect: bool = True) -> int:
    """Run one unit here; its exit code. `redirect`: send this process's output to the unit's log."""
    unit = unit if isinstance(unit, Unit) else Unit(**unit)
    os.makedirs(os.path.dirname(unit.log) or ".", exist_ok=True)
    with output_to(unit.log) if redirect else nullcontext():
        return _execute(unit)


def _execute(unit: Unit) -> int:
    from rich.console import Console

    from .errors import USER_ERRORS
    from .inputs import clean
    console = Console(width=120)
    try:
        {"run": _run, "algo": _algo, "shard": _shard}[unit.kind](unit, console)
        return 0
    except USER_ERRORS as e:
        console.print(f"error: {clean(e)}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as e:
        console.print(f"{e or 'interrupted'}: run the same command again to resume", markup=False, highlight=False)
        return 130
    except Exception:                           # noqa: BLE001 - a worker reports, the others go on
        console.print(traceback.format_exc(), markup=False, highlight=False)
        return 1


def _run(unit: Unit, console) -> None:
    from .inputs import clean
    from .recipe import load, resolve
    from .stages import create_run, release, run_pipeline
    recipe, _ = load(unit.recipe)
    recipe = resolve(recipe)
    recipe.store = unit.store
    ctx = create_run(recipe)
    try:
        console.print(f"run {clean(recipe.name)} → {unit.store}", markup=False, highlight=False)
        run_pipeline(ctx, console)
    finally:
        release(ctx)


def _algo(unit: Unit, console) -> None:
    from .stages import open_run, plan, release, run_stage
    ctx = open_run(unit.store, unit=f"algo/{unit.label}")
    try:
        steps = {key: (name, options) for name, key, options in plan(ctx.recipe)}
        for key in unit.keys:
            name, options = steps[key]
            ran = run_stage(ctx, name, key=key, **options)
            console.print(f"✓ {key}: {'done' if ran else 'skipped (finished, inputs unchanged)'}", markup=False,
                          highlight=False)
    finally:
        release(ctx)


def _shard(unit: Unit, console) -> None:
    from .pipeline.common import train_unit
    from .stages import open_run, release
    ctx = open_run(unit.store, unit=unit.label)
    try:
        ctx.resume = unit.resume
        train_unit(ctx, unit.stage, unit.tasks)
    finally:
        release(ctx)
    console.print(f"✓ {unit.label}: done", markup=False, highlight=False)


def main() -> None:
    """A local worker process: `python -m mbml_cli.units UNIT_JSON` (its output already goes to the log)."""
    import signal

    from .cli import _terminate
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(execute(json.loads(sys.argv[1]), redirect=False))


if __name__ == "__main__":
    main()
