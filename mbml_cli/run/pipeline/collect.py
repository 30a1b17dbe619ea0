"""`mbml collect`: SAC on every training task at once; each task's whole transition stream is its batch.

Reads the recipe's `collect` section and the training tasks; writes

- `data/train/<i>`: obs, act, rew, next_obs (float32), terminal, truncated (bool: a time-limit cut,
  kept apart from `terminal`), info (float32 (N, n_features): the simulator features of each step)
  — the columns of `pipeline/online.py`, one row of its arrays per task;
- `metrics/collect/train` (`train_<shard>` for a shard): one row every `log_every` steps — `step`,
  `env_steps_per_s`, `return` (mean over tasks) and per task `return_<i>` (mean of its last 5
  finished episodes), `critic_loss_<i>`, `actor_loss_<i>`, `alpha_<i>` (means since the last row);
- `models/collect/sac/<i>`: each task's final SAC (actor, critics, log α);
- `models/collect/checkpoint/<shard>`: the resumable checkpoint (deleted when the shard is done);
- `stages/collect/<i>`: per-task records (status, hash, rows).

Exact resume. Every environment is reset with a seed derived from (recipe seed, task, episode) and
is replayed from the stored actions on resume (`pipeline/online.py`). The checkpoint therefore holds
only the networks, the Adam states, every log α, the RNG state, the step count and episode counters;
the data and metric tables are rolled back to the checkpoint's row counts (`Store.set_rows`). All
randomness (random actions, exploration, mini-batches, update noise) comes from one generator whose
state is checkpointed, so a run killed at any point and resumed writes the same batches,
transition for transition, as a run never interrupted.

Shards (`--tasks 0,3,5`): a shard trains one batched SAC over its tasks and writes only those tasks'
groups (data, weights, per-task records) plus its own checkpoint and metrics table. The stage's own
record (`stages/collect`) becomes "done" when every training task's record is done with the current
hash; until then a shard leaves it "partial". Re-running with the same inputs resumes; a task whose
record is done is not collected again (unless `--force` or a changed recipe section). A shard's
networks are seeded from (seed, its task list): the same shard is reproducible, but its batches
differ from those the same tasks get in a full run. The recipe's `shards: N` makes every collect
(without --tasks) N such shards of contiguous tasks, trained in turn, or by `mbml run --jobs J` J at
a time as units, each in its own process: the same batches either way. (The shard helpers are in
`pipeline/common.py`, shared with `mbml bcq`.)
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .. import context, divergence
from ...algos import sac as sac_algo
from ...algos.nets import device_of, seed_everything, stack_states, task_state
from ...core import checkpoint, layout
from ..progress import Reporter, format_returns
from .common import derive_seed, run_shards, shard_name
from .online import LockstepEnvs


def train(ctx: context.RunContext, todo: list[int], digest: str) -> None:
    """One group of tasks: a batched SAC over them (here, or in a unit of `mbml run --jobs N`)."""
    Collector(ctx, todo, digest).run()


@context.stage("collect", shard=train)
def collect(ctx: context.RunContext, tasks: list[int] | None = None, loaded=None, parallel=None):
    if ctx.recipe.data.format:            # the recipe names imported batches: they take collect's place
        from ...datasets.importing import import_batches
        return import_batches(ctx, loaded)
    return run_shards(ctx, "collect", tasks, parallel)


def draw(fn, K: int, shape: tuple, gen: torch.Generator, common: bool) -> torch.Tensor:
    """fn((K, *shape)) from `gen`; with common noise one fn((1, *shape)) seen by all K tasks."""
    return fn((1 if common else K, *shape), generator=gen, device=gen.device).expand(K, *shape)


def act(agent: sac_algo.SAC, obs: np.ndarray, gen: torch.Generator, random: bool, common: bool = False) -> np.ndarray:
    """Every task's action for its current observation (K, obs_dim): uniform in [−1, 1] in the random
    phase, else a draw from its SAC actor."""
    K, A = len(obs), agent.act_dim
    if random:
        a = draw(torch.rand, K, (A,), gen, common) * 2 - 1
    else:
        with torch.no_grad():
            s = torch.as_tensor(obs, device=gen.device).unsqueeze(1)
            a = agent.actor(s, draw(torch.randn, K, (1, A), gen, common))[0].squeeze(1)
    return a.cpu().numpy().astype(np.float32)


def sac_updates(agent: sac_algo.SAC, opt: sac_algo.SACOptimisers, envs: LockstepEnvs, cfg, gen: torch.Generator,
                acc: dict[str, torch.Tensor]) -> None:
    """`updates_per_step` SAC updates on mini-batches of every task's rows so far; the losses are
    summed into `acc` on the device (no per-step host copy)."""
    K, B, common = envs.R, cfg.batch_size, cfg.common_noise
    for _ in range(cfg.updates_per_step):
        batch = envs.sample(B, gen, common)
        noise = sac_algo.sample_noise(1 if common else K, B, agent.act_dim, gen, gen.device)
        out = sac_algo.update(agent, opt, batch, cfg.gamma, cfg.tau, noise={k: v.expand(K, -1, -1) for k, v in noise.items()})
        for name in acc:
            acc[name] += out[name].double()


class Collector:
    """One batched SAC over the tasks `todo`, their K environments, buffers and checkpoint."""

    def __init__(self, ctx: context.RunContext, todo: list[int], digest: str):
        self.ctx, self.store, self.r, self.cfg = ctx, ctx.store, ctx.recipe, ctx.recipe.collect
        self.todo, self.digest = todo, digest
        n_train = self.r.env.n_train
        self.shard = shard_name(todo, n_train)
        self.metrics = layout.METRICS("collect", "train" if self.shard == "all" else f"train_{self.shard}")
        self.checkpoint = layout.checkpoint("collect", self.shard)
        self.device = device_of(self.r.device)
        params = ctx.tasks("train")
        self.K = len(todo)
        seed = self.r.seed
        ids = [] if self.cfg.common_noise else todo            # common noise: no stream depends on the task
        envs = [ctx.dist.make_env(params[i], self.r.env.horizon) for i in todo]
        self.envs = LockstepEnvs(envs, self.cfg.steps, self.device,       # the K batches, one row per task
                                 seed_of=lambda k, episode: derive_seed(seed, 3, *ids[k:k + 1], episode),
                                 paths=[layout.BATCH("train", i) for i in todo], labels=[f"collect: task {i}" for i in todo],
                                 n_info=len(ctx.dist.info_names))
        self.obs_dim = self.envs.host["obs"].shape[-1]
        self.act_dim = self.envs.host["act"].shape[-1]

        seed_everything(derive_seed(seed, 1, *ids), self.r.threads)    # network initialisation
        self.sac = sac_algo.SAC(1 if self.cfg.common_noise else self.K, self.obs_dim, self.act_dim, self.cfg.hidden)
        if self.cfg.common_noise:                                        # one SAC's weights in every task's slice
            one, self.sac = self.sac, sac_algo.SAC(self.K, self.obs_dim, self.act_dim, self.cfg.hidden)
            self.sac.load_state_dict(stack_states([task_state(one, 0)] * self.K))
        self.sac.to(self.device)
        self.opt = sac_algo.SACOptimisers(self.sac, self.cfg.lr)
        self.gen = torch.Generator(device=self.device).manual_seed(derive_seed(seed, 2, *ids))
        self.acc = {name: torch.zeros(self.K, dtype=torch.float64, device=self.device) for name in ("critic_loss", "actor_loss", "alpha")}
        self.acc_n = 0

    @property
    def t(self) -> int:
        """Environment steps taken by every task (= rows per task)."""
        return self.envs.t

    # ---- checkpoints ---------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict, dict]:
        """(modules, optimisers, generators) of the checkpoint."""
        return {"sac": self.sac}, dict(self.opt.items()), {"rng": self.gen}

    def check_health(self) -> None:
        """Stop on divergence before losses are logged or rows flushed (see `divergence.py`)."""
        n = max(self.acc_n, 1)
        divergence.check("collect", self.t, labels=self.todo, **{k: v / n for k, v in self.acc.items()})
        new = slice(self.envs.flushed, self.t)
        divergence.check_rows("collect", self.t, labels=self.todo,
                              **{c: a[:, new] for c, a in self.envs.host.items() if c in ("obs", "act", "rew", "next_obs")})

    def save_checkpoint(self) -> None:
        self.check_health()
        self.envs.flush(self.store)
        tensors = checkpoint.training_state(*self.state(), self.acc)
        meta = {"t": self.t, "episodes": self.envs.episodes.tolist(), "acc_n": self.acc_n, "tasks": self.todo,
                "hash": self.digest, "metric_rows": self.store.rows(self.metrics)}
        self.store.save_weights(self.checkpoint, tensors, meta)

    def load_checkpoint(self) -> bool:
        found = checkpoint.resume(self.ctx, self.checkpoint, self.state(), self.acc, {"metric_rows": self.metrics},
                                  hash=self.digest, tasks=self.todo)
        if found is None:
            return False
        self.acc, meta = found
        self.acc_n = int(meta["acc_n"])
        self.envs.load(self.store, int(meta["t"]), meta["episodes"])
        return True

    def start_fresh(self) -> None:
        self.store.delete(self.metrics)
        self.store.delete(self.checkpoint)
        for path in self.envs.paths:
            self.store.delete(path)
        self.envs.start()

    # ---- the loop ------------------------------------------------------------------------------
    def act(self) -> np.ndarray:
        return act(self.sac, self.envs.obs, self.gen, self.t < self.cfg.random_steps, self.cfg.common_noise)

    def log(self, rate: float) -> None:
        n = max(self.acc_n, 1)
        recent = self.envs.mean_recent()
        row = {"step": self.t, "env_steps_per_s": rate,
               "return": float(np.nanmean(recent)) if any(np.isfinite(recent)) else float("nan")}
        for k, i in enumerate(self.todo):
            row[f"return_{i}"] = recent[k]
            for name, v in self.acc.items():
                row[f"{name}_{i}"] = float(v[k]) / n if self.acc_n else float("nan")
        self.store.log_row(self.metrics, row)
        self.acc = {k: torch.zeros_like(v) for k, v in self.acc.items()}
        self.acc_n = 0
    def run(self) -> None:
        cfg = self.cfg
        if not self.load_checkpoint():
            self.start_fresh()
        self.started = time.time()
        report = Reporter(f"collect {self.shard}", cfg.steps, self.t, unit="step")
        start_t, start_time, last_time, last_t = self.t, time.perf_counter(), time.perf_counter(), self.t
        try:
            while self.t < cfg.steps:
                self.envs.step(self.act())
                if self.t >= max(cfg.random_steps, 1):                     # then updates_per_step per env step
                    sac_updates(self.sac, self.opt, self.envs, cfg, self.gen, self.acc)
                    self.acc_n += cfg.updates_per_step
                if self.t % cfg.log_every == 0 or self.t == cfg.steps:
                    self.check_health()
                    now = time.perf_counter()
                    rate = self.K * (self.t - last_t) / max(now - last_time, 1e-9)
                    last_time, last_t = now, self.t
                    self.log(rate)
                    self.ctx.progress(self.t / cfg.steps)
                    returns = format_returns(self.todo, self.envs.mean_recent())
                    report.update(self.t, returns, line=True)
                else:
                    report.update(self.t)
                if self.t % cfg.checkpoint_every == 0 and self.t < cfg.steps:
                    self.save_checkpoint()
            self.check_health()
            self.envs.flush(self.store)
        finally:
            report.close()
        for k, i in enumerate(self.todo):
            self.store.save_weights(layout.SAC(i), task_state(self.sac, k),
                                    {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden": list(cfg.hidden),
                                     "steps": self.t, "hash": self.digest})
            self.store.set_stage(layout.stage_key("collect", i), status="done", hash=self.digest, rows=self.t,
                                 started=self.started, ended=time.time(), progress=1.0, shard=self.shard)
        self.store.delete(self.checkpoint)
        self.envs.close()
        elapsed = time.perf_counter() - start_time
        report.console.print(f"collect {self.shard}: {self.K} tasks × {cfg.steps} steps "
                             f"({self.t - start_t} this run) in {elapsed:.1f}s", highlight=False)
