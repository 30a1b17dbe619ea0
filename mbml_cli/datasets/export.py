"""`mbml export RUN --format minari [--out DIR]`: each training task's batch → one Minari dataset
`mbml/<run>/task-<i>-v0`, its task parameters and the distribution in the metadata, and a dataset
card (what collected it, steps, episodes, returns) as its description and under metadata `card`.
Arrays keep the store's dtypes; where the distribution has an environment, the dataset's env spec
builds that task's environment (`minari_io.env_spec`), so `recover_environment()` works.
`mbml import minari mbml/<run>` reads them back to the same transitions, bit for bit.
"""
from __future__ import annotations

import re

import numpy as np

from .. import envs
from ..core import lock
from ..recipe.load import from_dict
from ..core.store import Store
from . import minari_io
from .batches import TASKS, action_scale, episode_returns, read_batch


def dataset_id(run: str, task: int) -> str:
    return f"mbml/{re.sub(r'[^-_A-Za-z0-9]', '_', run)}/task-{task}-v0"


def card(store: Store, recipe, task: int, columns: dict) -> dict:
    """What collected the batch, its size and its episodes' returns."""
    imported = dict(store.root[TASKS].attrs).get("source") if store.exists(TASKS) else None
    if imported:
        how = f"imported into mbml from {imported.get('format')} ({dict(store.root[TASKS].attrs)['labels'][task]})"
    else:
        c = recipe.collect
        how = (f"mbml collect: SAC (hidden {c.hidden}, {c.random_steps} random-action steps first) whose whole "
               f"replay buffer is the batch; env {recipe.env.name}, horizon {recipe.env.horizon}, seed {recipe.seed}")
    ends = columns["terminal"] | columns["truncated"]
    returns = episode_returns(np.asarray(columns["rew"], np.float64), ends)
    stats = {"steps": int(len(columns["rew"])), "episodes": len(returns),
             "terminal_steps": int(columns["terminal"].sum()), "truncated_steps": int(columns["truncated"].sum())}
    if returns:
        stats.update(return_mean=float(np.mean(returns)), return_min=float(np.min(returns)),
                     return_max=float(np.max(returns)))
    return {"collected_by": how, **stats}


def describe(run: str, task: int, params, c: dict) -> str:
    lines = [f"mbml run {run!r}, training task {task}, task parameters {list(map(float, params))}.",
             c["collected_by"] + ".",
             f"{c['steps']} steps, {c['episodes']} finished episodes"
             + (f", return mean {c['return_mean']:.3f} (min {c['return_min']:.3f}, max {c['return_max']:.3f})."
                if c["episodes"] else ".")]
    return "\n".join(lines)


def export_minari(path: str, out_dir: str | None = None) -> list[tuple[str, str, dict]]:
    """(dataset id, directory, card) of every training task's new dataset."""
    store = Store.open(path)
    recipe = from_dict(store.recipe, source=f"{path} (stored recipe)")
    params = store.read_array(TASKS)
    low, high = action_scale(store)
    dist = envs.of(recipe.env)
    has_env = envs.has_environment(dist)
    rev = lock.revision()
    out = []
    for i in range(len(params)):
        columns = read_batch(store, i)
        c = card(store, recipe, i, columns)
        meta = {"task_params": [float(x) for x in params[i]], "card": c, "algorithm": "mbml collect (SAC)",
                "code": f"mbml revision {rev}",
                "mbml": {"env": recipe.env.name, "horizon": int(recipe.env.horizon), "task_param": dist.task_param,
                         "info_names": list(dist.info_names), "run": recipe.name, "task": i, "seed": int(recipe.seed)}}
        ident = dataset_id(recipe.name, i)
        spec = minari_io.env_spec(recipe.env.name, params[i], recipe.env.horizon, recipe.env.observation,
                                  low, high) if has_env else None
        where = minari_io.write_dataset(ident, columns, low, high, meta, describe(recipe.name, i, params[i], c),
                                        out_dir, spec)
        out.append((ident, str(where), c))
    return out
