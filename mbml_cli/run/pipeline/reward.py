"""`mbml reward`: fit the per-task reward ensembles R̂_i (and next-state ensembles where tasks differ
in dynamics), then measure each task's ensemble on held-out data of its own task and of every other
task against the true reward (the paper's Fig. 7).

Writes (`layout.py`) REWARD_MODEL reward (and next_state), METRICS reward/train
(step, loss, next_state_loss) and the REWARD_ERROR matrices `error` (K, K) — entry (i, j) is
the MSE of R̂_i's ensemble mean on task j's held-out transitions against task i's true reward —
`error_single` (the same for one member alone) and `error_next_state`
(K,), own held-out only. The stage is short: an interrupted run starts again from the beginning.
"""
from __future__ import annotations

import numpy as np
import torch

from ... import envs as registry
from ...algos.reward_model import EnsembleModel, make_split, predict_chunked, train_ensemble, member_zero
from .. import divergence
from ...core import layout, seeds
from ...algos.data import TaskData
from ..loaders import load_batches, save_ensemble
from ...algos.nets import device_of, seed_everything
from ..progress import Reporter
from ..context import RunContext, stage



def valid_rows(data: TaskData) -> torch.Tensor:
    return torch.arange(data.obs.shape[1], device=data.sizes.device)[None, :] < data.sizes[:, None]


def fit(ctx: RunContext, data: TaskData, target: torch.Tensor, residual: bool, split, gen, log_key: str,
        progress_span: tuple[float, float]) -> EnsembleModel:
    cfg = ctx.recipe.reward
    K, obs_dim, act_dim = data.n_tasks, data.obs.shape[-1], data.act.shape[-1]
    model = EnsembleModel(K, cfg.ensemble_size, obs_dim, act_dim, cfg.hidden, target.shape[-1],
                          residual).to(data.obs.device)
    valid = valid_rows(data)
    x = torch.cat([data.obs, data.act], -1)[valid]
    y = (target - data.obs if residual else target)[valid]
    model.set_stats(x.mean(0), x.std(0).clamp_min(1e-3), y.mean(0), y.std(0).clamp_min(1e-3))
    lo, hi = progress_span
    rows = []
    report = Reporter(f"reward {log_key}", cfg.steps, unit="step")

    def on_log(step, loss):
        divergence.check("reward", step, **{f"{log_key} loss": loss})
        rows.append((step, loss))
        ctx.progress(lo + (hi - lo) * step / cfg.steps)
        report.update(step, f"loss {loss:.4f}")

    try:
        train_ensemble(model, data.obs, data.act, target, split, cfg, gen, on_log, max(1, cfg.steps // 50))
    finally:
        report.close()
    for step, loss in rows:
        ctx.store.log("reward", log_key, {"step": step, "loss": loss})
    return model


def true_rewards(dist, tasks: np.ndarray, obs, act, next_obs, info) -> np.ndarray:
    """(K, n): every task's ground-truth reward on the same n transitions."""
    return np.stack([np.asarray(dist.reward(obs, act, next_obs, info, t), dtype=np.float64) for t in tasks])


@stage("reward")
def reward(ctx: RunContext) -> None:
    r, cfg, store = ctx.recipe, ctx.recipe.reward, ctx.store
    device = device_of(r.device)
    gen = seed_everything(seeds.offset(r.seed, "reward"), r.threads, device)
    tasks = ctx.tasks("train")
    K = len(tasks)
    data = load_batches(store, "train", list(range(K)), device=device)
    split = make_split(data.sizes, cfg.holdout, gen)
    for name in ("train", "next_state"):
        store.set_rows(layout.METRICS("reward", name), 0)

    span = (0.0, 0.5) if cfg.next_state else (0.0, 0.9)
    model = fit(ctx, data, data.rew.unsqueeze(-1), False, split, gen, "train", span)
    save_ensemble(store, "reward", model)
    ns_model = None
    if cfg.next_state:
        ns_model = fit(ctx, data, data.next_obs, True, split, gen, "next_state", (0.5, 0.9))
        save_ensemble(store, "next_state", ns_model)

    # ---- Fig. 7: error of R̂_i on held-out transitions of task j against task i's true reward ----
    err = np.zeros((K, K))
    err_single = np.zeros((K, K))
    err_ns = np.zeros(K)
    host = lambda t: t.double().cpu().numpy()                          # after training, once per task
    for j in range(K):
        rows = split.perm[j, split.n_fit[j]:split.sizes[j]]
        if len(rows) == 0:
            rows = split.perm[j, :split.sizes[j]]
        o, a, no, inf = (data.obs[j, rows], data.act[j, rows], data.next_obs[j, rows], data.info[j, rows])
        if registry.has_environment(ctx.dist):
            truth = true_rewards(ctx.dist, tasks, *(t.cpu().numpy() for t in (o, a, no, inf)))   # (K, n)
        else:                  # imported data without an environment: only task j's own rewards are known
            truth = np.full((K, len(rows)), np.nan)
            truth[j] = host(data.rew[j, rows])
        mean, _ = predict_chunked(model, o, a)
        single = member_zero(model, o.unsqueeze(0).expand(K, -1, -1), a.unsqueeze(0).expand(K, -1, -1))
        err[:, j] = ((host(mean[..., 0]) - truth) ** 2).mean(1)
        err_single[:, j] = ((host(single[..., 0]) - truth) ** 2).mean(1)
        if ns_model is not None:
            ns_mean, _ = predict_chunked(ns_model, o, a)
            err_ns[j] = float(((ns_mean[j] - no) ** 2).mean())
    known = np.ones_like(err, bool) if registry.has_environment(ctx.dist) else np.eye(K, dtype=bool)   # own rewards only
    divergence.check("reward", cfg.steps, **{"held-out error": err[known], "held-out error (one member)":
                                             err_single[known], "next-state error": err_ns})
    store.write_array(layout.REWARD_ERROR("error"), err, {"doc": "MSE of R̂_i (row) on task j's (column) held-out "
                                                          "transitions against task i's true reward"})
    store.write_array(layout.REWARD_ERROR("error_single"), err_single, {"doc": "as error, one member alone"})
    if ns_model is not None:
        store.write_array(layout.REWARD_ERROR("error_next_state"), err_ns,
                          {"doc": "MSE of each task's next-state ensemble on its own held-out transitions"})
    off = ~np.eye(K, dtype=bool)
    own = f"held-out RMSE own task {np.sqrt(np.diag(err)).mean():.4f} (one member {np.sqrt(np.diag(err_single)).mean():.4f})"
    if K > 1 and np.isfinite(err[off]).all():
        other = (f"other tasks {np.sqrt(err[off]).mean():.4f} (one member {np.sqrt(err_single[off]).mean():.4f})")
    else:                                   # imported data without an environment: no true reward of task i on j's data
        other = "other tasks: not measured (no true reward of one task on another's data without an environment)"
    print(f"reward models: {own}, {other}")
