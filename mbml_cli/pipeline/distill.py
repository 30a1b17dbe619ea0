"""`mbml distill --algo A`: train the distilled policy of `algos/mbml.py` (MBML or an ablation)
from the batches, the K BCQ teachers and the relabelled transitions.

Reads  data/train, models/bcq (via `algos.bcq.load_bcq`), relabel/ (mbml, no_triplet), tasks/test.
Writes metrics/distill/<algo>   one row per epoch: step, epoch, loss_q, loss_g, loss_xi,
                                loss_triplet, kl, valid_pairs, wall
       eval/<algo>/history      one row per evaluation: epoch, score, returns (T, E), z_mean (T, L)
       models/distill/<algo>/{final,best}   the policy (weights + the meta needed to rebuild it)
       models/distill/<algo>/checkpoint     policy + Adam state + RNG state + row counts

Exact resume: a checkpoint is written every `distill.checkpoint_every` epochs (and after the last).
A run killed later restarts from it with the same generator state and rolls the metric and history
tables back to the checkpoint's row counts, so the resumed run writes the same numbers as an
uninterrupted one. Evaluations draw from their own generators, seeded by (seed, epoch).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from rich.console import Console

from ..algos.batch_pearl import PearlPolicy, PearlTrainer
from ..algos.contextual_bcq import ContextualBCQPolicy, ContextualBCQTrainer
from ..algos.mbml import VARIANTS, DistilledPolicy, MBMLTrainer, Relabelled, Teachers
from ..api import Policy, weights_path
from ..data import TaskData
from ..errors import StageError
from ..evaluate import evaluate_tasks, make_eval_envs
from ..nets import device_of, seed_everything
from ..stages import RunContext, stage

SEED_OFFSET = 4_000
BASELINES = ("contextual_bcq", "batch_pearl")        # no teachers, no relabelling (issue #5)
ALGOS = (*VARIANTS, *BASELINES)
ALGO_SEEDS = {name: k for k, name in enumerate(ALGOS)}
console = Console()


def eval_seed(seed: int, epoch: int) -> int:
    """Same for every algorithm at the same epoch: their evaluations see the same resets."""
    return 1_000_003 * (seed + 1) + 7919 * epoch


# ---- inputs ----------------------------------------------------------------------------------------
def load_teachers(ctx: RunContext, device) -> Teachers:
    try:
        from ..algos.bcq import load_bcq
    except ModuleNotFoundError as e:
        raise StageError("mbml distill: needs mbml_cli/algos/bcq.py (`mbml bcq`), not built yet") from e
    bcq = load_bcq(ctx.store, ctx.recipe, which="final", device=device)
    for p in bcq.parameters():
        p.requires_grad_(False)
    return Teachers.from_bcq(bcq)


def ground_truth_relabel(ctx: RunContext, data: TaskData) -> Relabelled:
    """gt_relabel: the distribution's true reward of task i on task j's transitions, all eligible."""
    tasks = ctx.tasks("train")
    K, N = data.n_tasks, data.obs.shape[1]
    np_ = {f: getattr(data, f).cpu().numpy() for f in ("obs", "act", "next_obs", "info")}
    mean = np.stack([np.asarray(ctx.dist.reward(np_["obs"], np_["act"], np_["next_obs"], np_["info"], tasks[i]),
                                dtype=np.float32) for i in range(K)])                         # (K, K, N)
    real = torch.arange(N)[None, None, :] < data.sizes.cpu()[None, :, None]
    mask = real & ~torch.eye(K, dtype=torch.bool)[:, :, None]
    return Relabelled(torch.from_numpy(mean), mask)


def load_relabelled(ctx: RunContext, data: TaskData) -> Relabelled:
    store = ctx.store
    if store.stage("relabel").get("status") != "done":
        raise StageError(f"{store.path}: stage 'relabel' must finish before this distill "
                         f"(run `mbml relabel {store.path}`)")
    if list(store.group("relabel").attrs.get("sizes", [])) != data.sizes.tolist():
        raise StageError(f"{store.path}: relabel/ was made from other data; run `mbml relabel {store.path} --force`")
    nxt = store.read_array("relabel/next_obs") if store.exists("relabel/next_obs") else None
    return Relabelled(torch.from_numpy(store.read_array("relabel/mean")),
                      torch.from_numpy(store.read_array("relabel/mask")).bool(),
                      None if nxt is None else torch.from_numpy(nxt))


def data_stats(data: TaskData):
    valid = torch.arange(data.obs.shape[1], device=data.obs.device)[None, :] < data.sizes[:, None]
    obs, rew = data.obs[valid], data.rew[valid]
    return obs.mean(0), obs.std(0).clamp_min(1e-3), rew.mean(), rew.std().clamp_min(1e-3)


def make_trainer(ctx: RunContext, algo: str, data: TaskData, device, teachers: Teachers | None):
    """The algorithm's trainer (`step(generator) -> losses`, `modules()`, `optimisers()`, `.policy`)."""
    r, cfg = ctx.recipe, ctx.recipe.distill
    obs_dim, act_dim = data.obs.shape[-1], data.act.shape[-1]
    if algo == "contextual_bcq":
        policy = ContextualBCQPolicy(obs_dim, act_dim, cfg.latent_dim, cfg.encoder_hidden, cfg.q_hidden,
                                     cfg.g_hidden, cfg.xi_hidden, r.bcq.phi, r.bcq.n_candidates)
    elif algo == "batch_pearl":
        policy = PearlPolicy(obs_dim, act_dim, cfg.latent_dim, cfg.encoder_hidden, cfg.q_hidden)
    else:
        variant = VARIANTS[algo]
        rel = None
        if variant.needs_relabel:
            rel = ground_truth_relabel(ctx, data) if variant.ground_truth else load_relabelled(ctx, data)
            rel = Relabelled(rel.mean.to(device), rel.mask.to(device),
                             None if rel.next_obs is None else rel.next_obs.to(device))
        teachers = teachers or load_teachers(ctx, device)
        policy = DistilledPolicy(obs_dim, act_dim, teachers.vae_latent, cfg.latent_dim, cfg.encoder_hidden,
                                 cfg.q_hidden, cfg.g_hidden, cfg.xi_hidden, r.bcq.phi, r.bcq.n_candidates)
    policy = policy.to(device)
    policy.set_stats(*data_stats(data))
    if algo == "contextual_bcq":
        return ContextualBCQTrainer(policy, data, cfg, r.bcq)
    if algo == "batch_pearl":
        return PearlTrainer(policy, data, cfg, r.bcq.gamma, r.bcq.tau)
    return MBMLTrainer(policy, data, teachers, rel, variant, cfg)


