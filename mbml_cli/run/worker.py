"""How a worker runs one unit of work (`unit.py`): here, in a local worker process or a Ray task.

    python -m mbml_cli.run.worker '{"kind": "run", ...}'      # what a local worker process runs
"""
from __future__ import annotations

import _thread
import json
import os
import signal
import socket
import sys
import threading
import traceback
import warnings
from contextlib import contextmanager, nullcontext

from .unit import Unit, output_to


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that stages record `interrupted` and exit cleanly."""


def terminate(signum, frame):
    """The SIGTERM handler of the CLI and of worker processes."""
    raise Terminated("terminated (SIGTERM)")


def handle_signals() -> None:
    """SIGTERM raises `Terminated` where the process is, as Ctrl-C raises KeyboardInterrupt. Either
    may land inside one of zarr's asynchronous writes and leave its coroutine unawaited: the store's
    guard and resume handle the torn write, and the interpreter's warning about it at exit would only
    bury the user's last line."""
    signal.signal(signal.SIGTERM, terminate)
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)


def execute(unit: dict | Unit, redirect: bool = True) -> int:
    """Run one unit here; its exit code. `redirect`: send this process's output to the unit's log."""
    unit = unit if isinstance(unit, Unit) else Unit(**unit)
    os.makedirs(os.path.dirname(unit.log) or ".", exist_ok=True)
    with output_to(unit.log) if redirect else nullcontext(), watch_driver(unit) as gone:
        return 130 if gone() else _execute(unit)


def driver_alive(unit: Unit) -> bool:
    try:
        os.kill(unit.driver, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@contextmanager
def watch_driver(unit: Unit, every: float = 0.5, grace: float = 30.0):
    """A Ray task runs in a pooled worker process that Ray kills only when it notices the driver gone,
    which can take minutes: while the unit runs, a thread checks its driver's pid (same host only) and,
    once it is gone, interrupts the unit as Ctrl-C would (its stage records `interrupted`), then ends
    the process after `grace` seconds if the unit has not stopped. Local workers die with their parent
    already (`executors._die_with_parent`). Yields `gone()`: whether the driver was found gone."""
    found, done = threading.Event(), threading.Event()
    if not unit.driver or unit.host != socket.gethostname() or unit.driver == os.getpid():
        yield found.is_set
        return
    if not driver_alive(unit):
        found.set()
    previous = None
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL) and \
            threading.current_thread() is threading.main_thread():
        # a process started in the background has SIGINT ignored, and interrupt_main would do nothing
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch():
        while not done.wait(every):
            if not driver_alive(unit):
                found.set()
                _thread.interrupt_main()
                if not done.wait(grace):
                    os._exit(130)
                return
    thread = threading.Thread(target=watch, name="watch-driver", daemon=True)
    thread.start()
    try:
        yield found.is_set
    finally:
        done.set()
        thread.join()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _execute(unit: Unit) -> int:
    from rich.console import Console

    from ..errors import USER_ERRORS
    from ..recipe.inputs import clean
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
    from ..recipe.inputs import clean
    from ..recipe.load import load, resolve
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
    """A local worker process: `python -m mbml_cli.run.worker UNIT_JSON` (its output already goes to the log)."""
    handle_signals()
    sys.exit(execute(json.loads(sys.argv[1]), redirect=False))


if __name__ == "__main__":
    main()
