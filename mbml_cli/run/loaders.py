"""Trained models and batches out of a store (and the reward ensembles into it), through the
schema of `layout.py`. The algorithms in `algos/` only see tensors; this is the layer that reads."""
from __future__ import annotations

import numpy as np
import torch

from ..core import layout
from ..algos.bcq import BCQ
from ..algos.mbml import Relabelled
from ..algos.reward_model import EnsembleModel
from ..recipe.config import Recipe
from ..algos.data import FIELDS, TaskData
from ..errors import StageError
from ..algos.nets import stack_states
from ..recipe.load import from_dict
from ..core.guard import loading


def load_batches(store, split: str, tasks: list[int], device="cpu") -> TaskData:
    """The batches `layout.BATCH(split, i)` of `tasks` as (K, N, ·) tensors, padded to the longest."""
    tables = [store.read_rows(layout.BATCH(split, i)) for i in tasks]
    missing = [i for i, t in zip(tasks, tables) if not t or len(t["rew"]) == 0]
    if missing:
        raise StageError(f"{store.path}: no {split} data for tasks {missing} (run `mbml collect` first)")
    sizes = [len(t["rew"]) for t in tables]
    n = max(sizes)

    def stack(name):
        cols = [np.asarray(t[name], dtype=np.float32) for t in tables]
        out = np.zeros((len(cols), n) + cols[0].shape[1:], dtype=np.float32)
        for k, c in enumerate(cols):
            out[k, :len(c)] = c
        return torch.from_numpy(out).to(device)

    return TaskData(**{f: stack(f) for f in FIELDS}, sizes=torch.tensor(sizes, device=device))


def load_relabelled(store, data: TaskData, next_state: bool = True) -> Relabelled:
    """The relabel stage's rewards and eligibility for `data` (every training task). With `next_state`
    False the stored s′ stand in for the predicted ones, and eligibility asks only the reward
    ensemble's std (Eq. 7), not the next-state ensemble's."""
    if store.stage("relabel").get("status") != "done":
        raise StageError(f"{store.path}: stage 'relabel' must finish first (run `mbml relabel {store.path}`)")
    info = layout.read_attrs(store, layout.RELABEL_INFO())
    if list(info.get("sizes", [])) != data.sizes.tolist():
        raise StageError(f"{store.path}: the relabelled rewards were made from other data; "
                         f"run `mbml relabel {store.path} --force`")
    read = lambda name: torch.from_numpy(store.read_array(layout.RELABEL(name)))
    has_next = store.exists(layout.RELABEL("next_obs"))
    mask = read("mask").bool()
    if has_next and not next_state:
        K = mask.shape[0]
        real = torch.arange(mask.shape[-1])[None, None, :] < data.sizes.cpu()[None, :, None]
        mask = (read("std") < info["std_threshold"]) & real & ~torch.eye(K, dtype=torch.bool)[:, :, None]
    return Relabelled(read("mean"), mask, read("next_obs") if has_next and next_state else None)


def load_bcq(store, recipe: Recipe | dict, which: str = "final", device="cpu") -> BCQ:
    """The BCQ teachers of all K training tasks (`layout.BCQ(which, i)`, i < K) as one module."""
    if isinstance(recipe, dict):
        recipe = from_dict(recipe)
    n = recipe.env.n_train or int(len(layout.read_tasks(store, "train")))
    states, meta = [], {}
    for i in range(n):
        path = layout.BCQ(which, i)
        if not store.has_weights(path):
            raise StageError(f"{store.path}: no BCQ weights for training task {i} at {path} "
                             f"(run `mbml bcq {store.path}`)")
        tensors, meta = store.load_weights(path)
        states.append({k: torch.from_numpy(v) for k, v in tensors.items()})
    with loading(store.path, layout.BCQ(which, n - 1), meta):
        model = BCQ(n, int(meta["obs_dim"]), int(meta["act_dim"]), recipe.bcq)
        model.load_state_dict(stack_states(states))
    return model.to(device).eval()


def save_ensemble(store, kind: str, model: EnsembleModel) -> None:
    store.save_weights(layout.REWARD_MODEL(kind), model.state_dict(), meta=model.meta)


def load_ensemble(store, kind: str = "reward", device="cpu") -> EnsembleModel:
    """The trained ensemble `kind` ("reward" or "next_state") of a store."""
    tensors, meta = store.load_weights(layout.REWARD_MODEL(kind))
    with loading(store.path, layout.REWARD_MODEL(kind), meta):
        model = EnsembleModel(**meta)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()})
    return model.to(device)
