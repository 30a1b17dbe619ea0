"""The unseen-task evaluation protocol (PEARL's, docs/design.md §4) and the reward-reading probe.

Protocol, on T tasks in lockstep: episode 1 acts with z drawn from the prior N(0, I); after every
episode the posterior is inferred from *everything* collected on that task so far and a fresh z is
drawn from it; the score of a task is the mean return of the episodes after the first `skip`
(episodes 3–5 with the defaults), and a policy's score is the mean over tasks.

Probe: does the encoder read rewards? For every ordered pair of training tasks i ≠ j, take task j's
stored transitions, give them task i's TRUE rewards, and infer z. An encoder that reads rewards puts
that posterior nearer (in KL) to task i's own posterior than to task j's; one that only looks at
states and actions puts it on task j's. The score is the fraction of pairs that land nearer to i.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from rich.table import Table

from ..algos.encoder import kl_diag
from ..algos.data import TaskData, gather_rows
from .rollout import Episodes, make_envs, run_episode


# ---- protocol ------------------------------------------------------------------------------------
@dataclass
class ProtocolResult:
    returns: np.ndarray      # (T, episodes)
    z_mean: np.ndarray       # (T, latent) posterior mean given all episodes
    z_var: np.ndarray        # (T, latent)
    skip: int
    z_points: np.ndarray | None = None   # (T, n, latent) posterior means after every episode (of every repeat)

    @property
    def per_task(self) -> np.ndarray:
        """(T,) mean return of the counted episodes."""
        return self.returns[:, self.skip:].mean(1)

    @property
    def score(self) -> float:
        return float(self.per_task.mean())


def context_of(episodes: list[Episodes]) -> dict[str, np.ndarray]:
    """Everything collected so far on each task, as a masked context (T, ΣH, ·)."""
    cat = lambda name: np.concatenate([getattr(e, name) for e in episodes], axis=1)
    return {"obs": cat("obs"), "act": cat("act"), "rew": cat("rew"), "next_obs": cat("next_obs"),
            "mask": cat("mask")}


def run_protocol(envs: list, policy, episodes: int, skip: int, seed: int, on_episode=None) -> ProtocolResult:
    """The PEARL protocol for a policy with `prior(n)`, `infer(obs, act, rew, next_obs, mask)`,
    `sample(posterior, generator)` and `act(obs, z, generator)` (see `api.Policy`).
    Deterministic given `seed` (env resets use seed + 1000·episode + task index)."""
    T = len(envs)
    gen = torch.Generator().manual_seed(int(seed))
    posterior = policy.prior(T)                            # episode 1: z from the prior
    collected: list[Episodes] = []
    returns = np.zeros((T, episodes))
    means = []
    for e in range(episodes):
        z = policy.sample(posterior, gen)
        ep = run_episode(envs, lambda obs: policy.act(obs, z, gen), seed=int(seed) + 1000 * e)
        returns[:, e] = ep.returns
        collected.append(ep)
        posterior = policy.infer(**context_of(collected))  # from everything collected so far
        means.append(np.asarray(posterior.mean))
        if on_episode is not None:
            on_episode(e + 1)
    return ProtocolResult(returns, np.asarray(posterior.mean), np.asarray(posterior.var), skip,
                          np.stack(means, axis=1))


def make_eval_envs(dist, tasks: np.ndarray, horizon: int, repeats: int = 1) -> list:
    """The envs of `evaluate_tasks`: every task `repeats` times (repeat-major)."""
    return make_envs(dist, np.tile(np.asarray(tasks), (repeats, 1)), horizon)


def evaluate_tasks(envs: list, policy, episodes: int, skip: int, seed: int, repeats: int = 1,
                   on_episode=None) -> ProtocolResult:
    """`run_protocol` on T tasks × `repeats` independent runs, all in lockstep (`make_eval_envs`);
    returns (T, episodes) are the mean over the repeats, z_mean/z_var those of the first repeat, and
    z_points (T, repeats·episodes, latent) the posterior means after every episode of every repeat.
    `on_episode(e)` is called after episode e (1-based) of every task and repeat."""
    res = run_protocol(envs, policy, episodes, skip, seed, on_episode)
    T = len(envs) // repeats
    points = res.z_points.reshape(repeats, T, episodes, -1).transpose(1, 0, 2, 3).reshape(T, repeats * episodes, -1)
    return ProtocolResult(res.returns.reshape(repeats, T, -1).mean(0), res.z_mean[:T], res.z_var[:T], skip, points)


def returns_table(result: ProtocolResult, tasks: np.ndarray, title: str) -> Table:
    E = result.returns.shape[1]
    table = Table("task", "parameter", *[f"ep {e + 1}" + ("" if e >= result.skip else " ·") for e in range(E)],
                  "score", title=title)
    for t in range(len(tasks)):
        param = np.atleast_1d(tasks[t])
        table.add_row(str(t), ", ".join(f"{v:.2f}" for v in param[:3]) + (", …" if len(param) > 3 else ""),
                      *[f"{r:.1f}" for r in result.returns[t]], f"{result.per_task[t]:.1f}")
    table.add_row("mean", "", *[f"{r:.1f}" for r in result.returns.mean(0)],
                  f"[bold]{result.score:.1f}[/bold] ± {result.per_task.std():.1f}")
    return table


# ---- probe ---------------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    closer: np.ndarray       # (K, K) fraction of draws where pair (i, j) lands nearer task i (diagonal 0)
    kl_own: np.ndarray       # (K, K) mean KL(q(c_j with r_i) ‖ q(c_i))
    kl_other: np.ndarray     # (K, K) mean KL(q(c_j with r_i) ‖ q(c_j))

    @property
    def score(self) -> float:
        K = self.closer.shape[0]
        return float(self.closer[~np.eye(K, dtype=bool)].mean()) if K > 1 else float("nan")


@torch.no_grad()
def probe_encoder(encoder, data: TaskData, tasks: np.ndarray, dist, context_size: int, draws: int,
                  generator: torch.Generator) -> ProbeResult:
    """For each draw, one context of `context_size` stored transitions per training task; then every
    ordered pair (i, j) at once: task j's context with task i's true rewards."""
    K = data.n_tasks
    closer = np.zeros((K, K))
    kl_own = np.zeros((K, K))
    kl_other = np.zeros((K, K))
    for _ in range(draws):
        u = torch.rand(K, context_size, generator=generator)
        idx = (u * data.sizes[:, None]).long()
        ctx = {f: gather_rows(getattr(data, f), idx) for f in ("obs", "act", "rew", "next_obs", "info")}
        np_ctx = {k: v.numpy() for k, v in ctx.items()}
        # swapped[i, j, n] = task i's true reward on task j's n-th transition
        swapped = np.stack([np.asarray(dist.reward(np_ctx["obs"], np_ctx["act"], np_ctx["next_obs"],
                                                   np_ctx["info"], tasks[i]), dtype=np.float32)
                            for i in range(K)])
        own_mu, own_var = encoder(ctx["obs"], ctx["act"], ctx["rew"], ctx["next_obs"])        # (K, L)
        ex = lambda t: t.unsqueeze(0).expand(K, *t.shape)
        sw_mu, sw_var = encoder(ex(ctx["obs"]), ex(ctx["act"]), torch.from_numpy(swapped), ex(ctx["next_obs"]))
        d_i = kl_diag(sw_mu, sw_var, own_mu.unsqueeze(1).expand_as(sw_mu), own_var.unsqueeze(1).expand_as(sw_var))
        d_j = kl_diag(sw_mu, sw_var, own_mu.unsqueeze(0).expand_as(sw_mu), own_var.unsqueeze(0).expand_as(sw_var))
        closer += (d_i < d_j).double().numpy()
        kl_own += d_i.double().numpy()
        kl_other += d_j.double().numpy()
    eye = np.eye(K, dtype=bool)
    closer[eye] = 0.0
    return ProbeResult(closer / draws, kl_own / draws, kl_other / draws)
