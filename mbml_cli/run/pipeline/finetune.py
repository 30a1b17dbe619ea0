"""`mbml finetune RUN [--task K | --unseen]`: SAC on unseen tasks initialised from the MBML policy,
against the same SAC from a random initialisation (paper Sec. 5.3, Fig. 8; the algorithm is
`algos/finetune.py`).

Which tasks: `--task K` the run's test task K; `--unseen` one fresh task
`dist.tasks("unseen", 1, seed + eval.unseen_seed)`; neither (and `mbml run` with `finetune.enabled`)
the first `finetune.n_tasks` test tasks. All runs of one invocation — every task × {mbml, scratch} —
train as ONE batched agent, their R environments stepped in lockstep, for
`finetune.init_steps + finetune.steps` interactions each:

  t < init_steps   MBML runs act with the MBML policy (episode 1: z from the prior, later episodes:
                   z from the posterior of everything collected so far); scratch runs act uniformly
                   at random (SAC's warm-up). No updates.
  t = init_steps   MBML runs: z frozen to the posterior mean of all init_steps transitions, both
                   critics ← Q_D(·, ·, z), actor fitted to the collected actions (bc_steps steps).
  t > init_steps   one SAC update per environment step for every run (`algos.finetune.update`).

The two runs of a task share every environment seed (training resets and evaluation resets) and
start from the same random actor weights (the MBML run's are then behaviour-cloned).

Writes (names of `layout.py`; init ∈ mbml, scratch)
  FINETUNE_CURVE <init>/<task>    append-only rows: interactions, return — the mean return of
                                  `eval_episodes` deterministic episodes (tanh μ) every `eval_every`
                                  steps from t = init_steps on; evaluation episodes are not counted
  FINETUNE_SUMMARY <task>         `finetune_summary.py`: threshold, interactions to reach it per init
                                  (None: never), saving in % (and whether it is a lower bound), returns
  METRICS finetune/<init>/<task>  per evaluation: interactions, train_return, critic_loss,
                                  actor_loss, alpha, entropy, q (means since the last row)
  FINETUNE_BATCH <init>/<task>    every transition (obs, act, rew, next_obs, terminal, truncated:
                                  the columns of `pipeline/online.py`, one row of its arrays per run)
  FINETUNE_WEIGHTS <init>/<task>  final weights of that run (its slice of the batched agent)
  CHECKPOINT finetune/<name>      resumable checkpoint (name: all, the task index, or unseen)
The table it prints is `finetune_report.py`.

Exact resume: like `collect`, all randomness comes from checkpointed generators and the
environments are rebuilt by replaying the unfinished episode's stored actions (`pipeline/online.py`),
so a killed invocation resumed with the same inputs writes the same numbers as an uninterrupted one.
(A run's random streams depend on which tasks share its invocation: `--task 0` and the all-tasks
run differ.)
"""
from __future__ import annotations

import numpy as np
import torch

from ...core import layout, seeds
from .. import context
from ...recipe import graph
from ... import envs as registry
from ...algos import finetune as ft
from ...algos.sac import SACOptimisers
from ...api import Run, load_policy
from ...errors import StageError
from ...algos.nets import device_of, seed_everything, task_state
from ..rollout import run_episode
from ..loop import Job, Schedule, run_loop
from ...datasets.batches import episode_returns
from .finetune_report import print_summary
from .finetune_summary import INITS, write_summary
from .online import LockstepEnvs

LOSSES = ("critic_loss", "actor_loss", "alpha", "entropy", "q")


# ---- the stage -------------------------------------------------------------------------------------
def chosen_tasks(ctx: context.RunContext, task: int | None = None, unseen: bool = False):
    """(params, names, ids, shard) of the tasks to fine-tune on; a bad choice raises StageError."""
    r = ctx.recipe
    if not registry.has_environment(ctx.dist):
        raise StageError(f"mbml finetune: {ctx.dist.needs_env_message}")
    if unseen and task is not None:
        raise StageError("mbml finetune: give --task K or --unseen, not both")
    if unseen:
        return ctx.dist.tasks("unseen", 1, r.seed + r.eval.unseen_seed), ["unseen"], [(1, 0)], "unseen"
    test = ctx.tasks("test")
    if task is not None:
        if not 0 <= task < len(test):
            raise StageError(f"--task {task}: out of range (this run has test tasks 0..{len(test) - 1})")
        chosen, shard = [task], str(task)
    else:
        chosen, shard = list(range(min(r.finetune.n_tasks, len(test)))), "all"
    return test[chosen], [str(i) for i in chosen], [(0, i) for i in chosen], shard


@context.stage("finetune", check=chosen_tasks)
def finetune(ctx: context.RunContext, task: int | None = None, unseen: bool = False) -> None:
    r = ctx.recipe
    params, names, ids, shard = chosen_tasks(ctx, task, unseen)
    Finetuner(ctx, names, np.asarray(params), ids, shard).run()
    print_summary(ctx.store, r.finetune.threshold, r.finetune.smooth)


