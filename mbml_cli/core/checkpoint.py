"""The one checkpoint format of every resumable stage (collect, bcq, distill, finetune).

A checkpoint is a `layout.CHECKPOINT` (or `DISTILL_CHECKPOINT`) weights group: plain arrays, never
pickles. Its tensors are
  <module>/<key>             each module's state_dict
  opt/<name>/<index>/<key>   each Adam's per-parameter state (the param groups — lr etc. — come from
                             the live optimiser)
  <generator>                each torch.Generator's state (e.g. `rng`, `rng/noise`)
  acc/<name>                 loss accumulators between two log rows
and its meta holds the stage's progress (step, row counts of its tables, the hash of its inputs).

On disk (`save`) the tensors are packed: one flat array per dtype (`packed/<dtype>`) and, in the
meta's `packed`, each tensor's [name, dtype, shape, offset]. A checkpoint is then a handful of zarr
arrays instead of one per tensor (~75 for SAC with Adam): a few ms to write, not half a second.
`load` reads packed checkpoints and the earlier ones of one array per tensor alike.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import StoreError
from .store import host_array


def module_state(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in module.state_dict().items()}


def unprefix(prefix: str, tensors: dict) -> dict[str, torch.Tensor]:
    p = prefix + "/"
    return {k[len(p):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith(p)}


def optimiser_state(name: str, optimiser: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's per-parameter state as flat tensors `opt/<name>/<param index>/<key>`."""
    out = {}
    for idx, state in optimiser.state_dict()["state"].items():
        for key, value in state.items():
            out[f"opt/{name}/{idx}/{key}"] = torch.as_tensor(value).detach().clone()
    return out


def load_optimiser_state(name: str, optimiser: torch.optim.Optimizer, tensors: dict) -> None:
    """Inverse of `optimiser_state`."""
    sd = optimiser.state_dict()
    state: dict = {}
    prefix = f"opt/{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, field = key[len(prefix):].split("/")
            state.setdefault(int(idx), {})[field] = torch.as_tensor(value)
    sd["state"] = state
    optimiser.load_state_dict(sd)


def training_state(modules: dict, optimisers: dict, generators: dict, acc: dict) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors (see the module docstring)."""
    tensors = {name: g.get_state() for name, g in generators.items()}
    for name, module in modules.items():
        tensors.update(module_state(name, module))
    for name, o in optimisers.items():
        tensors.update(optimiser_state(name, o))
    tensors.update({f"acc/{k}": v for k, v in acc.items()})
    return tensors


def load_training_state(tensors: dict, modules: dict, optimisers: dict, generators: dict,
                        acc: dict) -> dict[str, torch.Tensor]:
    """Inverse of `training_state`: modules, optimisers and generators in place; returns the accumulators
    (on the device of the given ones)."""
    tensors = upgrade(tensors, modules, optimisers)
    for name, module in modules.items():
        module.load_state_dict(unprefix(name, tensors))
    for name, o in optimisers.items():
        load_optimiser_state(name, o, tensors)
    for name, g in generators.items():
        g.set_state(torch.from_numpy(np.array(tensors[name])).to(torch.uint8))
    return {k: torch.from_numpy(np.array(tensors[f"acc/{k}"])).to(getattr(v, "device", "cpu")) for k, v in acc.items()}


def upgrade(tensors: dict, modules: dict, optimisers: dict) -> dict:
    """Distill checkpoints of mbml ≤ 0.1.0 used '.' (`<module>.<key>`, `opt.<name>.<i>.<key>`)."""
    out = {}
    for key, value in tensors.items():
        if key.startswith("opt.") and key.split(".")[1] in optimisers:
            _, name, idx, field = key.split(".", 3)
            key = f"opt/{name}/{idx}/{field}"
        else:
            head, _, rest = key.partition(".")
            if rest and head in modules:
                key = f"{head}/{rest}"
        out[key] = value
    return out


def save(store, path: str, tensors: dict, meta: dict) -> None:
    """Write a checkpoint's tensors packed into one flat array per dtype (see the module docstring)."""
    flat: dict[str, list[np.ndarray]] = {}
    index, offsets = [], {}
    for name, value in tensors.items():
        value = host_array(value)
        dtype = value.dtype.name
        index.append([name, dtype, list(value.shape), offsets.get(dtype, 0)])
        offsets[dtype] = offsets.get(dtype, 0) + value.size
        flat.setdefault(dtype, []).append(value.ravel())
    arrays = {f"packed/{dtype}": np.concatenate(parts) for dtype, parts in flat.items()}
    store.save_weights(path, arrays, {**meta, "packed": index})


def load(store, path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors by name, meta) of the checkpoint at `path`, packed or not."""
    arrays, meta = store.load_weights(path)
    index = meta.pop("packed", None)
    if index is None:
        return arrays, meta
    tensors = {}
    try:
        for name, dtype, shape, offset in index:
            size, flat = math.prod(shape), arrays[f"packed/{dtype}"]
            if flat.dtype.name != dtype or not 0 <= offset <= flat.size - size:
                raise ValueError(name)
            tensors[name] = flat[offset:offset + size].reshape(shape)
    except (ValueError, TypeError, KeyError) as e:
        raise StoreError(f"{store.path}: {path}: damaged checkpoint index ({type(e).__name__}: {str(e)[:80]})") from None
    return tensors, meta


def read(ctx, path: str, **expected) -> tuple[dict, dict] | None:
    """(tensors, meta) of the checkpoint at `path` when resuming and its meta holds the `expected`
    values (hash, task list); else None and the stage starts afresh."""
    if not (ctx.resume and ctx.store.has_weights(path)):
        return None
    tensors, meta = load(ctx.store, path)
    return (tensors, meta) if all(meta.get(k) == v for k, v in expected.items()) else None


def accumulators(tensors: dict) -> dict[str, torch.Tensor]:
    """The loss accumulators `acc/<name>` of a checkpoint's tensors (on the CPU)."""
    return {k[len("acc/"):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith("acc/")}
