"""Running stages: opening a run, one stage with its record, and `mbml run`'s plan in order.

What each stage reads in the recipe, what it needs and the order are the stage graph's
(`recipe/graph.py`). A stage is a function `fn(ctx: RunContext, **options)` registered with
`@stage(name)` in a module of `mbml_cli/run/pipeline/` (one module per stage, besides the shared
`common` and `online`). `run_stage` records status, the record's digest (graph.digest), start/end
time and progress; a fresh record is skipped, one re-entered with the same digest is told to resume
(`ctx.resume`), a changed digest starts it afresh.
A stage may also register `check(ctx, **options)`: it runs before any record is written, so bad
options fail with a one-line error and leave the store as it was.
A stage run on a shard of tasks returns `{"status": "partial", "message": ...}` while other tasks
remain; that status is recorded instead of "done" (and, like "running"/"failed", resumes). A stage
that trains its tasks in groups (collect, bcq) registers `shard(ctx, tasks, digest)`, which trains
one group: `mbml run --jobs N` runs the recipe's groups as units (`parallel.py`).
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np

from .. import envs
from ..core import layout, lock, writer
from ..recipe import graph
from ..recipe.config import Recipe
from .context import REGISTRY, RESUMABLE, RunContext, _load_stages, recorded
from ..errors import StageError, StoreError
from ..recipe.load import build, check_memory, from_dict, load, merge, parse_set, resolve, to_dict, validate, yaml_hint
from ..core.store import Store, _is_url


# ---- opening a run -----------------------------------------------------------------------------
def open_run(target: str, overrides: list[str] | None = None, store_path: str | None = None,
             mode: str = "r+", unit: str | None = None) -> RunContext:
    """`target` is a recipe file (creates or reopens its store) or an existing store. Either way
    the store's writer lock is taken (see `writer.py`): the whole store's, or for an existing store
    opened without overrides only `unit`'s; the caller releases it with `release(ctx)`."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        recipe, _ = load(path, overrides)
        recipe = resolve(recipe)
        if store_path:
            recipe.store = store_path
        check_device(recipe, str(path))
        check_memory(recipe, str(path))
        return create_run(recipe)
    if yaml_hint(path) and not path.exists():
        raise StageError(f"{target}: no such store or recipe{yaml_hint(path)}")
    store = Store.open(target, mode=mode)
    source = f"{target} (stored recipe)"
    recipe = from_dict(store.recipe, source=source)
    validate(recipe, source)
    if recipe.device != "cpu" and not _cuda():      # a store made on a GPU machine runs here on the CPU
        recipe.device = "cpu"
    if overrides:
        recipe = build(Recipe, merge(to_dict(recipe), parse_set(overrides)), f"{target} (with --set)")
        validate(recipe, f"{target} (with --set)")
        check_device(recipe, f"{target} (with --set)")
    check_memory(recipe, source)
    if mode == "r":                                 # a reader: no lock, and the --set values stay in memory
        return RunContext(store, recipe)
    unit = None if overrides else unit           # overrides rewrite the store's recipe: the whole store's lock
    take_lock(store.path, unit)
    if overrides:
        before = store.recipe
        if (before.get("seed"), before.get("env")) != (recipe.seed, to_dict(recipe)["env"]):
            try:                                    # the tasks follow the seed and env (test tasks: env.n_test)
                draw_tasks(store, recipe)
            except BaseException:
                writer.release(store.path, unit)
                raise
        store.root.attrs["recipe"] = to_dict(recipe)
    return RunContext(store, recipe, unit=unit)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def check_device(recipe: Recipe, source: str) -> None:
    if recipe.device == "cuda" and not _cuda():
        raise StageError(f"{source}: device: cuda, but this machine has no CUDA device (use cpu or auto)")


