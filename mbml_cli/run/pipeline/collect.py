"""`mbml collect`: SAC on every training task at once; each task's whole transition stream is its batch.

Reads the recipe's `collect` section and the training tasks; writes

- `data/train/<i>`: obs, act, rew, next_obs (float32), terminal, truncated (bool: a time-limit cut,
  kept apart from `terminal`), info (float32 (N, n_features): the simulator features of each step)
  — the columns of `pipeline/online.py`, one row of its arrays per task;
- `metrics/collect/train` (`train_<shard>` for a shard): one row every `log_every` steps — `step`,
  `env_steps_per_s`, and per task (a (rows, K) column each, the table's `tasks` naming them)
  `return` (mean of its last 5 finished episodes), `critic_loss`, `actor_loss`, `alpha` (means since
  the last row);
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
from ...core import layout, seeds
from ..loop import Job, Schedule, run_loop
from ..progress import format_returns
from .common import run_shards, shard_name
from .online import LockstepEnvs

LOSSES = ("critic_loss", "actor_loss", "alpha")


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


def sac_updates(agent: sac_algo.SAC, opt: sac_algo.SACOptimisers, envs: LockstepEnvs, cfg,
                gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """`updates_per_step` SAC updates on mini-batches of every task's rows so far; their losses."""
    K, B, common = envs.R, cfg.batch_size, cfg.common_noise
    losses = []
    for _ in range(cfg.updates_per_step):
        batch = envs.sample(B, gen, common)
        noise = sac_algo.sample_noise(1 if common else K, B, agent.act_dim, gen, gen.device)
        out = sac_algo.update(agent, opt, batch, cfg.gamma, cfg.tau, noise={k: v.expand(K, -1, -1) for k, v in noise.items()})
        losses.append({name: out[name] for name in LOSSES})
    return losses


class Collector(Job):
    """One batched SAC over the tasks `todo`, their K environments and buffers; trained by `run_loop`."""

    def __init__(self, ctx: context.RunContext, todo: list[int], digest: str):
        self.ctx, self.store, self.r, self.cfg = ctx, ctx.store, ctx.recipe, ctx.recipe.collect
        self.todo, self.digest = todo, digest
        n_train = self.r.env.n_train
        self.shard = shard_name(todo, n_train)
        self.metrics = layout.METRICS("collect", "train" if self.shard == "all" else f"train_{self.shard}")
        self.title, self.stage, self.labels, self.tasks = f"collect {self.shard}", "collect", todo, todo
        self.checkpoint, self.tables = layout.checkpoint("collect", self.shard), [self.metrics]
        self.expected = {"hash": digest, "tasks": todo}
        self.size = f"{len(todo)} tasks × {self.cfg.steps} steps"
        self.device = device_of(self.r.device)
        params = ctx.tasks("train")
        self.K = len(todo)
        seed = self.r.seed
        ids = [] if self.cfg.common_noise else todo            # common noise: no stream depends on the task
        envs = [ctx.dist.make_env(params[i], self.r.env.horizon) for i in todo]
        self.envs = LockstepEnvs(envs, self.cfg.steps, self.device,       # the K batches, one row per task
                                 seed_of=lambda k, episode: seeds.stream(seed, "collect/reset", *ids[k:k + 1], episode),
                                 paths=[layout.BATCH("train", i) for i in todo], labels=[f"collect: task {i}" for i in todo],
                                 n_info=len(ctx.dist.info_names))
        self.obs_dim = self.envs.host["obs"].shape[-1]
        self.act_dim = self.envs.host["act"].shape[-1]

        seed_everything(seeds.stream(seed, "collect/init", *ids), self.r.threads)    # network initialisation
        self.sac = sac_algo.SAC(1 if self.cfg.common_noise else self.K, self.obs_dim, self.act_dim, self.cfg.hidden)
        if self.cfg.common_noise:                                        # one SAC's weights in every task's slice
            one, self.sac = self.sac, sac_algo.SAC(self.K, self.obs_dim, self.act_dim, self.cfg.hidden)
            self.sac.load_state_dict(stack_states([task_state(one, 0)] * self.K))
        self.sac.to(self.device)
        self.opt = sac_algo.SACOptimisers(self.sac, self.cfg.lr)
        self.gen = torch.Generator(device=self.device).manual_seed(seeds.stream(seed, "collect/sample", *ids))
        self.started = time.time()

    def run(self) -> None:
        cfg = self.cfg
        run_loop(self.ctx, self, Schedule(cfg.steps, cfg.log_every, cfg.checkpoint_every))

    # ---- hooks of the loop ---------------------------------------------------------------------
    def state(self) -> tuple[dict, dict, dict]:
        return {"sac": self.sac}, dict(self.opt.items()), {"rng": self.gen}

    def start(self) -> None:
        for path in self.envs.paths:
            self.store.delete(path)
        self.envs.start()

    def restore(self, tensors: dict, meta: dict) -> None:
        self.envs.load(self.store, int(meta["step"]), meta["episodes"])

    def extras(self) -> tuple[dict, dict]:
        self.envs.flush(self.store)
        return {}, {"episodes": self.envs.episodes.tolist()}

    def step(self, t: int) -> list[dict[str, torch.Tensor]]:
        """Every env one step; then, past the random phase, `updates_per_step` SAC updates."""
        self.envs.step(act(self.sac, self.envs.obs, self.gen, t < self.cfg.random_steps, self.cfg.common_noise))
        if t + 1 < max(self.cfg.random_steps, 1):
            return []
        return sac_updates(self.sac, self.opt, self.envs, self.cfg, self.gen)

    def check(self, t: int) -> None:
        """The rows about to be flushed are finite."""
        new = slice(self.envs.flushed, t)
        divergence.check_rows("collect", t, labels=self.todo,
                              **{c: a[:, new] for c, a in self.envs.host.items() if c in ("obs", "act", "rew", "next_obs")})

    def log(self, t: int, means: dict, result, rate: float) -> tuple[dict, str]:
        recent = self.envs.mean_recent()
        row = {"step": t, "env_steps_per_s": self.K * rate, "return": recent,          # (K,) per task
               **{name: means[name].cpu().numpy() if means else np.full(self.K, np.nan) for name in LOSSES}}
        return {self.metrics: row}, format_returns(self.todo, recent)

    def finish(self, t: int, report) -> None:
        self.envs.flush(self.store)
        for k, i in enumerate(self.todo):
            self.store.save_weights(layout.SAC(i), task_state(self.sac, k),
                                    {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden": list(self.cfg.hidden),
                                     "steps": t, "hash": self.digest})
            self.store.set_stage(layout.stage_key("collect", i), status="done", hash=self.digest, rows=t,
                                 started=self.started, ended=time.time(), progress=1.0, shard=self.shard)
        self.envs.close()
