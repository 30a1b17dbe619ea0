"""`mbml import minari|arrays`: users' batches into a new store, in the place of `mbml collect`.

The store's recipe gets a `data` section (format, sources, task file), `env.n_train` = the number of
datasets and `env.name` = the task distribution (`--env`, else the one the datasets' metadata names,
else `none`: no environment). Its `collect` stage then imports instead of running SAC, so `mbml run
STORE` (or a recipe with the same `data` section) goes on with bcq → reward → relabel → distill →
eval unchanged. The import writes `data/train/<i>` and `tasks/train` (whose attributes record the
source and the action bounds: `batches.action_scale`). The store is then self-contained: when the
stage runs again (a changed `env.*` or `collect.*` key) and the store holds the batches of the same
sources, split the same way, it keeps them and never reads the sources again (`stored`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import envs
from ..core import layout
from ..recipe.config import DataConfig, Recipe
from ..errors import StageError
from ..recipe.load import build, load, parse_set, resolve, validate
from . import arrays, minari_io
from .batches import TASKS, TaskBatch, attach_tasks, check_agree, write_batches


@dataclass
class Imported:
    batches: list[TaskBatch]
    params: np.ndarray        # (K, p)
    env: str                  # the task distribution's name, or "none"
    horizon: int              # from the datasets' metadata; 0 = unknown


def _env_of(batches: list[TaskBatch], given: str | None) -> str:
    if given:
        return given
    named = {b.meta.get("env") for b in batches}
    return named.pop() if len(named) == 1 and None not in named else envs.plugins.NONE


def prepare(fmt: str, sources: list[str], task_file: str | None, env: str | None) -> Imported:
    """Read and check every dataset (spaces agree, task parameters present and of the
    distribution's size, the reward's info features present); nothing is written."""
    if not sources:
        raise StageError(f"import {fmt}: no datasets named")
    dist = _get(env) if env else None
    if fmt == "minari":
        n_info_of = (lambda meta: dist.info_names) if dist is not None else \
            (lambda meta: meta.get("info_names", []) if meta.get("env") else None)
        batches = minari_io.read(sources, n_info_of)
    elif fmt == "arrays":
        batches = arrays.read(sources, dist.info_names if dist is not None else None)
    else:
        raise StageError(f"import: unknown format {fmt!r} (minari or arrays)")
    check_agree(batches)
    params = attach_tasks(batches, task_file)
    name = _env_of(batches, env)
    check_distribution(batches[0], params, name)
    horizons = {int(b.meta.get("horizon", 0)) for b in batches}
    return Imported(batches, params, name, horizons.pop() if len(horizons) == 1 else 0)


def check_distribution(first: TaskBatch, params: np.ndarray, name: str) -> None:
    """The task parameters and info features are as many as distribution `name` takes (none: any)."""
    dist = _get(name)
    if not envs.has_environment(dist):
        return
    width = dist.tasks("train", 1, 0).shape[1]
    if params.shape[1] != width:
        raise StageError(f"{first.label}: {params.shape[1]} task parameters; {name} takes {width} ({dist.task_param})")
    if first.columns["info"].shape[1] != len(dist.info_names):
        raise StageError(f"{first.label}: {first.columns['info'].shape[1]} info features; {name}'s reward needs "
                         f"{len(dist.info_names)} ({', '.join(dist.info_names)})")


def _get(name: str):
    try:
        return envs.get(name)
    except LookupError as e:
        raise StageError(f"--env: {e}") from None


def import_recipe(fmt: str, sources: list[str], task_file: str | None, env: str | None,
                  recipe_path: str | None, overrides: list[str] | None, store: str | None) -> tuple[Recipe, Imported]:
    """The recipe of a store of imported data (training settings from `recipe_path` and --set)."""
    if recipe_path:
        base, _ = load(recipe_path, overrides)
    else:
        base = build(Recipe, {"name": "imported", **parse_set(overrides or [])}, "--set")
    sources = [str(Path(s).resolve()) if Path(s).exists() else s for s in sources]
    task_file = str(Path(task_file).resolve()) if task_file else ""
    imp = prepare(fmt, sources, task_file or None, env)
    has_env = envs.has_environment(envs.get(imp.env))
    r = dataclasses.replace(
        base, data=DataConfig(fmt, sources, task_file),
        env=dataclasses.replace(base.env, name=imp.env, n_train=len(imp.batches),
                                horizon=base.env.horizon if not has_env else (imp.horizon or base.env.horizon),
                                n_test=base.env.n_test if has_env else 0))
    if store:
        r.store = store
    source = f"{recipe_path or 'import'} (imported data)"
    validate(r, source)
    r = resolve(r)
    check_spaces(r, imp)                   # before any store is made
    if "://" not in r.store and Path(r.store).exists() and any(Path(r.store).iterdir()):
        raise StageError(f"{r.store}: already exists; mbml import makes a new store (name another with --store)")
    return r, imp


def check_spaces(r, imp: Imported) -> None:
    """The datasets' observation and action widths are the environment's (`env.observation` included)."""
    if not envs.has_environment(_get(r.env.name)):
        return
    dist = envs.of(r.env)
    want = envs.widths(dist, imp.params[0])
    cols = imp.batches[0].columns
    have = (cols["obs"].shape[1], cols["act"].shape[1])
    if have != want:
        hint = ""
        for kind in (k for k in getattr(dist, "observations", ()) if k != r.env.observation):
            if envs.widths(envs.seeing(dist, kind), imp.params[0]) == have:
                hint = f" (env.observation: {kind} has {have[0]})"
        raise StageError(f"{imp.batches[0].label}: observations {have[0]}, actions {have[1]}; {r.env.name} with "
                         f"env.observation {r.env.observation} has {want[0]} and {want[1]}{hint}")


def _source(r) -> dict:
    return {"format": r.data.format, "sources": list(r.data.sources), "tasks": r.data.tasks}


def _holdout(r) -> float:
    return 0.0 if envs.has_environment(_get(r.env.name)) else r.data.holdout    # with an env, eval acts in it


def stored(store, r) -> Imported | None:
    """The batches an earlier import left in `store`, when they came from the recipe's `data` sources
    and are split as it says (their first row each, for the checks); None otherwise."""
    attrs = dict(store.root[TASKS].attrs) if store.exists(TASKS) else {}
    if attrs.get("source") != _source(r) or attrs.get("holdout") != _holdout(r):
        return None
    params = store.read_array(TASKS)
    paths = [layout.BATCH("train", i) for i in range(len(params))]
    if not all(store.exists(p) and store.rows(p) for p in paths):
        return None
    low, high = np.asarray(attrs["action_low"], np.float64), np.asarray(attrs["action_high"], np.float64)
    return Imported([TaskBatch(label, store.read_rows(p, 0, 1), low, high, row)
                     for label, p, row in zip(attrs["labels"], paths, params)], params, r.env.name, 0)


def import_batches(ctx, loaded: Imported | None = None) -> None:
    """The collect stage of a recipe with a `data` section: the batches → `data/train/<i>`, or those
    the store already holds when `stored` finds them (checked against the recipe's env all the same)."""
    r = ctx.recipe
    kept = None if loaded else stored(ctx.store, r)
    imp = loaded or kept or prepare(r.data.format, r.data.sources, r.data.tasks or None, r.env.name)
    K = len(imp.batches)
    if K != r.env.n_train:
        raise StageError(f"{ctx.store.path}: env.n_train is {r.env.n_train} but data.sources hold {K} tasks "
                         f"(set env.n_train: {K})")
    if imp.env != r.env.name:
        raise StageError(f"{ctx.store.path}: the datasets are of {imp.env}, the recipe's env.name is {r.env.name}")
    if kept:                               # `prepare` checks these of batches it reads
        check_distribution(imp.batches[0], imp.params, r.env.name)
    if loaded is None:                     # `mbml import` checked them before making the store
        check_spaces(r, imp)
    widths = f"observations {imp.batches[0].columns['obs'].shape[1]}, actions {imp.batches[0].columns['act'].shape[1]}"
    if kept:
        ctx.store.root[TASKS].attrs["param"] = _get(r.env.name).task_param
        rows = sum(ctx.store.rows(layout.BATCH("train", i)) for i in range(K))
        print(f"kept the {K} imported tasks' batches in the store ({rows} transitions, the sources not read "
              f"again; {widths}, env {r.env.name})")
        return
    holdout = _holdout(r)
    held = write_batches(ctx.store, imp.batches, imp.params,
                         {"param": _get(r.env.name).task_param, "holdout": holdout, "source": _source(r)}, holdout)
    rows = sum(b.size for b in imp.batches)
    out = f", {held} held out for eval's offline check" if held else ""
    print(f"imported {K} tasks, {rows} transitions{out} ({r.data.format}; {widths}, env {r.env.name})")