def take_lock(store_path: str, unit: str | None = None) -> None:
    """The writer lock of a local store, or of one unit of it (a second writer is refused with one
    line naming the holder)."""
    if _is_url(store_path):
        return
    from rich.console import Console
    from ..recipe.inputs import clean
    console = Console(stderr=True)
    try:
        writer.acquire(store_path, say=lambda line: console.print(f"[yellow]note:[/yellow] {clean(line)}"), unit=unit)
    except writer.LockError as e:
        raise StoreError(str(e)) from None


def unit_of(name: str, options: dict) -> str | None:
    """The writer-lock unit of a stage: one algorithm's groups for distill, eval and probe (`writer.py`)."""
    return f"algo/{options['algo']}" if graph.GRAPH[name].per_algo and options.get("algo") else None


def release(ctx: "RunContext | None") -> None:
    if ctx is not None:
        writer.release(ctx.store.path, ctx.unit)


def create_run(recipe: Recipe) -> RunContext:
    """Create (or reopen) the recipe's store, record recipe + lock, and draw the tasks."""
    local = not _is_url(recipe.store)
    if local:
        from ..core.guard import make_root
        fresh = not Path(recipe.store).exists()
        make_root(recipe.store)
        take_lock(recipe.store)          # before anything is written, also into a new store
    try:
        store = Store.create(recipe.store, {"recipe": to_dict(recipe), "lock": lock.current()})
    except BaseException:
        if local:
            writer.release(recipe.store)
            if not (Path(recipe.store) / "zarr.json").exists():     # leave no trace where no store was made
                (Path(recipe.store) / writer.LOCK_FILE).unlink(missing_ok=True)
                if fresh:
                    Path(recipe.store).rmdir()
        raise
    ctx = RunContext(store, recipe)
    try:
        draw_tasks(store, recipe)
    except BaseException:
        release(ctx)
        raise
    return ctx


def draw_tasks(store: Store, recipe: Recipe) -> None:
    """The recipe's training and test tasks into the store. Training tasks are the data's: other ones
    (env or seed changed) are refused. Test tasks follow `env.n_test`: redrawn when it changed (the
    stage graph then re-runs distill, eval and probe on them)."""
    dist = envs.of(recipe.env)
    for split, n in (("train", recipe.env.n_train), ("test", recipe.env.n_test)):
        if split == "train" and recipe.data.format:
            continue                             # imported batches: the import writes their tasks
        tasks = dist.tasks(split, n, recipe.seed)
        if store.exists(layout.TASKS(split)) and np.array_equal(layout.read_tasks(store, split), tasks):
            continue
        if split == "train" and store.exists(layout.TASKS(split)):
            raise StageError(f"{store.path}: holds tasks of another recipe (env or seed changed); use a new store")
        store.write_array(layout.TASKS(split), tasks, {"param": dist.task_param})


# ---- running stages ----------------------------------------------------------------------------
def check_ready(ctx: RunContext, name: str, key: str | None = None, **options) -> str:
    """Refuse a stage whose options are wrong or whose inputs are not finished and fresh; its record key."""
    _load_stages()
    st = REGISTRY[name]
    canonical = graph.record_key(name, options.get("algo"))
    key = key or canonical
    if st.check is not None:
        st.check(ctx, **options)
    fresh = graph.freshness(ctx.recipe, ctx.store.stage)
    for need in graph.needs(ctx.recipe, canonical):
        if not fresh(need):
            changed = " (its inputs changed since it ran)" if ctx.store.stage(need).get("status") == "done" else ""
            raise StageError(f"{ctx.store.path}: stage {need!r} must finish before {key!r}{changed} "
                             f"(run `mbml run {ctx.store.path}`)")
    return key


