"""`mbml distill --algo A`: train the distilled policy of `algos/mbml.py` (MBML or an ablation)
from the batches, the K BCQ teachers and the relabelled transitions.

Reads  the train batches, the BCQ teachers (`loaders.load_bcq`), the relabelled rewards (mbml,
       no_triplet), the test tasks.
Writes (`layout.py`) METRICS distill/<algo>  one row per epoch: step, epoch, loss_q, loss_g, loss_xi,
                                             loss_triplet, kl, valid_pairs, wall
       EVAL_HISTORY   one row per evaluation: epoch, score, returns (T, E), z_mean (T, L)
       AGENT_HISTORY  per-task agents (MetaGenRL): each one's return on its own training task, per evaluation
       DISTILL        final and best: the policy (weights + the meta needed to rebuild it)
       DISTILL_CHECKPOINT  policy + Adam state + RNG state + row counts (`checkpoint.py`)

Exact resume: a checkpoint is written every `distill.checkpoint_every` epochs (and after the last).
A run killed later restarts from it with the same generator state and rolls the metric and history
tables back to the checkpoint's row counts, so the resumed run writes the same numbers as an
uninterrupted one. Evaluations draw from their own generators, seeded by (seed, epoch).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ...algos.mbml import Relabelled, Teachers
from ...algos.registry import ALGOS
from ...core import layout, seeds
from ...api import Policy
from ...recipe.config import Recipe
from ...algos.data import TaskData
from ..loaders import load_batches, load_bcq, load_relabelled
from ..loop import Job, Schedule, run_loop
from .common import check_algo
from ..evaluate import evaluate_tasks, make_eval_envs
from ..rollout import make_envs, run_episode
from ...algos.nets import device_of, seed_everything
from ..context import RunContext, stage



def eval_seed(seed: int, epoch: int) -> int:
    """Same for every algorithm at the same epoch: their evaluations see the same resets."""
    return 1_000_003 * (seed + 1) + 7919 * epoch


# ---- inputs ----------------------------------------------------------------------------------------
def load_teachers(ctx: RunContext, device) -> Teachers:
    bcq = load_bcq(ctx.store, ctx.recipe, device=device)
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


def make_trainer(ctx: RunContext, algo: str, data: TaskData, device, teachers: Teachers | None):
    """The algorithm's trainer, with the teachers and relabelled rewards its spec says it reads."""
    spec, rel = ALGOS[algo], None
    if "relabel" in spec.needs:
        rel = load_relabelled(ctx.store, data)
    elif spec.variant is not None and spec.variant.true_rewards:
        rel = ground_truth_relabel(ctx, data)
    if rel is not None:
        rel = rel.to(device)
    if "bcq" in spec.needs:
        teachers = teachers or load_teachers(ctx, device)
    return build_trainer(ctx.recipe, algo, data, device, teachers, rel)


def build_trainer(r: Recipe, algo: str, data: TaskData, device, teachers: Teachers | None = None,
                  rel: Relabelled | None = None):
    """The algorithm's trainer (`step(generator) -> losses`, `modules()`, `optimisers()`, `.policy`)."""
    return ALGOS[algo].build_trainer(r, data, device, teachers, rel)


def schedule_lr(optimisers: dict[str, torch.optim.Optimizer], schedule: str, epoch: int, epochs: int) -> None:
    """`distill.lr_schedule` at the start of `epoch`: constant leaves every rate alone; cosine sets
    each group's rate to its initial one × ½(1 + cos(π · epoch / epochs)). A resumed run builds its
    optimisers afresh (initial rates) and so sets the same rates."""
    if schedule == "constant":
        return
    factor = 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    for opt in optimisers.values():
        for group in opt.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


