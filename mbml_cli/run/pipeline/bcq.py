"""`mbml bcq`: one BCQ teacher per training task, all trained as one batched network.

Reads the training batches and the recipe's `bcq` section; writes (names of `layout.py`)

- BCQ final/<i>, best/<i>: task i's BCQ (vae, actor, critic) — `best` at the evaluation with its
  highest return; meta holds obs_dim, act_dim, iteration, return (and, on `final`, the report:
  random_return, best_batch_return, bcq_return, fraction). `loaders.load_bcq` reads them back as
  one module over all K training tasks;
- METRICS bcq/train (`train_<shard>` for a shard): per task `vae_loss_<i>`, `critic_loss_<i>`,
  `actor_loss_<i>`, `q_<i>` (means since the last row), 20 rows per `eval_every`;
- METRICS bcq/eval (`eval_<shard>`): every `eval_every` iterations and at the end, `iteration`,
  `return` (mean over tasks) and a column `return_<i>` per task: each task's BCQ policy run on its
  own task (`rollout.run_episode` over the K envs, `eval_episodes` episodes);
- CHECKPOINT bcq/<shard>: the resumable checkpoint (networks, targets, Adam states, RNG states,
  iteration, best returns, metric row counts); deleted when the shard is done;
- STAGE bcq/<i>: per-task records. Shards (`--tasks`, the recipe's `shards`) and the stage record
  work as in `mbml collect`.

Resume is exact: mini-batches and noise come from two checkpointed generators, evaluations from
generators seeded by (seed, iteration), so a killed and resumed run ends with the same weights.
At the end the stage prints, per task, a random policy's return, the best episode return in the
task's batch, the final BCQ policy's return (mean of `max(10, eval_episodes)` episodes) and the
fraction of the way from the first to the second that BCQ covers.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from rich.table import Table

from ...core import checkpoint, layout
from .. import context, divergence
from ... import envs as registry
from ...algos import bcq as bcq_algo
from ..loaders import load_batches
from ...algos.nets import device_of, seed_everything, task_state
from ..rollout import run_episode
from ..progress import Reporter, format_returns
from ...read.batches import best_batch_return
from .common import derive_seed, run_shards, shard_name

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
        total += run_episode(envs, act, seed=derive_seed(seed, e)).returns
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


class BCQRun:
    """One batched BCQ over the tasks `todo`: data, networks, evaluation envs, checkpoint."""

    def __init__(self, ctx: context.RunContext, todo: list[int], digest: str):
        self.ctx, self.store, self.r, self.cfg = ctx, ctx.store, ctx.recipe, ctx.recipe.bcq
        self.todo, self.digest = todo, digest
        self.shard = shard_name(todo, self.r.env.n_train)
        suffix = "" if self.shard == "all" else f"_{self.shard}"
        self.train_table = layout.METRICS("bcq", f"train{suffix}")
        self.eval_table = layout.METRICS("bcq", f"eval{suffix}")
        self.checkpoint = layout.checkpoint("bcq", self.shard)
        self.device = device_of(self.r.device)
        self.data = load_batches(self.store, "train", todo, device=self.device)
        self.K, self.obs_dim, self.act_dim = self.data.n_tasks, self.data.obs.shape[-1], self.data.act.shape[-1]
        params = ctx.tasks("train")
        self.envs = [ctx.dist.make_env(params[i], self.r.env.horizon) for i in todo] \
            if registry.has_environment(ctx.dist) else []         # imported data without an environment

        seed_everything(derive_seed(self.r.seed, 11, *todo), self.r.threads)   # network initialisation
        self.model = bcq_algo.BCQ(self.K, self.obs_dim, self.act_dim, self.cfg).to(self.device)
        self.tr = bcq_algo.BCQTrainer(self.model, self.cfg.lr)
        self.gen_sample = torch.Generator(device=self.device).manual_seed(derive_seed(self.r.seed, 12, *todo))
        self.gen_noise = torch.Generator(device=self.device).manual_seed(derive_seed(self.r.seed, 13, *todo))
        self.it = 0
        self.best = np.full(self.K, -np.inf)
        self.last_eval = np.full(self.K, np.nan)
        self.acc = {name: torch.zeros(self.K, dtype=torch.float64, device=self.device) for name in LOSSES}
        self.acc_n = 0
        self.log_every = max(1, self.cfg.eval_every // 20)
        self.pending: list[dict] = []     # loss rows not yet in the store (written in one append)
        self.last_write = time.perf_counter()

    # ---- checkpoints ---------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict, dict]:
        """(modules, optimisers, generators) of the checkpoint."""
        return self.tr.modules(), self.tr.optimisers(), {"rng/sample": self.gen_sample, "rng/noise": self.gen_noise}

    def save_checkpoint(self) -> None:
        self.check_health()
        self.write_losses()
        tensors = checkpoint.training_state(*self.state(), self.acc)
        meta = {"iteration": self.it, "best": self.best.tolist(), "last_eval": self.last_eval.tolist(),
                "acc_n": self.acc_n, "tasks": self.todo, "hash": self.digest,
                "train_rows": self.store.rows(self.train_table), "eval_rows": self.store.rows(self.eval_table)}
        self.store.save_weights(self.checkpoint, tensors, meta)

    def load_checkpoint(self) -> bool:
        found = checkpoint.resume(self.ctx, self.checkpoint, self.state(), self.acc,
                                  {"train_rows": self.train_table, "eval_rows": self.eval_table},
                                  hash=self.digest, tasks=self.todo)
        if found is None:
            return False
        self.acc, meta = found
        self.acc_n = int(meta["acc_n"])
        self.it = int(meta["iteration"])
        self.best = np.asarray(meta["best"], np.float64)
        self.last_eval = np.asarray(meta["last_eval"], np.float64)
        return True

    def start_fresh(self) -> None:
        for path in (self.train_table, self.eval_table, self.checkpoint):
            self.store.delete(path)
        for i in self.todo:
            self.store.delete(layout.BCQ("final", i))
            self.store.delete(layout.BCQ("best", i))

    # ---- pieces of the loop --------------------------------------------------------------------
    def meta(self, k: int, **extra) -> dict:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "iteration": self.it, "task": self.todo[k],
                "hash": self.digest, **extra}

    def check_health(self) -> None:
        """Stop on divergence before losses are logged or weights saved (see `divergence.py`)."""
        n = max(self.acc_n, 1)
        divergence.check("bcq", self.it, labels=self.todo, **{k: v / n for k, v in self.acc.items()})

    def log_losses(self) -> None:
        self.check_health()
        n = max(self.acc_n, 1)
        row = {"iteration": self.it}
        for k, i in enumerate(self.todo):
            for name, v in self.acc.items():
                row[f"{name}_{i}"] = float(v[k]) / n
        self.pending.append(row)
        self.acc = {k: torch.zeros_like(v) for k, v in self.acc.items()}
        self.acc_n = 0

    def write_losses(self) -> None:
        """Append the pending loss rows at once (one zarr write per column instead of one per row)."""
        if self.pending:
            self.store.append_rows(self.train_table,
                                   {k: np.asarray([r[k] for r in self.pending], np.float64) for k in self.pending[0]})
            self.pending = []
        self.last_write = time.perf_counter()

    def evaluate_and_keep_best(self) -> None:
        if not self.envs:
            return
        returns = evaluate(self.model, self.envs, self.cfg.eval_episodes, derive_seed(self.r.seed, 14, self.it))
        self.last_eval = returns
        row = {"iteration": self.it, "return": float(returns.mean())}
        row.update({f"return_{i}": float(returns[k]) for k, i in enumerate(self.todo)})
        self.store.log_row(self.eval_table, row)
        for k, i in enumerate(self.todo):
            if returns[k] > self.best[k]:
                self.best[k] = returns[k]
                self.store.save_weights(layout.BCQ("best", i), task_state(self.model, k),
                                        self.meta(k, **{"return": float(returns[k])}))

    def run(self) -> None:
        cfg = self.cfg
        if not self.load_checkpoint():
            self.start_fresh()
        started, start_it, t0 = time.time(), self.it, time.perf_counter()
        report = Reporter(f"bcq {self.shard}", cfg.iterations, self.it)
        try:
            while self.it < cfg.iterations:
                batch = self.data.sample(cfg.batch_size, self.gen_sample)
                noise = bcq_algo.sample_noise(self.K, cfg.batch_size, self.model.vae.latent_dim,
                                              cfg.n_candidates, self.gen_noise, self.device)
                out = bcq_algo.update(self.tr, batch, cfg, noise)
                for name in self.acc:
                    self.acc[name] += out[name].double()          # on the device: no per-step host copy
                self.acc_n += 1
                self.it += 1
                if self.it % self.log_every == 0 or self.it == cfg.iterations:
                    self.log_losses()
                    if time.perf_counter() - self.last_write > 10 or self.it == cfg.iterations:
                        self.write_losses()
                        self.ctx.progress(self.it / cfg.iterations)
                report.update(self.it)
                if self.it % cfg.eval_every == 0 or self.it == cfg.iterations:
                    self.evaluate_and_keep_best()
                    report.update(self.it, format_returns(self.todo, self.last_eval), line=True)
                if self.it % cfg.checkpoint_every == 0 and self.it < cfg.iterations:
                    self.save_checkpoint()
        finally:
            report.close()
        self.finish(report, started, time.perf_counter() - t0, start_it)

    def finish(self, report: Reporter, started: float, elapsed: float, start_it: int) -> None:
        episodes = max(REPORT_EPISODES, self.cfg.eval_episodes)
        final = Reporter(f"bcq {self.shard} final report", 2 * episodes, unit="episode")
        rows = final_report(self.model, self.envs, self.store, self.todo, self.r.seed, self.cfg.eval_episodes,
                            on_episode=lambda e: final.update(e, "BCQ, then random actions"))
        final.close()
        table = Table("task", "random", "best in batch", "BCQ", "fraction",
                      title=f"bcq {self.shard}: final policies ({rows[0]['episodes']} episodes each)")
        for k, (i, row) in enumerate(zip(self.todo, rows)):
            self.store.save_weights(layout.BCQ("final", i), task_state(self.model, k), self.meta(k, **row))
            self.store.set_stage(layout.stage_key("bcq", i), status="done", hash=self.digest, started=started,
                                 ended=time.time(), progress=1.0, shard=self.shard, **row)
            table.add_row(str(i), f"{row['random_return']:.1f}", f"{row['best_batch_return']:.1f}",
                          f"{row['bcq_return']:.1f}", f"{row['fraction']:.2f}")
        self.store.delete(self.checkpoint)
        for env in self.envs:
            env.close()
        report.console.print(table)
        report.console.print(f"bcq {self.shard}: {self.K} tasks × {self.cfg.iterations} iterations "
                             f"({self.it - start_it} this run) in {elapsed:.1f}s", highlight=False)


def final_report(model: bcq_algo.BCQ, envs, store, tasks: list[int], seed: int, eval_episodes: int = 1,
                 on_episode=None) -> list[dict]:
    """Per task: a random policy's return, the best episode return in the task's batch, `model`'s
    return (means over `max(REPORT_EPISODES, eval_episodes)` episodes) and the fraction of the way
    from the first to the second that BCQ covers."""
    episodes = max(REPORT_EPISODES, eval_episodes) if envs else 0
    tick = on_episode or (lambda e: None)
    if envs:
        final = evaluate(model, envs, episodes, derive_seed(seed, 15), tick)
        rand = random_returns(envs, episodes, derive_seed(seed, 16), lambda e: tick(episodes + e))
    else:                                       # no environment: only the batches' own returns are known
        final = rand = np.full(len(tasks), np.nan)
    rows = []
    for k, i in enumerate(tasks):
        best = best_batch_return(store, i)
        frac = (final[k] - rand[k]) / (best - rand[k]) if best != rand[k] else float("nan")
        rows.append({"return": float(final[k]), "random_return": float(rand[k]), "best_batch_return": float(best),
                     "bcq_return": float(final[k]), "fraction": float(frac), "episodes": episodes})
    return rows
