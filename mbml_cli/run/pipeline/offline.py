"""The offline check `mbml eval` runs in place of the protocol when the data has no environment
(`env.name: none`, imported batches): per training task, a context of `distill.context_size` of the
task's own training transitions gives z (the posterior mean), and on up to `ROWS` distinct held-out
transitions of the task (`data/heldout/<i>`: the last `data.holdout` of its episodes, which no stage
trained on)

- td_error: mean (Q_D(s, a, z) − (r + γ(1 − terminal)·Q_D(s', π(s', z), z)))², γ = bcq.gamma
  (NaN for a policy without Q_D(s, a, z): the baselines contextual_bcq and batch_pearl);
- action_error: mean ‖π(s, z) − a‖², the distilled policy against the data's actions (both in [-1, 1]).

Without held-out episodes (`data.holdout: 0`) the rows are training rows and the check says it is
in-sample. Written to `eval/<algo>/offline` (`td_error`, `action_error` (K,), attributes: the means
and how they were made).
"""
from __future__ import annotations

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ...api import Run, load_policy
from ...core import layout, seeds
from ..loaders import load_batches
from ...datasets.batches import HELDOUT

ROWS = 1000


def offline_check(ctx, algo: str, which: str = "final") -> dict:
    r, store = ctx.recipe, ctx.store
    policy = load_policy(Run(store), algo, which, "cpu")
    K = len(ctx.tasks("train"))
    data = load_batches(store, "train", list(range(K)))
    in_sample = not all(store.rows(layout.HELDOUT_BATCH(i)) for i in range(K))
    rows = data if in_sample else load_batches(store, HELDOUT, list(range(K)))
    gen = torch.Generator().manual_seed(seeds.offset(r.seed, "offline"))
    draw = lambda d, n: (torch.rand(K, n, generator=gen) * d.sizes[:, None]).long()
    c = {k: v.numpy() for k, v in data.gather(draw(data, r.distill.context_size)).items()}
    z = policy.infer(c["obs"], c["act"], c["rew"], c["next_obs"]).mean                 # (K, L)
    n = min(ROWS, int(rows.sizes.min()))
    b = rows.gather(torch.stack([torch.randperm(int(s), generator=gen)[:n] for s in rows.sizes]))   # distinct rows
    zz = torch.as_tensor(np.repeat(z[:, None], n, 1))                                  # (K, n, L)
    pi = torch.as_tensor(policy.act(b["obs"].numpy(), zz.numpy(), gen))
    action_error = ((pi - b["act"]) ** 2).sum(-1).mean(1).numpy()
    td_error = np.full(K, np.nan)
    module = policy.module
    if hasattr(module, "q_value"):
        with torch.no_grad():
            nxt = torch.as_tensor(policy.act(b["next_obs"].numpy(), zz.numpy(), gen))
            target = b["rew"] + r.bcq.gamma * (1 - b["terminal"]) * module.q_value(b["next_obs"], nxt, zz)
            td_error = ((module.q_value(b["obs"], b["act"], zz) - target) ** 2).mean(1).numpy()
    path = layout.OFFLINE_CHECK(algo)
    store.write_array(f"{path}/td_error", td_error)
    store.write_array(f"{path}/action_error", action_error)
    summary = {"td_error": float(np.mean(td_error)), "action_error": float(np.mean(action_error)),
               "rows": n, "context_size": r.distill.context_size, "which": which, "in_sample": in_sample}
    store.group(path).attrs.update(summary)
    table = Table("task", "TD error", "action error",
                  title=f"{algo} ({which}): offline check on each training task "
                        f"({n} {'training (in-sample)' if in_sample else 'held-out'} transitions)")
    for i in range(K):
        table.add_row(str(i), f"{td_error[i]:.4g}", f"{action_error[i]:.4g}")
    Console().print(table)
    return summary
