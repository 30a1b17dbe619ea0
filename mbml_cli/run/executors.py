"""Where units of work (`unit.py`) run: local worker processes, or Ray tasks.

`run_units(units, executor, jobs, tick)` keeps up to `jobs` units running, calls `tick(running,
finished)` about twice a second (the live view), and returns each unit's exit code. A unit that
fails does not stop the others.

- `local`: one process per unit (`python -m mbml_cli.run.worker`), its output in the unit's log, its
  torch/OpenMP threads the unit's share of the cores. A worker dies with the process that started
  it (Linux `PR_SET_PDEATHSIG`), so a killed sweep leaves no orphan writing to a store; the next
  run resumes the interrupted stores.
- `ray`: each unit is a Ray task declaring its CPUs (its threads) and GPUs, started on a local Ray
  instance or, with `address`, on an existing cluster whose workers see the same store paths (a shared
  filesystem) or URLs. Ray is an optional extra (`pip install 'mbml[ray]'`), imported only here.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace
from typing import Callable

from ..errors import StageError
from .unit import Unit

EXECUTORS = ("local", "ray")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: be killed when the parent dies (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class LocalExecutor:
    def start(self, unit: Unit):
        env = {**os.environ, "OMP_NUM_THREADS": str(unit.threads), "MKL_NUM_THREADS": str(unit.threads)}
        os.makedirs(os.path.dirname(unit.log), exist_ok=True)
        with open(unit.log, "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "mbml_cli.run.worker", unit.to_json()], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def result(self, handle) -> int | None:
        return handle.poll()

    def stop(self, handles) -> None:
        """SIGTERM (each records `interrupted`), then SIGKILL what is still there after 30 s."""
        for p in handles:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in handles:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        pass


class RayExecutor:
    def __init__(self, address: str | None = None):
        import ray
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            if not address:             # Ray nices its workers (15); on a local instance they are the work itself
                os.environ.setdefault("RAY_worker_niceness", "0")
            options = {"address": address} if address else {"num_cpus": os.cpu_count()}
            try:
                ray.init(**options, include_dashboard=False, log_to_driver=False, logging_level="warning")
            except ConnectionError as e:
                raise StageError(f"--address {address}: cannot reach a Ray cluster ({e})") from None
        from .worker import execute
        self.task = ray.remote(execute)

    def start(self, unit: Unit):
        watched = replace(unit, driver=os.getpid(), host=socket.gethostname())     # stops if this process dies
        return self.task.options(num_cpus=unit.threads, num_gpus=unit.gpus, max_retries=0).remote(asdict(watched))

    def result(self, handle) -> int | None:
        done, _ = self.ray.wait([handle], timeout=0)
        if not done:
            return None
        try:
            return int(self.ray.get(handle))
        except Exception:                      # noqa: BLE001 - a worker that died: that unit failed
            return 1

    def stop(self, handles) -> None:
        for ref in handles:
            self.ray.cancel(ref)               # KeyboardInterrupt in the task: its stage records `interrupted`

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def share(recipe_threads: int, jobs: int) -> int:
    """A unit's CPU threads: the recipe's, else its share of this machine's cores."""
    return recipe_threads or max(1, (os.cpu_count() or 1) // max(1, jobs))


def check(executor: str, address: str | None = None) -> None:
    """Bad options refused before anything runs."""
    if executor not in EXECUTORS:
        raise StageError(f"--executor {executor}: unknown (local or ray)")
    if address and executor != "ray":
        raise StageError("--address: only with --executor ray")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise StageError("--executor ray: Ray is not installed (pip install 'mbml[ray]')")


def make(executor: str, address: str | None = None):
    check(executor, address)
    return RayExecutor(address) if executor == "ray" else LocalExecutor()


def run_units(units: list[Unit], executor, jobs: int, tick: Callable[[dict, dict], None] = lambda r, f: None,
              every: float = 0.5) -> dict[str, int]:
    """Run every unit, at most `jobs` at once; label → exit code."""
    waiting, running, finished = list(units), {}, {}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                unit = waiting.pop(0)
                running[unit.label] = (unit, executor.start(unit))
            for label, (unit, handle) in list(running.items()):
                code = executor.result(handle)
                if code is not None:
                    finished[label] = code
                    del running[label]
            tick({label: unit for label, (unit, _) in running.items()}, finished)
            if waiting or running:
                time.sleep(every)
    except BaseException:
        executor.stop([handle for _, handle in running.values()])
        raise
    return finished
