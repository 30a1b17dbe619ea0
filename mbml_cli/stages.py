"""What each stage reads and writes, its record in the store, resume, and `mbml run`'s order.

A stage is a function `fn(ctx: RunContext, **options)` registered with `@stage(name, sections)`
in a module of `mbml_cli/pipeline/` (one module per stage, besides the shared `common` and `online`).
`run_stage` records status, the hash of the recipe sections it used, start/end time and progress;
a finished stage whose hash still matches is skipped, and a stage re-entered with the same hash is
told to resume (`ctx.resume`), a changed hash starts it afresh.
A stage may also register `check(ctx, **options)`: it runs before any record is written, so bad
options fail with a one-line error and leave the store as it was.
A stage run on a shard of tasks returns `{"status": "partial", "message": ...}` while other tasks
remain; that status is recorded instead of "done" (and, like "running"/"failed", resumes).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import envs, lock
from .config import Recipe
from .errors import StageError
from .recipe import from_dict, load, merge, parse_set, resolve, section_hash, to_dict, build, validate
from .store import Store


@dataclass
class RunContext:
    store: Store
    recipe: Recipe
    resume: bool = False                      # same inputs as an interrupted attempt: continue it
    progress: Callable[[float], None] = lambda f: None

    @property
    def dist(self) -> envs.TaskDistribution:
        return envs.get(self.recipe.env.name)

    def tasks(self, split: str) -> np.ndarray:
        return self.store.read_array(f"tasks/{split}")


@dataclass
class Stage:
    name: str
    fn: Callable
    sections: tuple[str, ...]       # recipe sections whose change invalidates the stage
    needs: tuple[str, ...]          # stages that must be done first
    check: Callable | None = None   # check(ctx, **options): raises StageError before anything is written


REGISTRY: dict[str, Stage] = {}


def stage(name: str, sections: tuple[str, ...] = (), needs: tuple[str, ...] = (), check: Callable | None = None):
    def register(fn):
        REGISTRY[name] = Stage(name, fn, sections or (name,), needs, check)
        return fn
    return register


def _load_stages() -> None:
    """Import every module of `mbml_cli.pipeline`; each registers its stage(s). Lazy, so that
    `mbml envs` or `mbml info` never import torch."""
    import importlib
    import pkgutil

    from . import pipeline
    for info in pkgutil.iter_modules(pipeline.__path__):
        importlib.import_module(f"{pipeline.__name__}.{info.name}")


# ---- opening a run -----------------------------------------------------------------------------
def open_run(target: str, overrides: list[str] | None = None, store_path: str | None = None,
             mode: str = "r+") -> RunContext:
    """`target` is a recipe file (creates or reopens its store) or an existing store."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        recipe, _ = load(path, overrides)
        recipe = resolve(recipe)
        if store_path:
            recipe.store = store_path
        return create_run(recipe)
    store = Store.open(target, mode=mode)
    recipe = from_dict(store.recipe, source=f"{target} (stored recipe)")
    if overrides:
        recipe = build(Recipe, merge(to_dict(recipe), parse_set(overrides)), f"{target} (with --set)")
        validate(recipe, f"{target} (with --set)")
        store.root.attrs["recipe"] = to_dict(recipe)
    return RunContext(store, recipe)


def create_run(recipe: Recipe) -> RunContext:
    """Create (or reopen) the recipe's store, record recipe + lock, and draw the tasks."""
    store = Store.create(recipe.store, {"recipe": to_dict(recipe), "lock": lock.current()})
    dist = envs.get(recipe.env.name)
    for split, n in (("train", recipe.env.n_train), ("test", recipe.env.n_test)):
        if split == "train" and recipe.data.format:
            continue                             # imported batches: the import writes their tasks
        tasks = dist.tasks(split, n, recipe.seed)
        if store.exists(f"tasks/{split}") and not np.array_equal(store.read_array(f"tasks/{split}"), tasks):
            raise StageError(f"{recipe.store}: holds tasks of another recipe (env or seed changed); "
                             "use a new store")
        store.write_array(f"tasks/{split}", tasks, {"param": dist.task_param})
    return RunContext(store, recipe)


# ---- running stages ----------------------------------------------------------------------------
def stage_key(name: str, algo: str | None = None) -> str:
    return f"{name}/{algo}" if algo else name


def run_stage(ctx: RunContext, name: str, force: bool = False, key: str | None = None, **options) -> bool:
    """Run one stage with its record. Returns False when it was skipped as already done."""
    _load_stages()
    if name not in REGISTRY:
        raise StageError(f"mbml {name}: not built yet")
    st = REGISTRY[name]
    key = key or name
    for need in st.needs:
        if ctx.store.stage(need).get("status") != "done":
            raise StageError(f"{ctx.store.path}: stage {need!r} must finish before {name!r} "
                             f"(run `mbml {need} {ctx.store.path}`)")
    if st.check is not None:
        st.check(ctx, **options)
    digest = section_hash(ctx.recipe, *st.sections)
    record = ctx.store.stage(key)
    if record.get("status") == "done" and record.get("hash") == digest and not force:
        return False
    ctx.resume = record.get("hash") == digest and record.get("status") in ("running", "failed", "partial")
    ctx.store.set_stage(key, status="running", hash=digest, started=time.time(), ended=None,
                        progress=0.0, message="")

    def progress(fraction: float) -> None:
        ctx.store.set_stage(key, progress=float(fraction), updated=time.time())

    ctx.progress = progress
    try:
        result = st.fn(ctx, **options)
    except BaseException as e:
        ctx.store.set_stage(key, status="failed", ended=time.time(), message=str(e)[:500])
        raise
    if isinstance(result, dict) and result.get("status") == "partial":
        ctx.store.set_stage(key, status="partial", ended=time.time(), message=str(result.get("message", "")))
        return True
    ctx.store.set_stage(key, status="done", ended=time.time(), progress=1.0)
    return True


PER_ALGO = ("distill", "eval", "probe")


def run_pipeline(ctx: RunContext, console) -> None:
    """`mbml run`: the recipe's stages in order, distill/eval/probe once per algo."""
    _load_stages()
    names = list(ctx.recipe.stages)
    if ctx.recipe.finetune.enabled and "finetune" not in names:
        names.append("finetune")                 # `finetune.enabled` alone turns it on, after the rest
    for name in names:
        if name == "finetune" and not ctx.recipe.finetune.enabled:
            continue
        for algo in (ctx.recipe.algos if name in PER_ALGO else [None]):
            key = stage_key(name, algo)
            options = {"algo": algo} if algo else {}
            start = time.time()
            ran = run_stage(ctx, name, key=key, **options)
            verb = f"done in {time.time() - start:.1f}s" if ran else "skipped (finished, inputs unchanged)"
            console.print(f"[green]✓[/green] {key}: {verb}")
    summary = REGISTRY.get("summary")
    if summary is not None:
        summary.fn(ctx, console=console)
