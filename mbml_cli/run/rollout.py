"""Run K environments (one per task) in lockstep with a batched policy.

`act(obs)` takes (K, obs_dim) numpy observations and returns (K, act_dim) actions in [-1, 1]. An
environment that terminates early stops stepping; its remaining rows are padding with `mask` 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np

from ..envs import TaskDistribution


@dataclass
class Episodes:
    obs: np.ndarray        # (K, H, obs_dim)
    act: np.ndarray        # (K, H, act_dim)
    rew: np.ndarray        # (K, H) float64, as the environments report it
    next_obs: np.ndarray   # (K, H, obs_dim)
    terminal: np.ndarray   # (K, H) bool
    info: np.ndarray       # (K, H, n_features)
    mask: np.ndarray       # (K, H) 1 for real steps, 0 for padding after a termination

    @property
    def returns(self) -> np.ndarray:
        """(K,) the sum of the rewards as the data stores them (float32)."""
        return (self.rew.astype(np.float32) * self.mask).sum(axis=1)

    @property
    def exact_returns(self) -> np.ndarray:
        """(K,) the rewards added up one step after another in float64."""
        return np.cumsum(self.rew, axis=1)[:, -1]


def make_envs(dist: TaskDistribution, tasks: np.ndarray, horizon: int) -> list[gym.Env]:
    return [dist.make_env(task, horizon) for task in tasks]


def run_episode(envs: list[gym.Env], act: Callable[[np.ndarray], np.ndarray],
                seed: int | Sequence[int] | None = None) -> Episodes:
    """One episode on every env at once. With an int `seed`, env k is reset with seed + k; with a
    sequence, with seed[k]."""
    K = len(envs)
    seeds = [None] * K if seed is None else [seed + k for k in range(K)] if np.isscalar(seed) else list(seed)
    first = [env.reset(seed=None if s is None else int(s))[0] for env, s in zip(envs, seeds)]
    H = envs[0].spec.max_episode_steps if envs[0].spec else envs[0]._max_episode_steps
    obs_dim, act_dim = first[0].shape[0], envs[0].action_space.shape[0]
    ep = Episodes(np.zeros((K, H, obs_dim), np.float32), np.zeros((K, H, act_dim), np.float32),
                  np.zeros((K, H), np.float64), np.zeros((K, H, obs_dim), np.float32),
                  np.zeros((K, H), bool), None, np.zeros((K, H), np.float32))
    feats: list[list[np.ndarray]] = [[] for _ in range(K)]
    obs = np.stack(first).astype(np.float32)
    alive = np.ones(K, bool)
    for t in range(H):
        actions = np.asarray(act(obs), dtype=np.float32)
        for k in np.flatnonzero(alive):
            nxt, r, term, trunc, info = envs[k].step(actions[k])
            ep.obs[k, t], ep.act[k, t], ep.rew[k, t], ep.next_obs[k, t] = obs[k], actions[k], r, nxt
            ep.terminal[k, t], ep.mask[k, t] = term, 1.0
            feats[k].append(info["features"])
            obs[k] = nxt
            alive[k] = not (term or trunc)
        if not alive.any():
            break
    n_feat = len(feats[0][0]) if feats[0] else 0
    ep.info = np.zeros((K, H, n_feat), np.float32)
    for k in range(K):
        if feats[k] and n_feat:
            ep.info[k, :len(feats[k])] = np.stack(feats[k])
    return ep
