"""How long will a run take here? Before `mbml run` starts, each stage's real update (and a few real
environment steps) is timed at the recipe's sizes, in memory on random data — nothing is written —
and multiplied out to the stage's length. With the recipe's `shards` > 1, collect and bcq are timed
at one shard's size (its largest group of tasks) and its shards go `jobs` at a time (`mbml run
--jobs`). `mbml run` prints the table, and refuses a run projected over two hours on a CPU unless the
user agrees (at a terminal) or passes `--yes`.
"""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .. import envs
from ..recipe import graph
from ..recipe.limits import auto_threads
from ..recipe.config import Recipe
from ..algos.data import TaskData
from .progress import fmt_duration



@dataclass
class Estimate:
    stage: str          # a stage record's key: "collect", "distill/mbml", ...
    seconds: float
    detail: str         # how it was projected, e.g. "60,000 steps × (0.012 s env + 1.2 s update)"


def timed(fn: Callable[[], object], repeats: int = 2, slow: float = 1.0) -> float:
    """Seconds per call of `fn`: one warm-up call, then `repeats` timed ones (one when a call takes
    more than `slow` seconds: a paper-scale step is timed well enough by one)."""
    t0 = time.perf_counter()
    fn()
    if time.perf_counter() - t0 > slow:
        repeats = 1
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ---- the pieces that are timed ---------------------------------------------------------------------
class Probe:
    """Random data and environments at the recipe's sizes; each method returns seconds per call."""

    def __init__(self, recipe: Recipe, device: torch.device, n_tasks: int = 0):
        self.r, self.device = recipe, device
        self.dist = envs.of(recipe.env)
        self.K = n_tasks or recipe.env.n_train
        self.H = recipe.env.horizon or self.dist.horizon
        env = self.dist.make_env(self.dist.tasks("train", 1, recipe.seed)[0], self.H)
        self.obs_dim, self.act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        self.env = env
        self.gen = torch.Generator(device=device).manual_seed(0)
        n = 2048
        g = torch.Generator().manual_seed(0)
        rnd = lambda *shape: torch.randn(*shape, generator=g).to(device)
        self.data = TaskData(rnd(self.K, n, self.obs_dim), rnd(self.K, n, self.act_dim).clamp(-1, 1),
                             rnd(self.K, n), rnd(self.K, n, self.obs_dim), torch.zeros(self.K, n, device=device),
                             torch.zeros(self.K, n, 0, device=device), torch.full((self.K,), n, device=device))
        self._env_step: float | None = None
        self._shard: Probe | None = None

    def shard(self) -> "Probe":
        """The probe of one of collect's and bcq's shards: the largest group of the recipe's `shards`."""
        if self._shard is None:
            size = -(-self.K // self.r.shards)
            self._shard = self if size == self.K else Probe(self.r, self.device, size)
        return self._shard

    def env_step(self) -> float:
        """One step of one environment with a random action (resets included)."""
        if self._env_step is None:
            env, rng = self.env, np.random.default_rng(0)
            env.reset(seed=0)

            def steps(n=50):
                for _ in range(n):
                    if any(env.step(rng.uniform(-1, 1, self.act_dim))[2:4]):
                        env.reset()
            self._env_step = timed(steps, repeats=3) / 50
        return self._env_step

    def sac_update(self) -> float:
        """One SAC update of every task on random data."""
        from ..algos import sac
        c = self.r.collect
        agent = sac.SAC(self.K, self.obs_dim, self.act_dim, c.hidden).to(self.device)
        opt = sac.SACOptimisers(agent, c.lr)
        return timed(lambda: sac.update(agent, opt, self.data.sample(c.batch_size, self.gen), c.gamma, c.tau,
                                        generator=self.gen))

    def collect_step(self) -> float:
        """One step of collect's loop after its random phase, as it runs: K environments stepped with
        the SAC actors' actions, then `updates_per_step` updates from the replay buffers."""
        from ..algos import sac
        from .pipeline.collect import act, sac_updates
        from .pipeline.online import LockstepEnvs
        c = self.r.collect
        tasks = self.dist.tasks("train", self.K, self.r.seed)
        envs = LockstepEnvs([self.dist.make_env(p, self.H) for p in tasks], 16, self.device,
                            seed_of=lambda k, episode: 1000 * k + episode, paths=[""] * self.K,
                            labels=[""] * self.K, n_info=len(self.dist.info_names))
        agent = sac.SAC(self.K, self.obs_dim, self.act_dim, c.hidden).to(self.device)
        opt = sac.SACOptimisers(agent, c.lr)
        envs.start()
        for _ in range(4):                                                  # rows to sample from
            envs.step(act(agent, envs.obs, self.gen, random=True))

        def step():
            envs.step(act(agent, envs.obs, self.gen, random=False))

        def update():                               # one timed, then scaled (a million a step would take hours)
            sac_updates(agent, opt, envs, dataclasses.replace(c, updates_per_step=1), self.gen)
        try:
            return timed(step) + c.updates_per_step * timed(update)
        finally:
            envs.close()

    def bcq_model(self):
        from ..algos import bcq
        return bcq.BCQ(self.K, self.obs_dim, self.act_dim, self.r.bcq).to(self.device)

    def bcq_update(self) -> tuple[float, float]:
        """(update, select_action on K states) seconds."""
        from ..algos import bcq
        c = self.r.bcq
        model = self.bcq_model()
        tr = bcq.BCQTrainer(model, c.lr)

        def step():
            noise = bcq.sample_noise(self.K, c.batch_size, model.vae.latent_dim, c.n_candidates, self.gen,
                                     self.device)
            bcq.update(tr, self.data.sample(c.batch_size, self.gen), c, noise)
        obs = np.zeros((self.K, self.obs_dim), np.float32)
        return timed(step), timed(lambda: model.act(obs, self.gen))

    def reward_step(self) -> float:
        from ..algos.reward_model import EnsembleModel, make_split, train_ensemble
        c = self.r.reward
        model = EnsembleModel(self.K, c.ensemble_size, self.obs_dim, self.act_dim, c.hidden, 1, False).to(self.device)
        split = make_split(self.data.sizes, c.holdout, self.gen)
        # steps in a row, as the stage runs them (one Adam, its state made once): a lone step also times
        # making the optimiser and its state, which on a busy machine made the projection 4× too long
        n = 20
        some = type(c)(**{**c.__dict__, "steps": n})
        return timed(lambda: train_ensemble(model, self.data.obs, self.data.act, self.data.rew[..., None], split,
                                            some, self.gen), repeats=1) / n

    def distill_step(self, algo: str) -> tuple[float, float, float]:
        """(training step, acting on T test states, inferring z from one episode of T tasks) seconds of
        one algorithm (inference is a training run of its own for MetaGenRL's meta-test)."""
        from ..api import Policy
        from ..algos.mbml import Relabelled, Teachers
        from .pipeline.distill import build_trainer
        teachers = Teachers.from_bcq(self.bcq_model().eval())
        N = self.data.obs.shape[1]
        rel = Relabelled(torch.zeros(self.K, self.K, N, device=self.device),
                         ~torch.eye(self.K, dtype=torch.bool, device=self.device)[:, :, None].expand(-1, -1, N))
        trainer = build_trainer(self.r, algo, self.data, self.device, teachers, rel)
        T = self.r.env.n_test * self.r.eval.repeats
        obs = torch.zeros(T, self.obs_dim, device=self.device)
        z = torch.zeros(T, getattr(trainer.policy, "latent_dim", self.r.distill.latent_dim), device=self.device)
        act = lambda: trainer.policy.act(obs, z, self.gen)
        with torch.no_grad():
            acting = timed(act)
        H, A = self.H, self.act_dim
        episode = {"obs": np.zeros((T, H, self.obs_dim), np.float32), "act": np.zeros((T, H, A), np.float32),
                   "rew": np.zeros((T, H), np.float32), "next_obs": np.zeros((T, H, self.obs_dim), np.float32),
                   "mask": np.ones((T, H), np.float32)}
        t0 = time.perf_counter()                 # once, no warm-up: MetaGenRL's inference is a training run
        Policy(trainer.policy).infer(**episode)
        inferring = time.perf_counter() - t0
        return timed(lambda: trainer.step(self.gen)), acting, inferring


# ---- the whole recipe --------------------------------------------------------------------------------
def estimate(recipe: Recipe, device: torch.device, keys: list[str], jobs: int = 1,
             say: Callable[[str], None] = lambda line: None, **options) -> list[Estimate]:
    """Projected wall time of each stage record `keys` ("collect", "distill/mbml", ...) of `recipe`,
    `jobs` units at a time (`mbml run --jobs`); `say(line)` hears which stage is being timed (a
    paper-scale step on a CPU can take minutes); `options` are the stage's (eval's `unseen`). The
    global torch random state is left as it was; threads are the recipe's."""
    torch.set_num_threads(recipe.threads or auto_threads())
    timed_keys = [key for key in keys if graph.split(key)[0] in ESTIMATORS]
    found = []
    with torch.random.fork_rng(devices=[]):
        p = Probe(recipe, device)
        for i, key in enumerate(timed_keys):
            say(f"pre-flight: timing {key} ({i + 1}/{len(timed_keys)})")
            if (e := _estimate(p, recipe, key, jobs, **options)) is not None:
                found.append(e)
    return found


def _sharded(r: Recipe, key: str, seconds: float, detail: str, shard_tasks: int, jobs: int) -> Estimate:
    """A collect or bcq estimate of one shard, made the stage's: its shards go min(jobs, shards) at a time."""
    if r.shards == 1:
        return Estimate(key, seconds, detail)
    at_once = min(jobs, r.shards)
    return Estimate(key, seconds * math.ceil(r.shards / at_once),
                    f"{detail}, per shard of {shard_tasks} tasks; {r.shards} shards, {at_once} at a time")


def _episode(p: Probe, n_envs: int, act_s: float) -> float:
    """Seconds of one lockstep episode of `n_envs` environments with `act_s` seconds to act per step."""
    return p.H * (n_envs * p.env_step() + act_s)


def _collect(p: Probe, r: Recipe, key: str, jobs: int, **_) -> Estimate | None:
    if r.data.format:
        return None                                 # imported batches: reading them takes seconds
    c, s = r.collect, p.shard()
    random, learning = min(c.random_steps, c.steps), max(c.steps - c.random_steps, 0)
    step = s.collect_step() if learning else 0.0
    return _sharded(r, key, random * s.K * p.env_step() + learning * step,
                    f"{random:,} random steps × {s.K} envs × {p.env_step() * 1e3:.2f} ms + "
                    f"{learning:,} steps × {step:.3f} s (envs + {c.updates_per_step} update)", s.K, jobs)


def _bcq(p: Probe, r: Recipe, key: str, jobs: int, **_) -> Estimate:
    c, s = r.bcq, p.shard()
    upd, act = s.bcq_update()
    evals = (c.iterations // c.eval_every) * c.eval_episodes + 20                # + the final report
    return _sharded(r, key, c.iterations * upd + evals * _episode(p, s.K, act),
                    f"{c.iterations:,} iterations × {upd:.3f} s + {evals} episodes", s.K, jobs)


def _reward(p: Probe, r: Recipe, key: str, jobs: int, **_) -> Estimate:
    c = r.reward
    return Estimate(key, c.steps * p.reward_step() * (2 if c.next_state else 1), f"{c.steps:,} steps")


def _distill(p: Probe, r: Recipe, key: str, jobs: int, **_) -> Estimate:
    c, T = r.distill, r.env.n_test * r.eval.repeats
    step, act, infer = p.distill_step(key.partition("/")[2])
    evals = math.ceil(c.epochs / c.eval_every) * r.eval.episodes
    return Estimate(key, c.epochs * c.steps_per_epoch * step + evals * (_episode(p, T, act) + infer),
                    f"{c.epochs * c.steps_per_epoch:,} steps × {step:.3f} s + {evals} evaluation episodes")


def _eval(p: Probe, r: Recipe, key: str, jobs: int, unseen: int = 0, **_) -> Estimate:
    T = (unseen or r.env.n_test) * r.eval.repeats
    return Estimate(key, r.eval.episodes * _episode(p, T, 0.0), f"{r.eval.episodes} episodes × {T} tasks")


def _finetune(p: Probe, r: Recipe, key: str, jobs: int, **_) -> Estimate:
    c = r.finetune
    R = 2 * c.n_tasks
    return Estimate(key, (c.init_steps + c.steps) * R * p.env_step() + c.steps * p.sac_update(),
                    f"{c.init_steps + c.steps:,} steps × {R} runs")


# What is timed, per stage of the graph; relabel and probe take seconds and are not.
ESTIMATORS = {"collect": _collect, "bcq": _bcq, "reward": _reward, "distill": _distill, "eval": _eval,
              "finetune": _finetune}
assert set(ESTIMATORS) <= set(graph.NAMES), "an estimator for a stage the graph does not have"


def _estimate(p: Probe, r: Recipe, key: str, jobs: int = 1, **options) -> Estimate | None:
    estimator = ESTIMATORS.get(graph.split(key)[0])
    return estimator(p, r, key, jobs, **options) if estimator else None


def startup_seconds() -> float:
    """Seconds a fresh process takes before its first stage (the interpreter, torch and the stage
    modules imported): every run of a sweep and every `--jobs` unit pays it."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from mbml_cli.run import stages; stages._load_stages()"],
                   capture_output=True, check=False, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0


def table(estimates: list[Estimate], device: torch.device):
    """A rich table of the estimates and their total."""
    from rich.table import Table
    t = Table("stage", "projected", "from", title=f"pre-flight on {device}: a few real iterations timed at the "
                                                   f"recipe's sizes")
    for e in estimates:
        t.add_row(e.stage, fmt_duration(e.seconds), e.detail)
    t.add_row("[bold]total[/bold]", f"[bold]{fmt_duration(sum(e.seconds for e in estimates))}[/bold]", "")
    return t
