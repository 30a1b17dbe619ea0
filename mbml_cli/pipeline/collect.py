"""`mbml collect`: SAC on every training task at once; each task's whole transition stream is its batch.

Reads the recipe's `collect` section and the training tasks; writes

- `data/train/<i>`: obs, act, rew, next_obs (float32), terminal, truncated (bool: a time-limit cut,
  kept apart from `terminal`), info (float32 (N, n_features): the simulator features of each step);
- `metrics/collect/train` (`train_<shard>` for a shard): one row every `log_every` steps — `step`,
  `env_steps_per_s`, `return` (mean over tasks) and per task `return_<i>` (mean of its last 5
  finished episodes), `critic_loss_<i>`, `actor_loss_<i>`, `alpha_<i>` (means since the last row);
- `models/collect/sac/<i>`: each task's final SAC (actor, critics, log α);
- `models/collect/checkpoint/<shard>`: the resumable checkpoint (deleted when the shard is done);
- `stages/collect/<i>`: per-task records (status, hash, rows).

Exact resume. Every environment is reset with a seed derived from (recipe seed, task, episode) and
is deterministic given its actions, so its state at any step is a function of data already in the
store: on resume each env is reset with its episode's seed and the stored actions of the unfinished
episode are replayed (and checked against the stored next_obs). The checkpoint therefore holds only
the networks, the Adam states, every log α, the RNG state, the step count and episode counters; the
data and metric tables are rolled back to the checkpoint's row counts (`Store.set_rows`). All
randomness (random actions, exploration, mini-batches, update noise) comes from one generator whose
state is checkpointed, so a run killed at any point and resumed writes the same batches,
transition for transition, as a run never interrupted.

Shards (`--tasks 0,3,5`): a shard trains one batched SAC over its tasks and writes only those tasks'
groups (data, weights, per-task records) plus its own checkpoint and metrics table. The stage's own
record (`stages/collect`) becomes "done" when every training task's record is done with the current
hash; until then a shard leaves it "partial". Re-running with the same inputs resumes; a task whose
record is done is not collected again (unless `--force` or a changed recipe section). A shard's
networks are seeded from (seed, its task list): the same shard is reproducible, but its batches
differ from those the same tasks get in a full run.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import stages
from ..algos import sac as sac_algo
from ..errors import StageError
from ..nets import device_of, seed_everything, task_state
from ..recipe import section_hash

COLUMNS = ("obs", "act", "rew", "next_obs", "terminal", "truncated", "info")


# ---- shared by the collect and bcq stages --------------------------------------------------------
def select_tasks(tasks: list[int] | None, n_train: int) -> list[int]:
    if tasks is None:
        return list(range(n_train))
    bad = [i for i in tasks if not 0 <= i < n_train]
    if bad:
        raise StageError(f"--tasks: {bad} out of range (this run has training tasks 0..{n_train - 1})")
    return sorted(set(tasks))


def shard_name(tasks: list[int], n_train: int) -> str:
    """'all' for the full set, else the task indices joined by '-' (a group name)."""
    return "all" if list(tasks) == list(range(n_train)) else "-".join(map(str, tasks))


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from integers (recipe seed, task, episode, ...): independent streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def task_record_done(store, stage: str, task: int, digest: str) -> bool:
    rec = store.stage(f"{stage}/{task}")
    return rec.get("status") == "done" and rec.get("hash") == digest


def plan_shard(ctx, stage: str, tasks: list[int] | None) -> tuple[list[int], list[int], str]:
    """(requested tasks, tasks still to do, hash). A fresh start (not ctx.resume) forgets the
    requested tasks' records; a resume keeps the tasks already done."""
    n_train = ctx.recipe.env.n_train
    requested = select_tasks(tasks, n_train)
    digest = section_hash(ctx.recipe, *stages.REGISTRY[stage].sections)
    if not ctx.resume:
        for i in requested:
            ctx.store.delete(f"stages/{stage}/{i}")
    todo = [i for i in requested if not task_record_done(ctx.store, stage, i, digest)]
    return requested, todo, digest


def finish_shard(ctx, stage: str, digest: str):
    """None (the stage is done) when every training task is done, else a 'partial' result."""
    n_train = ctx.recipe.env.n_train
    left = [i for i in range(n_train) if not task_record_done(ctx.store, stage, i, digest)]
    if not left:
        return None
    return {"status": "partial", "message": f"tasks still to do: {','.join(map(str, left))}"}


def flat_state(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in module.state_dict().items()}