# ---- the stage -------------------------------------------------------------------------------------
@stage("distill", check=check_algo)
def distill(ctx: RunContext, algo: str = "mbml", teachers: Teachers | None = None) -> None:
    r, cfg, store = ctx.recipe, ctx.recipe.distill, ctx.store
    device = device_of(r.device)
    gen = seed_everything(seeds.offset(r.seed, "distill", ALGOS[algo].salt), r.threads, device)
    K = len(ctx.tasks("train"))
    data = load_batches(store, "train", list(range(K)), device=device)
    trainer = make_trainer(ctx, algo, data, device, teachers)
    policy = trainer.policy

    test_tasks = ctx.tasks("test")
    envs = make_eval_envs(ctx.dist, test_tasks, r.env.horizon, r.eval.repeats)
    own = getattr(trainer, "agents_act", None)           # per-task agents (MetaGenRL): also on their own tasks
    own_envs = make_envs(ctx.dist, ctx.tasks("train"), r.env.horizon) if own and envs else []
    spe = cfg.steps_per_epoch

    class Distilling(Job):
        title, stage, size = f"distill {algo}", f"distill/{algo}", f"{cfg.epochs} epochs × {spe} steps"
        metrics, history = layout.METRICS("distill", algo), layout.EVAL_HISTORY(algo)
        agents = layout.AGENT_HISTORY(algo)
        checkpoint, tables = layout.checkpoint("distill", algo), [metrics, history] + ([agents] if own_envs else [])
        best = {"score": -np.inf, "epoch": -1}

        def state(self):
            return trainer.modules(), trainer.optimisers(), {"rng": gen}

        def start(self):
            for which in ("final", "best"):
                store.delete(layout.DISTILL(algo, which))

        def restore(self, tensors, meta):
            self.best = meta["best"]

        def extras(self):
            return {}, {"best": self.best}

        def step(self, t):
            epoch, i = divmod(t, spe)
            if i == 0:
                schedule_lr(trainer.optimisers(), cfg.lr_schedule, epoch, cfg.epochs)
                policy.train()
            return [trainer.step(gen)]

        def evaluate(self, t, report):
            epoch = t // spe
            policy.eval()
            result = evaluate_tasks(envs, Policy(policy), r.eval.episodes, r.eval.skip, eval_seed(r.seed, epoch - 1),
                                    r.eval.repeats, lambda e: report.update(t, f"evaluating: episode {e}/{r.eval.episodes}"))
            store.append_rows(self.history, {"epoch": np.array([epoch]), "score": np.array([result.score]),
                                             "returns": result.returns[None].astype(np.float32),
                                             "z_mean": result.z_mean[None].astype(np.float32)})
            if own_envs:
                returns = run_episode(own_envs, own, seed=eval_seed(r.seed, epoch - 1)).returns
                store.append_rows(self.agents, {"epoch": np.array([epoch]), "returns": returns[None].astype(np.float32)})
            if result.score > self.best["score"]:
                self.best = {"score": float(result.score), "epoch": epoch}
                store.save_weights(layout.DISTILL(algo, "best"), policy.state_dict(), {**policy.meta, **self.best, "algo": algo})
            return result

        def log(self, t, means, result, rate):
            losses = [k for k in means if k != "total"]
            row = {"step": t, "epoch": t // spe, **{k: float(means[k]) for k in losses}, "wall": spe / rate}
            line = None if result is None else (
                f"epoch {t // spe}/{cfg.epochs}: test score {result.score:.2f} (best {self.best['score']:.2f} "
                f"@ {self.best['epoch']}), " + ", ".join(f"{k} {row[k]:.3g}" for k in losses[:3]))
            return {self.metrics: row}, line

        def finish(self, t, report):
            for env in envs + own_envs:
                env.close()
            store.save_weights(layout.DISTILL(algo, "final"), policy.state_dict(),
                               {**policy.meta, "epoch": cfg.epochs, "algo": algo, "best_epoch": self.best["epoch"]})

    run_loop(ctx, Distilling(), Schedule(cfg.epochs * spe, spe, cfg.checkpoint_every * spe, cfg.eval_every * spe if envs else 0,
                                         keep_checkpoint=True))