# ---- checkpoints -----------------------------------------------------------------------------------
def checkpoint_tensors(trainer, gen: torch.Generator) -> dict:
    """Every module's state and every optimiser's per-parameter state, as plain tensors."""
    out = {}
    for name, module in trainer.modules().items():
        out.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    for name, opt in trainer.optimisers().items():
        for i, state in opt.state_dict()["state"].items():
            for key, value in state.items():
                out[f"opt.{name}.{i}.{key}"] = torch.as_tensor(value)
    out["rng"] = gen.get_state()
    return out


def restore_checkpoint(tensors: dict, trainer, gen: torch.Generator) -> None:
    for name, module in trainer.modules().items():
        module.load_state_dict({k[len(name) + 1:]: torch.as_tensor(v) for k, v in tensors.items()
                                if k.startswith(f"{name}.")})
    for name, opt in trainer.optimisers().items():
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith(f"opt.{name}."):
                i, field = key[len(f"opt.{name}."):].split(".", 1)
                state.setdefault(int(i), {})[field] = torch.as_tensor(value)
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    gen.set_state(torch.as_tensor(tensors["rng"], dtype=torch.uint8))


# ---- the stage -------------------------------------------------------------------------------------
@stage("distill", sections=("collect", "bcq", "reward", "relabel", "distill", "eval"), needs=("collect", "bcq"))
def distill(ctx: RunContext, algo: str = "mbml", teachers: Teachers | None = None) -> None:
    if algo not in ALGOS:
        raise StageError(f"mbml distill --algo {algo}: unknown algorithm (one of {', '.join(ALGOS)})")
    r, cfg, store = ctx.recipe, ctx.recipe.distill, ctx.store
    device = device_of(r.device)
    gen = seed_everything(r.seed + SEED_OFFSET + 100 * ALGO_SEEDS[algo], r.threads)
    K = len(ctx.tasks("train"))
    data = TaskData.load(store, "train", list(range(K)), device=device)
    trainer = make_trainer(ctx, algo, data, device, teachers)
    policy = trainer.policy

    base, metrics, history = f"models/distill/{algo}", f"metrics/distill/{algo}", f"eval/{algo}/history"
    ck_path = f"{base}/checkpoint"
    start, best = 0, {"score": -np.inf, "epoch": -1}
    if ctx.resume and store.has_weights(ck_path):
        tensors, meta = store.load_weights(ck_path)
        restore_checkpoint(tensors, trainer, gen)
        start, best = meta["epoch"] + 1, meta["best"]
        store.set_rows(metrics, meta["metric_rows"])
        store.set_rows(history, meta["history_rows"])
        console.print(f"distill/{algo}: resuming after epoch {meta['epoch'] + 1}")
    else:
        for path in (metrics, history):
            store.delete(path)
        for which in ("checkpoint", "final", "best"):
            store.delete(f"{base}/{which}")

    test_tasks = ctx.tasks("test")
    envs = make_eval_envs(ctx.dist, test_tasks, r.env.horizon, r.eval.repeats)
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        policy.train()
        sums: dict[str, float] = {}
        for _ in range(cfg.steps_per_epoch):
            losses = trainer.step(gen)
            if not np.isfinite(losses["total"]):
                raise StageError(f"distill/{algo}: loss is {losses['total']} at epoch {epoch + 1}")
            for k, v in losses.items():
                if k != "total":
                    sums[k] = sums.get(k, 0.0) + v
        row = {"step": (epoch + 1) * cfg.steps_per_epoch, "epoch": epoch + 1,
               **{k: v / cfg.steps_per_epoch for k, v in sums.items()}, "wall": time.time() - t0}
        store.log("distill", algo, row)

        last = epoch + 1 == cfg.epochs
        if envs and ((epoch + 1) % cfg.eval_every == 0 or last):      # no test envs: imported data, no env
            policy.eval()
            result = evaluate_tasks(envs, Policy(policy), r.eval.episodes, r.eval.skip, eval_seed(r.seed, epoch),
                                    r.eval.repeats)
            store.append_rows(history, {"epoch": np.array([epoch + 1]), "score": np.array([result.score]),
                                        "returns": result.returns[None].astype(np.float32),
                                        "z_mean": result.z_mean[None].astype(np.float32)})
            if result.score > best["score"]:
                best = {"score": float(result.score), "epoch": epoch + 1}
                store.save_weights(f"{base}/best", policy.state_dict(), {**policy.meta, **best, "algo": algo})
            console.print(f"distill/{algo} epoch {epoch + 1}/{cfg.epochs}: test score {result.score:.2f} "
                          f"(best {best['score']:.2f} @ {best['epoch']}), "
                          + ", ".join(f"{k} {row[k]:.3g}" for k in list(sums)[:3]), highlight=False)
        if (epoch + 1) % cfg.checkpoint_every == 0 or last:
            store.save_weights(ck_path, checkpoint_tensors(trainer, gen),
                               {"epoch": epoch, "best": best, "metric_rows": store.rows(metrics),
                                "history_rows": store.rows(history)})
        ctx.progress((epoch + 1) / cfg.epochs)
    for env in envs:
        env.close()
    store.save_weights(f"{base}/final", policy.state_dict(),
                       {**policy.meta, "epoch": cfg.epochs, "algo": algo, "best_epoch": best["epoch"]})
