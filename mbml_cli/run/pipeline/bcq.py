"""`mbml bcq`: one BCQ teacher per training task, all trained as one batched network.

Reads the training batches and the recipe's `bcq` section (with `bcq.relabelled`, also the relabel
stage's rewards, eligibility and predicted next states: `data.MixedBatches`); writes (names of `layout.py`)

- BCQ final/<i>, best/<i>: task i's BCQ (vae, actor, critic) — `best` at the evaluation with its
  highest return; meta holds obs_dim, act_dim, iteration, return (and, on `final`, the report:
  random_return, best_batch_return, top10_batch_return, bcq_return, fraction, fraction_top10). `loaders.load_bcq` reads them back as
  one module over all K training tasks;
- METRICS bcq/train (`train_<shard>` for a shard): `iteration` and per task (a (rows, K) column each,
  the table's `tasks` naming them) `vae_loss`, `critic_loss`, `actor_loss`, `q` (means since the last
  row), 20 rows per `eval_every`;
- METRICS bcq/eval (`eval_<shard>`): every `eval_every` iterations and at the end, `iteration` and
  `return` (rows, K): each task's BCQ policy run on its own task (`rollout.run_episode` over the K
  envs, `eval_episodes` episodes);
- CHECKPOINT bcq/<shard>: the resumable checkpoint (networks, targets, Adam states, RNG states,
  iteration, best returns, metric row counts); deleted when the shard is done;
- STAGE bcq/<i>: per-task records. Shards (`--tasks`, the recipe's `shards`) and the stage record
  work as in `mbml collect`.

Resume is exact: mini-batches and noise come from two checkpointed generators, evaluations from
generators seeded by (seed, iteration), so a killed and resumed run ends with the same weights.
At the end the stage prints, per task, a random policy's return, the best episode return in the
task's batch and the mean of its best 10 %, the final BCQ policy's return (mean of
`max(10, eval_episodes)` episodes) and the fraction of the way from random to each top that BCQ
covers (the teacher bar's scale is the second: `read/batches.py`).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from rich.table import Table

from ...core import layout, seeds
from .. import context
from ... import envs as registry
from ...algos import bcq as bcq_algo
from ..loaders import load_batches, load_relabelled
from ...algos.data import MixedBatches, RelabelledPool
from ...algos.nets import device_of, seed_everything, task_state
from ..rollout import run_episode
from ..loop import Job, Schedule, run_loop
from ..progress import Reporter, format_returns
from ...read.batches import batch_tops, fraction
from .common import run_shards, shard_name

REPORT_EPISODES = 10
LOSSES = ("vae_loss", "critic_loss", "actor_loss", "q")


def train(ctx: context.RunContext, todo: list[int], digest: str) -> None:
    """One group of tasks: a batched BCQ over them (here, or in a unit of `mbml run --jobs N`)."""
    BCQRun(ctx, todo, digest).run()


@context.stage("bcq", shard=train)
def bcq(ctx: context.RunContext, tasks: list[int] | None = None, parallel=None):
    return run_shards(ctx, "bcq", tasks, parallel)


def mean_returns(envs, act, episodes: int, seed: int, on_episode=None) -> np.ndarray:
    """Mean return per env of `act` over `episodes` episodes (`on_episode(e)` after each)."""
    total = np.zeros(len(envs))
    for e in range(episodes):
        total += run_episode(envs, act, seed=seeds.derive(seed, e)).returns
        if on_episode is not None:
            on_episode(e + 1)
    return total / episodes


def evaluate(model: bcq_algo.BCQ, envs, episodes: int, seed: int, on_episode=None) -> np.ndarray:
    """Mean return per task of `model`'s policy over `episodes` episodes on its own task's env."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    return mean_returns(envs, lambda obs: model.act(obs, gen), episodes, seed, on_episode)