def run_stage(ctx: RunContext, name: str, force: bool = False, key: str | None = None, **options) -> bool:
    """Run one stage with its record. Returns False when it was skipped as fresh (done, inputs unchanged)."""
    key = check_ready(ctx, name, key, **options)                 # `key` may be a side result (eval/mbml-unseen)
    st, canonical = REGISTRY[name], graph.record_key(name, options.get("algo"))
    digest = graph.digest(ctx.recipe, canonical)
    inputs = graph.inputs(ctx.recipe, canonical, ctx.store.stage)
    record = ctx.store.stage(key)
    same = record.get("hash") == digest and record.get("inputs") == inputs    # what it read is still current
    if record.get("status") == "done" and same and not force:
        return False
    ctx.resume = same and record.get("status") in RESUMABLE
    ctx.store.set_stage(key, status="running", hash=digest, inputs=inputs, run=None, started=time.time(), ended=None,
                        progress=float(record.get("progress") or 0.0) if ctx.resume else 0.0, message="",
                        **layout.holder())

    def progress(fraction: float) -> None:
        ctx.store.set_stage(key, progress=float(fraction), updated=time.time())

    ctx.progress = progress
    result = recorded(ctx.store, [key], lambda: st.fn(ctx, **options))
    if isinstance(result, dict) and result.get("status") == "partial":
        ctx.store.set_stage(key, status="partial", ended=time.time(), message=str(result.get("message", "")))
        return True
    ctx.store.set_stage(key, status="done", ended=time.time(), progress=1.0, run=uuid.uuid4().hex[:12])
    return True


def plan(recipe: Recipe) -> list[tuple[str, str, dict]]:
    """(stage, record key, options) of everything `mbml run` does, in the graph's order."""
    out = []
    for key in graph.plan(recipe):
        name, algo = graph.split(key)
        out.append((name, key, {"algo": algo} if algo else {}))
    return out


def pending(recipe: Recipe, store: Store | None) -> list[str]:
    """Record keys of `plan(recipe)` that a run would not skip (all of them without a store)."""
    if store is None:
        return graph.plan(recipe)
    fresh = graph.freshness(recipe, store.stage)
    return [key for key in graph.plan(recipe) if not fresh(key)]


def leading_block(steps: list[tuple[str, str, dict]]) -> list[tuple[str, str, dict]]:
    """The per-algorithm steps at the head of `steps` (distill, eval, probe of every algo)."""
    block = []
    for step in steps:
        if not graph.GRAPH[step[0]].per_algo or "algo" not in step[2]:
            break
        block.append(step)
    return block


def run_pipeline(ctx: RunContext, console, estimates: dict[str, float] | None = None, units=None) -> None:
    """`mbml run`: `plan(recipe)` in order; each stage first names its device and, with `estimates`
    (record key → seconds from `preflight`), its projected time and the rest of the run's. With
    `units` (`parallel.Units`, for `mbml run --jobs N`) the recipe's shards of collect and bcq, and the
    algorithms' distill → eval → probe, run N at a time as units."""
    from .progress import fmt_duration
    _load_stages()
    estimates = dict(estimates or {})
    device = device_name(ctx.recipe)
    steps = plan(ctx.recipe)
    while steps:
        block = leading_block(steps) if units else []
        if len({options["algo"] for _, _, options in block}) > 1:
            units.algos(block, pending(ctx.recipe, ctx.store))
            steps = steps[len(block):]
            continue
        name, key, options = steps.pop(0)
        if units and REGISTRY[name].shard is not None:
            options = {**options, "parallel": units.shards}
        if key in estimates:
            rest = sum(v for k, v in estimates.items() if k != key)
            console.print(f"▶ {key} on {device}: projected {fmt_duration(estimates[key])}"
                          + (f", then {fmt_duration(rest)} for the rest of the run" if rest else ""), highlight=False)
        start = time.time()
        ran = run_stage(ctx, name, key=key, **options)
        estimates.pop(key, None)
        verb = f"done in {time.time() - start:.1f}s" if ran else "skipped (finished, inputs unchanged)"
        console.print(f"[green]✓[/green] {key}: {verb}")
    from .pipeline.summary import summary
    summary(ctx, console=console)


def device_name(recipe: Recipe) -> str:
    """The torch device a recipe's stages run on, with the CPU threads."""
    from ..algos.nets import device_of
    from ..recipe.limits import threads_text
    device = device_of(recipe.device)
    return f"{device}" + (f" ({threads_text(recipe.threads)})" if device.type == "cpu" else "")
