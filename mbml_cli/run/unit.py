"""Units of work (`worker.py` runs one; `executors.py` says where: a local process or a Ray task).

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

    python -m mbml_cli.run.worker '{"kind": "run", ...}'     # what a local worker process runs (`worker.py`)
"""
from __future__ import annotations

import json
import os
import sys
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
    driver: int = 0             # Ray: the pid of the process that started it, and that process's host, so that
    host: str = ""              # the task stops when its driver dies (`worker.watch_driver`); 0: not watched

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