def random_returns(envs, episodes: int, seed: int, on_episode=None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    act_dim = envs[0].action_space.shape[0]
    return mean_returns(envs, lambda obs: rng.uniform(-1, 1, (len(obs), act_dim)), episodes, seed, on_episode)


class BCQRun(Job):
    """One batched BCQ over the tasks `todo`: data, networks, evaluation envs; trained by `run_loop`.
    A fresh start keeps the earlier weights until new ones replace them: a forced re-run that diverges
    leaves the last good teachers, and its failed record makes everything downstream stale."""

    def __init__(self, ctx: context.RunContext, todo: list[int], digest: str):
        self.ctx, self.store, self.r, self.cfg = ctx, ctx.store, ctx.recipe, ctx.recipe.bcq
        self.todo, self.digest = todo, digest
        self.shard = shard_name(todo, self.r.env.n_train)
        suffix = "" if self.shard == "all" else f"_{self.shard}"
        self.train_table = layout.METRICS("bcq", f"train{suffix}")
        self.eval_table = layout.METRICS("bcq", f"eval{suffix}")
        self.title, self.stage, self.labels, self.tasks = f"bcq {self.shard}", "bcq", todo, todo
        self.checkpoint, self.tables = layout.checkpoint("bcq", self.shard), [self.train_table, self.eval_table]
        self.expected = {"hash": digest, "tasks": todo}
        self.size = f"{len(todo)} tasks × {self.cfg.iterations} iterations"
        self.device = device_of(self.r.device)
        self.data = load_batches(self.store, "train", todo, device=self.device)
        self.K, self.obs_dim, self.act_dim = self.data.n_tasks, self.data.obs.shape[-1], self.data.act.shape[-1]
        params = ctx.tasks("train")
        self.envs = [ctx.dist.make_env(params[i], self.r.env.horizon) for i in todo] \
            if registry.has_environment(ctx.dist) else []         # imported data without an environment

        seed_everything(seeds.stream(self.r.seed, "bcq/init", *todo), self.r.threads)   # network initialisation
        self.model = bcq_algo.BCQ(self.K, self.obs_dim, self.act_dim, self.cfg).to(self.device)
        self.gen_sample = torch.Generator(device=self.device).manual_seed(seeds.stream(self.r.seed, "bcq/sample", *todo))
        self.gen_noise = torch.Generator(device=self.device).manual_seed(seeds.stream(self.r.seed, "bcq/noise", *todo))
        self.tr = bcq_algo.BCQTrainer(self.model, self.cfg.lr, self.teacher_data(todo), self.cfg, self.gen_noise)
        self.best = np.full(self.K, -np.inf)
        self.last_eval = np.full(self.K, np.nan)
        self.started = time.time()

    def teacher_data(self, todo: list[int]):
        """What the teachers' mini-batches come from: their own batches, or with `bcq.relabelled` their
        own and every other task's transitions relabelled with their reward models (data.MixedBatches)."""
        if not self.cfg.relabelled:
            return self.data
        every = list(range(len(self.ctx.tasks("train"))))
        everyone = self.data if todo == every else load_batches(self.store, "train", every, device=self.device)
        rel = load_relabelled(self.store, everyone, next_state=self.cfg.relabelled_next == "predicted").to(self.device)
        pool = RelabelledPool.build(everyone, todo, rel.mean, rel.mask, rel.next_obs)
        return MixedBatches(self.data, everyone, pool, self.cfg.relabelled_share,
                            generator_own=self.cfg.relabelled_generator == "own")

    def run(self) -> None:
        cfg = self.cfg
        run_loop(self.ctx, self, Schedule(cfg.iterations, max(1, cfg.eval_every // 20), cfg.checkpoint_every,
                                          cfg.eval_every, unit="it"))

    # ---- hooks of the loop ---------------------------------------------------------------------
    def state(self) -> tuple[dict, dict, dict]:
        return self.tr.modules(), self.tr.optimisers(), {"rng/sample": self.gen_sample, "rng/noise": self.gen_noise}

    def restore(self, tensors: dict, meta: dict) -> None:
        self.best = np.asarray(meta["best"], np.float64)
        self.last_eval = np.asarray(meta["last_eval"], np.float64)

    def extras(self) -> tuple[dict, dict]:
        return {}, {"best": self.best.tolist(), "last_eval": self.last_eval.tolist()}

    def step(self, t: int) -> list[dict[str, torch.Tensor]]:
        out = self.tr.step(self.gen_sample)
        return [{name: out[name] for name in LOSSES}]

    def evaluate(self, t: int, report) -> np.ndarray | None:
        """Each task's return; task i's best weights so far kept as BCQ best/<i>."""
        if not self.envs:
            return None
        returns = evaluate(self.model, self.envs, self.cfg.eval_episodes, seeds.stream(self.r.seed, "bcq/eval", t))
        self.last_eval = returns
        self.store.log_row(self.eval_table, {"iteration": t, "return": returns}, self.todo)
        for k, i in enumerate(self.todo):
            if returns[k] > self.best[k]:
                self.best[k] = returns[k]
                self.store.save_weights(layout.BCQ("best", i), task_state(self.model, k),
                                        self.meta(k, t, **{"return": float(returns[k])}))
        return returns

    def log(self, t: int, means: dict, result, rate: float) -> tuple[dict, str | None]:
        row = {"iteration": t, **{name: v.cpu().numpy() for name, v in means.items()}}     # (K,) each
        line = format_returns(self.todo, self.last_eval) if result is not None else None
        return {self.train_table: row}, line

    def meta(self, k: int, t: int, **extra) -> dict:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "iteration": t, "task": self.todo[k],
                "hash": self.digest, **extra}

    def finish(self, t: int, report: Reporter) -> None:
        episodes = max(REPORT_EPISODES, self.cfg.eval_episodes)
        final = Reporter(f"bcq {self.shard} final report", 2 * episodes, unit="episode")
        rows = final_report(self.model, self.envs, self.store, self.todo, self.r.seed, self.cfg.eval_episodes,
                            on_episode=lambda e: final.update(e, "BCQ, then random actions"))
        final.close()
        if self.envs:
            table = Table("task", "random", "best in batch", "best 10 % mean", "BCQ", "fraction (best)",
                          "fraction (best 10 %)",
                          title=f"bcq {self.shard}: final policies ({rows[0]['episodes']} episodes each)")
        else:                                   # no environment: only the batch's own returns are known
            report.console.print(f"bcq {self.shard}: no environment to run the final policies on; eval's offline "
                                 "check measures the distilled policy", highlight=False, soft_wrap=True)
            table = Table("task", "best episode in batch")
        for k, (i, row) in enumerate(zip(self.todo, rows)):
            self.store.save_weights(layout.BCQ("final", i), task_state(self.model, k), self.meta(k, t, **row))
            if not np.isfinite(self.best[k]):                   # never evaluated here: no best of this run
                self.store.delete(layout.BCQ("best", i))
            self.store.set_stage(layout.stage_key("bcq", i), status="done", hash=self.digest, started=self.started,
                                 ended=time.time(), progress=1.0, shard=self.shard, **row)
            cells = (row["random_return"], row["best_batch_return"], row["top10_batch_return"], row["bcq_return"]) \
                if self.envs else (row["best_batch_return"],)
            table.add_row(str(i), *(f"{v:.1f}" if np.isfinite(v) else "— (no finished episode)" for v in cells),
                          *([f"{row['fraction']:.2f}", f"{row['fraction_top10']:.2f}"] if self.envs else []))
        for env in self.envs:
            env.close()
        report.console.print(table)


def final_report(model: bcq_algo.BCQ | None, envs, store, tasks: list[int], seed: int, eval_episodes: int = 1,
                 on_episode=None, act=None) -> list[dict]:
    """Per task: a random policy's return, the best episode return in the task's batch and the mean of
    its best 10 % of episodes, `model`'s return (means over `max(REPORT_EPISODES, eval_episodes)`
    episodes) and the fraction of the way from random to each top that BCQ covers (`read/batches.py`).
    `act` (numpy (K, obs) → (K, act)) scores another policy in `model`'s place (bench/teachers.py)."""
    episodes = max(REPORT_EPISODES, eval_episodes) if envs else 0
    tick = on_episode or (lambda e: None)
    if envs:
        final = evaluate(model, envs, episodes, seeds.stream(seed, "bcq/report"), tick) if act is None else \
            mean_returns(envs, act, episodes, seeds.stream(seed, "bcq/report"), tick)
        rand = random_returns(envs, episodes, seeds.stream(seed, "bcq/random"), lambda e: tick(episodes + e))
    else:                                       # no environment: only the batches' own returns are known
        final = rand = np.full(len(tasks), np.nan)
    rows = []
    for k, i in enumerate(tasks):
        best, top = batch_tops(store, i)
        rows.append({"return": float(final[k]), "random_return": float(rand[k]), "best_batch_return": best,
                     "top10_batch_return": top, "bcq_return": float(final[k]),
                     "fraction": float(fraction(final[k], rand[k], best)),
                     "fraction_top10": float(fraction(final[k], rand[k], top)), "episodes": episodes})
    return rows