class Finetuner(Job):
    """R = 2T runs (rows 0..T−1 MBML-initialised, T..2T−1 scratch) of T tasks, as one agent."""

    def __init__(self, ctx: context.RunContext, names: list[str], params: np.ndarray, ids: list[tuple[int, int]],
                 shard: str):
        self.ctx, self.store, self.r, self.cfg = ctx, ctx.store, ctx.recipe, ctx.recipe.finetune
        self.names, self.params, self.ids, self.shard = names, params, ids, shard
        self.T = T = len(names)
        self.R = R = 2 * T
        self.runs = [(INITS[k // T], names[k % T]) for k in range(R)]     # (init, task) of each row
        self.device = device_of(self.r.device)
        self.digest = graph.digest(self.r, "finetune")
        self.total = self.cfg.init_steps + self.cfg.steps

        self.policy = load_policy(Run(self.store), "mbml", "final", self.r.device)     # the multi-task policy
        envs = [ctx.dist.make_env(params[k % T], self.r.env.horizon) for k in range(R)]
        self.envs = LockstepEnvs(envs, self.total, self.device, self.reset_seed,        # transitions of every run
                                 paths=[layout.FINETUNE_BATCH(*run) for run in self.runs],
                                 labels=[f"finetune: {run}" for run in self.runs])
        self.eval_envs = [ctx.dist.make_env(params[k % T], self.r.env.horizon) for k in range(R)]
        self.obs_dim = self.envs.host["obs"].shape[-1]
        self.act_dim = self.envs.host["act"].shape[-1]
        flat_ids = [p for i in ids for p in i]

        # networks: same random actor for both runs of a task; critics Q_D-shaped (Sec. 5.3)
        meta = self.policy.meta
        seed_everything(seeds.stream(self.r.seed, "finetune/init", *flat_ids), self.r.threads)
        self.agent = ft.FinetuneAgent(R, self.obs_dim, self.act_dim, meta["latent_dim"], self.cfg.hidden,
                                      meta["q_hidden"], self.cfg.alpha_init).to(self.device)
        with torch.no_grad():
            for p in self.agent.actor.parameters():
                p[T:] = p[:T]
        ft.set_obs_stats(self.agent, self.policy.module.obs_mean, self.policy.module.obs_std)
        self.opt = SACOptimisers(self.agent, self.cfg.lr)
        self.gen = torch.Generator(device=self.device).manual_seed(seeds.stream(self.r.seed, "finetune/sample", *flat_ids))
        self.cpu_gen = torch.Generator().manual_seed(seeds.stream(self.r.seed, "finetune/host", *flat_ids))

        self.n_evals = 0
        self.z = np.zeros((T, meta["latent_dim"]), np.float32)     # the MBML runs' current z (init phase)
        self.bc_loss = float("nan")
        self.title = f"finetune {shard} ({T} task{'s' if T > 1 else ''} × mbml, scratch)"
        self.stage, self.labels, self.size = "finetune", [f"{init}/{name}" for init, name in self.runs], \
            f"{R} runs × {self.total} interactions"
        self.checkpoint = layout.checkpoint("finetune", shard)
        self.tables = [table for init, name in self.runs
                       for table in (layout.FINETUNE_CURVE(init, name), layout.METRICS("finetune", f"{init}/{name}"))]
        self.expected = {"hash": self.digest, "names": names}

    # ---- environments ------------------------------------------------------------------------------
    @property
    def t(self) -> int:
        """Interactions of every run so far."""
        return self.envs.t

    def reset_seed(self, k: int, episode: int) -> int:
        return seeds.stream(self.r.seed, "finetune/reset", *self.ids[k % self.T], episode)

    def context(self, k: int, stop: int) -> dict[str, np.ndarray]:
        return {f: self.envs.host[f][k, :stop] for f in ("obs", "act", "rew", "next_obs")}

    # ---- acting and stepping -------------------------------------------------------------------------
    def act(self) -> np.ndarray:
        T = self.T
        if self.t < self.cfg.init_steps:
            a = np.empty((self.R, self.act_dim), np.float32)
            a[:T] = self.policy.act(self.envs.obs[:T], self.z, self.cpu_gen)             # the MBML policy
            a[T:] = (torch.rand((T, self.act_dim), generator=self.cpu_gen) * 2 - 1).numpy()   # uniform warm-up
            return a
        obs = torch.as_tensor(self.envs.obs, device=self.device)
        return self.agent.act(obs, generator=self.gen).cpu().numpy().astype(np.float32)

    def episode_ended(self, k: int, rows: int) -> None:
        """PEARL protocol: an MBML run's next episode in the init phase acts with z from the posterior."""
        if k < self.T and rows < self.cfg.init_steps:
            self.z[k] = ft.sample_z(self.policy, self.context(k, rows), self.cpu_gen)

    def sample(self) -> dict[str, torch.Tensor]:
        return self.envs.sample(self.cfg.batch_size, self.gen)

    # ---- Sec. 5.3 initialisation ----------------------------------------------------------------------
    def initialise(self) -> None:
        T, n = self.T, self.cfg.init_steps
        z = ft.frozen_z(self.policy, {f: self.envs.host[f][:T, :n] for f in ("obs", "act", "rew", "next_obs")})
        self.z[:] = z
        q_d = self.policy.module
        ft.init_from_mbml(self.agent, list(range(T)), q_d.q, torch.as_tensor(z, device=self.device),
                          float(q_d.q_std), float(q_d.q_mean))
        weight = torch.tensor([1.0] * T + [0.0] * T, device=self.device)
        losses = ft.behaviour_clone(self.agent, self.envs.buf["obs"][:, :n], self.envs.buf["act"][:, :n], weight,
                                    self.cfg.bc_steps, self.cfg.lr, self.cfg.batch_size, self.gen)
        self.bc_loss = losses[-1] if losses else float("nan")

    # ---- hooks of the loop --------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg
        run_loop(self.ctx, self, Schedule(self.total, cfg.eval_every, cfg.checkpoint_every, cfg.eval_every,
                                          first=cfg.init_steps, checkpoint_at=(cfg.init_steps,)))

    def state(self) -> tuple[dict, dict, dict]:
        return {"agent": self.agent}, dict(self.opt.items()), {"rng": self.gen, "cpu_rng": self.cpu_gen}

    def start(self) -> None:
        for init, name in self.runs:
            for path in (layout.FINETUNE_BATCH(init, name), layout.FINETUNE_SUMMARY(name),
                         layout.FINETUNE_WEIGHTS(init, name)):
                self.store.delete(path)
        self.envs.start()

    def restore(self, tensors: dict, meta: dict) -> None:
        self.z[:] = np.array(tensors["z"])
        self.n_evals, self.bc_loss = int(meta["n_evals"]), float(meta["bc_loss"])
        self.envs.load(self.store, int(meta["step"]), meta["episodes"])

    def extras(self) -> tuple[dict, dict]:
        self.envs.flush(self.store)
        return {"z": torch.from_numpy(self.z)}, {"episodes": self.envs.episodes.tolist(), "n_evals": self.n_evals,
                                                 "bc_loss": self.bc_loss}

    def step(self, t: int) -> list[dict[str, torch.Tensor]]:
        """Every run one interaction; then the Sec. 5.3 initialisation, or one SAC update."""
        cfg = self.cfg
        self.envs.step(self.act(), self.episode_ended)
        if t + 1 == cfg.init_steps:
            self.initialise()
        elif t + 1 > cfg.init_steps:
            out = ft.update(self.agent, self.opt, self.sample(), self.sample(), cfg.gamma, cfg.tau,
                            cfg.policy_noise, cfg.noise_clip, generator=self.gen)
            return [{m: out[m] for m in LOSSES}]
        return []

    def evaluate(self, t: int, report) -> np.ndarray:
        """(R,) mean return of `eval_episodes` deterministic episodes (seeds shared by a task's two
        runs), appended to each run's curve."""
        totals = np.zeros(self.R)
        act = lambda obs: self.agent.act(torch.as_tensor(obs, device=self.device), deterministic=True).cpu().numpy()
        for e in range(self.cfg.eval_episodes):
            resets = [seeds.stream(self.r.seed, "finetune/eval", *self.ids[k % self.T], self.n_evals, e) for k in range(self.R)]
            totals += run_episode(self.eval_envs, act, resets).exact_returns
        self.n_evals += 1
        returns = totals / self.cfg.eval_episodes
        for k, (init, name) in enumerate(self.runs):
            self.store.append_rows(layout.FINETUNE_CURVE(init, name), {"interactions": np.array([t], np.int64),
                                                                       "return": np.array([returns[k]], np.float64)})
        return returns

    def log(self, t: int, means: dict, returns: np.ndarray, rate: float) -> tuple[dict, str]:
        recent = self.envs.mean_recent()
        rows = {layout.METRICS("finetune", f"{init}/{name}"):
                {"interactions": t, "train_return": recent[k],
                 **{m: float(means[m][k]) if means else float("nan") for m in LOSSES}}
                for k, (init, name) in enumerate(self.runs)}
        T = self.T
        return rows, ("return mbml " + " ".join(f"{v:.1f}" for v in returns[:T]) +
                      " | scratch " + " ".join(f"{v:.1f}" for v in returns[T:]))

    def finish(self, t: int, report) -> None:
        self.envs.flush(self.store)
        h, n = self.envs.host, self.cfg.init_steps
        for k, (init, name) in enumerate(self.runs):
            self.store.save_weights(layout.FINETUNE_WEIGHTS(init, name), task_state(self.agent, k),
                                    {"init": init, "task": name, "interactions": t, "obs_dim": self.obs_dim,
                                     "act_dim": self.act_dim, "hash": self.digest})
        for k, name in enumerate(self.names):
            ends = h["terminal"][k, :n] | h["truncated"][k, :n]
            mbml_eps = episode_returns(h["rew"][k, :n], ends)
            write_summary(self.store, self.cfg, self.r.eval.skip, name, self.params[k], mbml_eps, self.bc_loss)
        self.envs.close()
        for env in self.eval_envs:
            env.close()