def unflat_state(prefix: str, tensors: dict) -> dict[str, torch.Tensor]:
    p = prefix + "/"
    return {k[len(p):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith(p)}


class Reporter:
    """A rich progress bar on a terminal; otherwise one plain line per `report` call."""

    def __init__(self, title: str, total: int, done: int = 0):
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.title, self.total = title, total
        if self.live:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                console=self.console, refresh_per_second=4)
            self.task = self.bar.add_task(title, total=total, completed=done, info="")
            self.bar.start()

    def update(self, done: int, info: str | None = None, line: bool = False) -> None:
        if self.live:
            fields = {"info": info} if info is not None else {}
            self.bar.update(self.task, completed=done, **fields)
        elif line and info is not None:
            self.console.print(f"{self.title} {done}/{self.total} {info}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.live:
            self.bar.stop()


def format_returns(tasks: list[int], returns) -> str:
    vals = [f"{i}:{r:.0f}" if np.isfinite(r) else f"{i}:–" for i, r in zip(tasks, returns)]
    if len(vals) > 12:
        finite = [r for r in returns if np.isfinite(r)]
        return f"return mean {np.mean(finite):.1f} min {np.min(finite):.1f} max {np.max(finite):.1f}" if finite else ""
    return "R " + " ".join(vals)


def episode_returns(rew: np.ndarray, ends: np.ndarray) -> list[float]:
    """Returns of the finished episodes of one task's transition stream."""
    out, start = [], 0
    for e in np.flatnonzero(ends):
        out.append(float(rew[start:e + 1].sum()))
        start = e + 1
    return out


# ---- the stage -----------------------------------------------------------------------------------
def checkpoint_path(shard: str) -> str:
    return f"models/collect/checkpoint/{shard}"


def sac_path(task: int) -> str:
    return f"models/collect/sac/{task}"


@stages.stage("collect", sections=("collect",))
def collect(ctx: stages.RunContext, tasks: list[int] | None = None):
    _, todo, digest = plan_shard(ctx, "collect", tasks)
    if todo:
        Collector(ctx, todo, digest).run()
    return finish_shard(ctx, "collect", digest)


class Collector:
    """One batched SAC over the tasks `todo`, their K environments, buffers and checkpoint."""

    def __init__(self, ctx: stages.RunContext, todo: list[int], digest: str):
        self.ctx, self.store, self.r, self.cfg = ctx, ctx.store, ctx.recipe, ctx.recipe.collect
        self.todo, self.digest = todo, digest
        n_train = self.r.env.n_train
        self.shard = shard_name(todo, n_train)
        self.metrics_name = "train" if self.shard == "all" else f"train_{self.shard}"
        self.device = device_of(self.r.device)
        params = ctx.tasks("train")
        self.envs = [ctx.dist.make_env(params[i], self.r.env.horizon) for i in todo]
        self.K = len(todo)
        self.obs_dim = self.envs[0].observation_space.shape[0]
        self.act_dim = self.envs[0].action_space.shape[0]
        self.n_feat = len(ctx.dist.info_names)

        seed_everything(derive_seed(self.r.seed, 1, *todo), self.r.threads)   # network initialisation
        self.sac = sac_algo.SAC(self.K, self.obs_dim, self.act_dim, self.cfg.hidden).to(self.device)
        self.opt = sac_algo.SACOptimisers(self.sac, self.cfg.lr)
        self.gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.r.seed, 2, *todo))

        # host arrays: the source of truth, flushed to the store at checkpoints
        N, K = self.cfg.steps, self.K
        self.host = {"obs": np.zeros((K, N, self.obs_dim), np.float32),
                     "act": np.zeros((K, N, self.act_dim), np.float32),
                     "rew": np.zeros((K, N), np.float32),
                     "next_obs": np.zeros((K, N, self.obs_dim), np.float32),
                     "terminal": np.zeros((K, N), bool), "truncated": np.zeros((K, N), bool),
                     "info": np.zeros((K, N, self.n_feat), np.float32)}
        # replay buffer on the device (views of the host arrays on the CPU)
        if self.device.type == "cpu":
            self.buf = {k: torch.from_numpy(self.host[k]) for k in ("obs", "act", "rew", "next_obs")}
            self.buf_terminal = torch.zeros((K, N), dtype=torch.float32)
        else:
            self.buf = {k: torch.zeros(self.host[k].shape, dtype=torch.float32, device=self.device)
                        for k in ("obs", "act", "rew", "next_obs")}
            self.buf_terminal = torch.zeros((K, N), dtype=torch.float32, device=self.device)
        self.t = 0                  # environment steps taken by every task (= rows per task)
        self.flushed = 0            # rows already in the store
        self.episodes = np.zeros(K, np.int64)     # episodes started by each task
        self.obs = np.zeros((K, self.obs_dim), np.float32)
        self.ep_start = np.zeros(K, np.int64)       # row where each task's unfinished episode began
        self.recent = [deque(maxlen=5) for _ in range(K)]
        self.acc = {name: torch.zeros(K, dtype=torch.float64) for name in ("critic_loss", "actor_loss", "alpha")}
        self.acc_n = 0

    # ---- environment bookkeeping -------------------------------------------------------------
    def reset_env(self, k: int, row: int) -> np.ndarray:
        """Start task k's next episode; its first transition will be row `row`."""
        seed = derive_seed(self.r.seed, 3, self.todo[k], int(self.episodes[k]))
        self.episodes[k] += 1
        self.ep_start[k] = row
        return np.asarray(self.envs[k].reset(seed=seed)[0], np.float32)

    def restore_envs(self) -> None:
        """Bring every env to its state at step t: reset with the unfinished episode's seed and
        replay the stored actions of that episode."""
        for k in range(self.K):
            ends = np.flatnonzero(self.host["terminal"][k, :self.t] | self.host["truncated"][k, :self.t])
            start = int(ends[-1]) + 1 if len(ends) else 0
            for ret in episode_returns(self.host["rew"][k, :self.t], self.host["terminal"][k, :self.t]
                                       | self.host["truncated"][k, :self.t])[-5:]:
                self.recent[k].append(ret)
            self.episodes[k] -= 1                     # reset_env counts the episode again
            obs = self.reset_env(k, start)
            for j in range(start, self.t):
                nxt = self.envs[k].step(self.host["act"][k, j])[0]
                obs = np.asarray(nxt, np.float32)
                if not np.array_equal(obs, self.host["next_obs"][k, j]):
                    raise StageError(f"collect: task {self.todo[k]}'s environment does not replay "
                                     f"deterministically (step {j}); cannot resume exactly — "
                                     "run again with --force")
            self.obs[k] = obs

    # ---- checkpoints ---------------------------------------------------------------------------
    def flush(self) -> None:
        if self.t > self.flushed:
            for k, i in enumerate(self.todo):
                self.store.append_rows(f"data/train/{i}",
                                       {c: self.host[c][k, self.flushed:self.t] for c in COLUMNS})
            self.flushed = self.t

    def save_checkpoint(self) -> None:
        self.flush()
        tensors = {**flat_state("sac", self.sac), "rng": self.gen.get_state()}
        for name, o in self.opt.items():
            tensors.update(sac_algo.optimiser_state(name, o))
        tensors.update({f"acc/{k}": v for k, v in self.acc.items()})
        meta = {"t": self.t, "episodes": self.episodes.tolist(), "acc_n": self.acc_n, "tasks": self.todo,
                "hash": self.digest, "metric_rows": self.store.rows(f"metrics/collect/{self.metrics_name}")}
        self.store.save_weights(checkpoint_path(self.shard), tensors, meta)

    def load_checkpoint(self) -> bool:
        path = checkpoint_path(self.shard)
        if not (self.ctx.resume and self.store.has_weights(path)):
            return False
        tensors, meta = self.store.load_weights(path)
        if meta.get("hash") != self.digest or meta.get("tasks") != self.todo:
            return False
        self.sac.load_state_dict(unflat_state("sac", tensors))
        for name, o in self.opt.items():
            sac_algo.load_optimiser_state(name, o, tensors)
        self.gen.set_state(torch.from_numpy(np.array(tensors["rng"])))
        self.acc = {k: torch.from_numpy(np.array(tensors[f"acc/{k}"])) for k in self.acc}
        self.acc_n = int(meta["acc_n"])
        self.t = self.flushed = int(meta["t"])
        self.episodes = np.asarray(meta["episodes"], np.int64)
        self.store.set_rows(f"metrics/collect/{self.metrics_name}", int(meta["metric_rows"]))
        for k, i in enumerate(self.todo):
            path = f"data/train/{i}"
            if self.store.rows(path) < self.t:
                raise StageError(f"{self.store.path}: {path} has fewer rows than its checkpoint; "
                                 "run again with --force")
            self.store.set_rows(path, self.t)
            rows = self.store.read_rows(path, 0, self.t)
            for c in COLUMNS:
                self.host[c][k, :self.t] = rows[c]
        self.buf_terminal[:, :self.t] = torch.as_tensor(self.host["terminal"][:, :self.t], dtype=torch.float32)
        if self.device.type != "cpu":
            for c, b in self.buf.items():
                b[:, :self.t] = torch.as_tensor(self.host[c][:, :self.t], device=self.device)
        self.restore_envs()
        return True

    def start_fresh(self) -> None:
        self.store.delete(f"metrics/collect/{self.metrics_name}")
        self.store.delete(checkpoint_path(self.shard))
        for k, i in enumerate(self.todo):
            self.store.delete(f"data/train/{i}")
            self.obs[k] = self.reset_env(k, 0)

    # ---- the loop ------------------------------------------------------------------------------
    def act(self) -> np.ndarray:
        if self.t < self.cfg.random_steps:        # uniform random actions first
            a = torch.rand((self.K, self.act_dim), generator=self.gen, device=self.device) * 2 - 1
        else:
            with torch.no_grad():
                s = torch.as_tensor(self.obs, device=self.device).unsqueeze(1)
                a = self.sac.actor(s, generator=self.gen)[0].squeeze(1)
        return a.cpu().numpy().astype(np.float32)

    def step_envs(self, actions: np.ndarray) -> None:
        t = self.t
        h = self.host
        for k, env in enumerate(self.envs):
            nxt, rew, term, trunc, info = env.step(actions[k])
            h["obs"][k, t], h["act"][k, t], h["rew"][k, t] = self.obs[k], actions[k], rew
            h["next_obs"][k, t], h["terminal"][k, t], h["truncated"][k, t] = nxt, term, trunc
            if self.n_feat:
                h["info"][k, t] = info["features"]
            if term or trunc:        # the return as `episode_returns` computes it from the stored rows
                self.recent[k].append(float(h["rew"][k, self.ep_start[k]:t + 1].sum()))
                self.obs[k] = self.reset_env(k, t + 1)
            else:
                self.obs[k] = nxt
        self.buf_terminal[:, t] = torch.as_tensor(h["terminal"][:, t], dtype=torch.float32)
        if self.device.type != "cpu":
            for c, b in self.buf.items():
                b[:, t] = torch.as_tensor(h[c][:, t], device=self.device)
        self.t += 1

    def sample(self) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.t, (self.K, self.cfg.batch_size), generator=self.gen, device=self.device)
        rows = torch.arange(self.K, device=self.device)[:, None]
        batch = {c: b[rows, idx] for c, b in self.buf.items()}
        batch["terminal"] = self.buf_terminal[rows, idx]
        return batch

    def log(self, rate: float) -> None:
        n = max(self.acc_n, 1)
        recent = [float(np.mean(q)) if q else float("nan") for q in self.recent]
        row = {"step": self.t, "env_steps_per_s": rate,
               "return": float(np.nanmean(recent)) if any(np.isfinite(recent)) else float("nan")}
        for k, i in enumerate(self.todo):
            row[f"return_{i}"] = recent[k]
            for name, v in self.acc.items():
                row[f"{name}_{i}"] = float(v[k]) / n if self.acc_n else float("nan")
        self.store.log("collect", self.metrics_name, row)
        self.acc = {k: torch.zeros_like(v) for k, v in self.acc.items()}
        self.acc_n = 0

    def run(self) -> None:
        cfg = self.cfg
        if not self.load_checkpoint():
            self.start_fresh()
        self.started = time.time()
        report = Reporter(f"collect {self.shard}", cfg.steps, self.t)
        start_t, start_time, last_time, last_t = self.t, time.perf_counter(), time.perf_counter(), self.t
        try:
            while self.t < cfg.steps:
                self.step_envs(self.act())
                if self.t >= max(cfg.random_steps, 1):                     # then updates_per_step per env step
                    for _ in range(cfg.updates_per_step):
                        out = sac_algo.update(self.sac, self.opt, self.sample(), cfg.gamma, cfg.tau,
                                              generator=self.gen)
                        for name in self.acc:
                            self.acc[name] += out[name].double().cpu()
                        self.acc_n += 1
                if self.t % cfg.log_every == 0 or self.t == cfg.steps:
                    now = time.perf_counter()
                    rate = self.K * (self.t - last_t) / max(now - last_time, 1e-9)
                    last_time, last_t = now, self.t
                    self.log(rate)
                    self.ctx.progress(self.t / cfg.steps)
                    recent = [float(np.mean(q)) if q else float("nan") for q in self.recent]
                    report.update(self.t, f"{rate:,.0f} env steps/s  {format_returns(self.todo, recent)}", line=True)
                elif self.t % 50 == 0:
                    report.update(self.t)
                if self.t % cfg.checkpoint_every == 0 and self.t < cfg.steps:
                    self.save_checkpoint()
            self.flush()
        finally:
            report.close()
        for k, i in enumerate(self.todo):
            self.store.save_weights(sac_path(i), task_state(self.sac, k),
                                    {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden": list(cfg.hidden),
                                     "steps": self.t, "hash": self.digest})
            self.store.set_stage(f"collect/{i}", status="done", hash=self.digest, rows=self.t,
                                 started=self.started, ended=time.time(), progress=1.0, shard=self.shard)
        self.store.delete(checkpoint_path(self.shard))
        for env in self.envs:
            env.close()
        elapsed = time.perf_counter() - start_time
        report.console.print(f"collect {self.shard}: {self.K} tasks × {cfg.steps} steps "
                             f"({self.t - start_t} this run) in {elapsed:.1f}s", highlight=False)
