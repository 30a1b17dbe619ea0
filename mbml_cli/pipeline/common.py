"""Helpers shared by the stages that train batched agents (`collect`, `bcq`, `finetune`).

- seeds and returns: `derive_seed`, `episode_returns`;
- shards (`--tasks 0,3,5`): choosing the tasks still to do and the stage's record (`plan_shard`,
  `finish_shard`), as described in `pipeline/collect.py`;
- checkpoints: `read_checkpoint`, and `training_state` / `load_training_state` for the tensors every
  resumable stage keeps (module weights, Adam states, generator states, loss accumulators `acc/`);
- progress: `Reporter`, `format_returns`.
"""
from __future__ import annotations

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import stages
from ..algos.sac import load_optimiser_state, optimiser_state
from ..errors import StageError
from ..recipe import section_hash


# ---- seeds and returns ---------------------------------------------------------------------------
def derive_seed(*parts: int) -> int:
    """A 32-bit seed from non-negative integers (recipe seed, purpose, task, episode, ...): independent streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def episode_returns(rew: np.ndarray, ends: np.ndarray) -> list[float]:
    """Returns of the finished episodes of one transition stream (`ends`: terminal | truncated)."""
    out, start = [], 0
    for e in np.flatnonzero(ends):
        out.append(float(rew[start:e + 1].sum()))
        start = e + 1
    return out


# ---- shards ----------------------------------------------------------------------------------------
def select_tasks(tasks: list[int] | None, n_train: int) -> list[int]:
    if tasks is None:
        return list(range(n_train))
    bad = [i for i in tasks if not 0 <= i < n_train]
    if bad:
        raise StageError(f"--tasks: {bad} out of range (this run has training tasks 0..{n_train - 1})")
    return sorted(set(tasks))


def shard_name(tasks: list[int], n_train: int) -> str:
    """'all' for the full set, else the task indices joined by '-' (a group name)."""
    return "all" if list(tasks) == list(range(n_train)) else "-".join(map(str, tasks))


def task_record_done(store, stage: str, task: int, digest: str) -> bool:
    rec = store.stage(f"{stage}/{task}")
    return rec.get("status") == "done" and rec.get("hash") == digest


def plan_shard(ctx, stage: str, tasks: list[int] | None) -> tuple[list[int], list[int], str]:
    """(requested tasks, tasks still to do, hash). A fresh start (not ctx.resume) forgets the
    requested tasks' records; a resume keeps the tasks already done."""
    n_train = ctx.recipe.env.n_train
    requested = select_tasks(tasks, n_train)
    digest = section_hash(ctx.recipe, *stages.REGISTRY[stage].sections)
    if not ctx.resume:
        for i in requested:
            ctx.store.delete(f"stages/{stage}/{i}")
    todo = [i for i in requested if not task_record_done(ctx.store, stage, i, digest)]
    # A kill while the previous attempt was writing its tasks' final weights and records leaves part
    # of its shard done: resume that whole shard from its checkpoint (same seeds, the same weights for
    # the tasks already done) rather than start a new, differently seeded shard of the rest.
    previous = ctx.store.stage(stage).get("shard_tasks") if ctx.resume else None
    if isinstance(previous, list) and todo and set(todo) <= set(previous) <= set(requested):
        todo = sorted(int(i) for i in previous)
    if todo:
        ctx.store.set_stage(stage, shard_tasks=todo)
    return requested, todo, digest


def finish_shard(ctx, stage: str, digest: str):
    """None (the stage is done) when every training task is done, else a 'partial' result."""
    n_train = ctx.recipe.env.n_train
    left = [i for i in range(n_train) if not task_record_done(ctx.store, stage, i, digest)]
    if not left:
        return None
    return {"status": "partial", "message": f"tasks still to do: {','.join(map(str, left))}"}


# ---- checkpoints -----------------------------------------------------------------------------------
def flat_state(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in module.state_dict().items()}


def unflat_state(prefix: str, tensors: dict) -> dict[str, torch.Tensor]:
    p = prefix + "/"
    return {k[len(p):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith(p)}


def read_checkpoint(ctx, path: str, **expected) -> tuple[dict, dict] | None:
    """(tensors, meta) of the checkpoint at `path` when resuming and its meta holds the `expected`
    values (hash, task list); else None and the run starts afresh."""
    if not (ctx.resume and ctx.store.has_weights(path)):
        return None
    tensors, meta = ctx.store.load_weights(path)
    return (tensors, meta) if all(meta.get(k) == v for k, v in expected.items()) else None


def training_state(modules: dict, optimisers: dict, generators: dict, acc: dict) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: each module's weights under `<name>/`, each optimiser's state
    (`opt/<name>/…`), each generator's state under its name, the accumulators under `acc/`."""
    tensors = {name: g.get_state() for name, g in generators.items()}
    for name, module in modules.items():
        tensors.update(flat_state(name, module))
    for name, o in optimisers.items():
        tensors.update(optimiser_state(name, o))
    tensors.update({f"acc/{k}": v for k, v in acc.items()})
    return tensors


def load_training_state(tensors: dict, modules: dict, optimisers: dict, generators: dict,
                        acc: dict) -> dict[str, torch.Tensor]:
    """Inverse of `training_state`: modules, optimisers and generators in place; returns the accumulators."""
    for name, module in modules.items():
        module.load_state_dict(unflat_state(name, tensors))
    for name, o in optimisers.items():
        load_optimiser_state(name, o, tensors)
    for name, g in generators.items():
        g.set_state(torch.from_numpy(np.array(tensors[name])))
    return {k: torch.from_numpy(np.array(tensors[f"acc/{k}"])) for k in acc}


# ---- progress --------------------------------------------------------------------------------------
class Reporter:
    """A rich progress bar on a terminal; otherwise one plain line per `report` call."""

    def __init__(self, title: str, total: int, done: int = 0):
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.title, self.total = title, total
        if self.live:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                console=self.console, refresh_per_second=4)
            self.task = self.bar.add_task(title, total=total, completed=done, info="")
            self.bar.start()

    def update(self, done: int, info: str | None = None, line: bool = False) -> None:
        if self.live:
            fields = {"info": info} if info is not None else {}
            self.bar.update(self.task, completed=done, **fields)
        elif line and info is not None:
            self.console.print(f"{self.title} {done}/{self.total} {info}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.live:
            self.bar.stop()


def format_returns(tasks: list[int], returns) -> str:
    vals = [f"{i}:{r:.0f}" if np.isfinite(r) else f"{i}:–" for i, r in zip(tasks, returns)]
    if len(vals) > 12:
        finite = [r for r in returns if np.isfinite(r)]
        return f"return mean {np.mean(finite):.1f} min {np.min(finite):.1f} max {np.max(finite):.1f}" if finite else ""
    return "R " + " ".join(vals)
