"""`mbml relabel`: relabel every task's transitions with every other task's reward ensemble, once
(Eq. 7; "we also need to relabel the transitions only once before training", Sec. 5.2).

For every ordered pair (i, j), over all N rows of task j's batch:
  relabel/mean (K, K, N)  ensemble mean of R̂_i(s_j, a_j)            — the relabelled reward
  relabel/std  (K, K, N)  ensemble std                                 — its uncertainty
  relabel/mask (K, K, N)  eligible: std < relabel.std_threshold, a real row, and i ≠ j
  relabel/eligible (K, K) fraction of task j's rows eligible for R̂_i
and, when `reward.next_state` (tasks differ in dynamics), the next-state ensemble's prediction
  relabel/next_obs (K, K, N, obs_dim) and relabel/next_std (K, K, N) (mean over state dimensions),
  with `next_std < relabel.next_state_threshold` required for eligibility as well.
Row (i, i) is computed but never eligible: a task's own transitions keep their true reward.
"""
from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from ...core import layout
from ...algos.reward_model import predict_chunked
from ...algos.data import TaskData
from ..loaders import load_batches, load_ensemble
from ...algos.nets import device_of
from ..progress import Reporter
from ..context import RunContext, stage


def relabel_all(data: TaskData, model, ns_model=None, std_threshold: float = 0.05,
                next_state_threshold: float = 0.2, on_task=None) -> dict[str, np.ndarray]:
    """Every task's ensemble on every task's rows. Returns the arrays described above."""
    K, N = data.n_tasks, data.obs.shape[1]
    mean = np.zeros((K, K, N), np.float32)
    std = np.full((K, K, N), np.inf, np.float32)
    out = {}
    if ns_model is not None:
        out["next_obs"] = np.zeros((K, K, N, data.obs.shape[-1]), np.float32)
        out["next_std"] = np.full((K, K, N), np.inf, np.float32)
    for j in range(K):                      # once per task's batch; all K ensembles at a time
        n = int(data.sizes[j])
        m, s = predict_chunked(model, data.obs[j, :n], data.act[j, :n])
        mean[:, j, :n], std[:, j, :n] = m[..., 0].cpu().numpy(), s[..., 0].cpu().numpy()
        if ns_model is not None:
            m, s = predict_chunked(ns_model, data.obs[j, :n], data.act[j, :n])
            out["next_obs"][:, j, :n] = m.cpu().numpy()
            out["next_std"][:, j, :n] = s.mean(-1).cpu().numpy()
        if on_task is not None:
            on_task(j)
    sizes = data.sizes.cpu().numpy()
    real = np.arange(N)[None, None, :] < sizes[None, :, None]
    mask = (std < std_threshold) & real & ~np.eye(K, dtype=bool)[:, :, None]       # Eq. 7 eligibility
    if ns_model is not None:
        mask &= out["next_std"] < next_state_threshold
    eligible = mask.sum(-1) / np.maximum(sizes[None, :], 1)
    return {"mean": mean, "std": np.where(real, std, 0.0).astype(np.float32), "mask": mask,
            "eligible": eligible, **out}


def eligible_table(eligible: np.ndarray, title: str) -> Table:
    K = eligible.shape[0]
    table = Table(*(["R̂_i \\ task j"] + [str(j) for j in range(K)] + ["mean"]), title=title)
    off = ~np.eye(K, dtype=bool)
    for i in range(K):
        cells = ["—" if i == j else f"{100 * eligible[i, j]:.0f}" for j in range(K)]
        table.add_row(str(i), *cells, f"{100 * eligible[i][off[i]].mean():.1f}" if K > 1 else "")
    return table


@stage("relabel")
def relabel(ctx: RunContext) -> None:
    store, r = ctx.store, ctx.recipe
    K = len(ctx.tasks("train"))
    device = device_of(r.device)
    data = load_batches(store, "train", list(range(K)), device=device)
    model = load_ensemble(store, "reward", device)
    ns_model = load_ensemble(store, "next_state", device) if r.reward.next_state else None
    report = Reporter("relabel", K, unit="task")

    def on_task(j):
        ctx.progress(0.9 * (j + 1) / K)
        report.update(j + 1)
    try:
        out = relabel_all(data, model, ns_model, r.relabel.std_threshold, r.relabel.next_state_threshold, on_task)
    finally:
        report.close()
    for name in ("next_obs", "next_std"):
        if name not in out:
            store.delete(layout.RELABEL(name))
    for name, value in out.items():
        store.write_array(layout.RELABEL(name), value)
    store.group(layout.RELABEL_INFO()).attrs.update({"std_threshold": r.relabel.std_threshold,
                                                     "next_state_threshold": r.relabel.next_state_threshold,
                                                     "sizes": data.sizes.cpu().tolist()})
    off = ~np.eye(K, dtype=bool)
    frac = float(out["eligible"][off].mean()) if K > 1 else 0.0
    Console().print(eligible_table(out["eligible"], f"eligible relabelled transitions, % "
                                                     f"(std < {r.relabel.std_threshold}); mean {100 * frac:.1f}%"))
