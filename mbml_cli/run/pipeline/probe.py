"""`mbml probe [RUN] --algo A`: does the trained encoder read rewards? (`evaluate.probe_encoder`)

For every ordered pair of training tasks i ≠ j, task j's stored transitions carrying task i's TRUE
rewards are encoded; the pair counts when that posterior is closer (KL) to task i's own posterior
than to task j's. Near 0: the encoder identifies tasks by states and actions only; near 1: by rewards.
Skipped where the reward does not depend on the task (`reward_varies`: walker_param).
Writes `layout.PROBE`: closer, kl_own, kl_other (K, K) with the score in the attributes.
"""
from __future__ import annotations

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ... import envs as registry
from ...core import layout, seeds
from ...api import Run, load_policy
from ..loaders import load_batches
from ..evaluate import probe_encoder
from ..context import RunContext, stage
from .common import check_algo



@stage("probe", check=check_algo)
def probe(ctx: RunContext, algo: str = "mbml", which: str = "final") -> None:
    r, store = ctx.recipe, ctx.store
    if not registry.has_environment(ctx.dist):
        Console().print(f"probe {algo}: skipped, it needs every task's ground-truth reward ({ctx.dist.needs_env_message})",
                        highlight=False, soft_wrap=True)
        return
    if not ctx.dist.reward_varies:
        Console().print(f"probe {algo}: skipped, {ctx.dist.name}'s reward is the same in every task (only the dynamics "
                        "differ), so relabelled contexts are the originals", highlight=False, soft_wrap=True)
        return
    policy = load_policy(Run(store), algo, which, "cpu")
    if not getattr(policy.module, "infers_task", True):
        Console().print(f"probe {algo}: skipped, {algo} has no task encoder to probe", highlight=False, soft_wrap=True)
        return
    tasks = ctx.tasks("train")
    data = load_batches(store, "train", list(range(len(tasks))))
    gen = torch.Generator().manual_seed(seeds.offset(r.seed, "probe"))
    res = probe_encoder(policy.module.encoder, data, tasks, ctx.dist, r.distill.context_size,
                        r.eval.probe_draws, gen)
    path = layout.PROBE(algo)
    store.write_array(f"{path}/closer", res.closer)
    store.write_array(f"{path}/kl_own", res.kl_own)
    store.write_array(f"{path}/kl_other", res.kl_other)
    store.group(path).attrs.update({"score": res.score, "which": which, "draws": r.eval.probe_draws,
                                    "context_size": r.distill.context_size})
    K = len(tasks)
    off = ~np.eye(K, dtype=bool)
    table = Table("pairs (i ≠ j)", "closer to task i", "KL to task i", "KL to task j",
                  title=f"probe {algo}: task j's transitions with task i's true rewards")
    table.add_row(str(K * (K - 1)), f"[bold]{100 * res.score:.1f}%[/bold]",
                  f"{res.kl_own[off].mean():.3g}", f"{res.kl_other[off].mean():.3g}")
    Console().print(table)
