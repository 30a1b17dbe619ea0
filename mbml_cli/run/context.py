"""What a stage's code holds: the run it works on (`RunContext`) and the registry of stage code
(`@stage(name)` in the modules of `run/pipeline/`). Where a stage stands in the pipeline is the stage
graph's (`recipe/graph.py`); running stages in order is `stages.py`'s."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import envs
from ..core import layout
from ..core.store import Store
from ..recipe import graph
from ..recipe.config import Recipe


@dataclass
class RunContext:
    store: Store
    recipe: Recipe
    resume: bool = False                      # same inputs as an interrupted attempt: continue it
    unit: str | None = None                   # the writer-lock unit held (None: the whole store)
    progress: Callable[[float], None] = lambda f: None

    @property
    def dist(self) -> envs.TaskDistribution:
        return envs.of(self.recipe.env)

    def tasks(self, split: str) -> np.ndarray:
        return layout.read_tasks(self.store, split)


@dataclass
class Stage:
    """A stage's code; its place in the graph is `graph.GRAPH[name]`."""
    name: str
    fn: Callable
    check: Callable | None = None   # check(ctx, **options): raises StageError before anything is written
    shard: Callable | None = None   # shard(ctx, tasks, digest): trains one group of tasks (collect, bcq)


REGISTRY: dict[str, Stage] = {}


def stage(name: str, check: Callable | None = None, shard: Callable | None = None):
    if name not in graph.GRAPH:
        raise ValueError(f"stage {name!r} is not in the stage graph (recipe/graph.py)")

    def register(fn):
        REGISTRY[name] = Stage(name, fn, check, shard)
        return fn
    return register


def registered(name: str) -> Stage:
    """The stage `name`, its modules imported (a worker process may not have run one yet)."""
    _load_stages()
    return REGISTRY[name]


def _load_stages() -> None:
    """Import every module of `mbml_cli.run.pipeline`; each registers its stage(s). Lazy, so that
    `mbml envs` or `mbml info` never import torch."""
    import importlib
    import pkgutil

    from . import pipeline
    for info in pkgutil.iter_modules(pipeline.__path__):
        importlib.import_module(f"{pipeline.__name__}.{info.name}")


RESUMABLE = ("running", "failed", "partial", "interrupted")


def recorded(store: Store, keys: list[str], fn: Callable):
    """fn(); when it stops early, the records `keys` say how: interrupted (Ctrl-C, or SIGTERM, which
    cli.main turns into one) or failed."""
    try:
        return fn()
    except KeyboardInterrupt as e:
        for key in keys:
            store.set_stage(key, status="interrupted", ended=time.time(), message=str(e) or "interrupted")
        raise
    except BaseException as e:
        for key in keys:
            store.set_stage(key, status="failed", ended=time.time(), message=str(e)[:500])
        raise
