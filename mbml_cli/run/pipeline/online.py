"""R environments stepped in lockstep and the transitions they produce: the online part of
`mbml collect` (one row per training task) and `mbml finetune` (one row per run).

Host arrays (numpy; row k is environment k, N the number of steps) are the source of truth, flushed
to the store table `paths[k]` (the same columns) at checkpoints and at the end:

  obs, next_obs        float32 (R, N, obs_dim)
  act                  float32 (R, N, act_dim)
  rew                  float32 (R, N)
  terminal, truncated  bool (R, N)   (truncated: a time-limit cut, kept apart from `terminal`)
  info                 float32 (R, N, n_info): the simulator features of each step — only when
                       `n_info` is given (collect)

The replay buffer `buf` (obs, act, rew, next_obs) and `buf_terminal` (terminal as float) are views
of the host arrays on the CPU and copies kept in step on a GPU; `sample` draws rows uniformly below t.

Exact resume. Episode e of environment k is reset with the seed `seed_of(k, e)` and an environment
is deterministic given its actions, so its state at step t follows from the stored rows: `load`
rolls the tables back to a checkpoint's t, reads them into the host arrays and the buffer, resets
each environment with its unfinished episode's seed and replays that episode's stored actions
(checked against the stored next_obs).
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np
import torch

from ...core import layout
from ...errors import StageError
from ...datasets.batches import episode_returns

BUFFER = ("obs", "act", "rew", "next_obs")


class LockstepEnvs:
    """`envs` (one per row), their transitions for `steps` steps, and their episode bookkeeping."""

    def __init__(self, envs: list, steps: int, device: torch.device, seed_of: Callable[[int, int], int],
                 paths: list[str], labels: list[str], n_info: int | None = None):
        self.envs, self.device, self.seed_of = envs, device, seed_of
        self.paths, self.labels = paths, labels        # each row's store table, its name in errors
        self.R = R = len(envs)
        N = steps
        obs_dim, act_dim = envs[0].observation_space.shape[0], envs[0].action_space.shape[0]
        self.host = {c: np.zeros((R, N, *shape), layout.BATCH_COLUMNS[c])
                     for c, shape in layout.batch_shapes(obs_dim, act_dim, n_info).items()}
        self.n_info = n_info or 0
        if device.type == "cpu":
            self.buf = {c: torch.from_numpy(self.host[c]) for c in BUFFER}
        else:
            self.buf = {c: torch.zeros(self.host[c].shape, dtype=torch.float32, device=device) for c in BUFFER}
        self.buf_terminal = torch.zeros((R, N), dtype=torch.float32, device=device)
        self.t = 0                                  # steps taken by every env (= rows per env)
        self.flushed = 0                            # rows already in the store
        self.episodes = np.zeros(R, np.int64)       # episodes started by each env
        self.ep_start = np.zeros(R, np.int64)       # row where each env's unfinished episode began
        self.obs = np.zeros((R, obs_dim), np.float32)          # each env's current observation
        self.recent = [deque(maxlen=5) for _ in range(R)]     # each env's last 5 episode returns

    # ---- episodes --------------------------------------------------------------------------------
    def reset(self, k: int, row: int) -> None:
        """Start env k's next episode; its first transition will be row `row`."""
        seed = self.seed_of(k, int(self.episodes[k]))
        self.episodes[k] += 1
        self.ep_start[k] = row
        self.obs[k] = np.asarray(self.envs[k].reset(seed=seed)[0], np.float32)

    def start(self) -> None:
        """A fresh start: every env's first episode."""
        for k in range(self.R):
            self.reset(k, 0)

    def step(self, actions: np.ndarray, on_episode_end: Callable[[int, int], None] | None = None) -> None:
        """Step every env once with its row of `actions` and store the transitions as row t. An env
        whose episode ends is reset at once, then `on_episode_end(k, rows of env k so far)` is called."""
        t, h = self.t, self.host
        for k, env in enumerate(self.envs):
            nxt, rew, term, trunc, info = env.step(actions[k])
            h["obs"][k, t], h["act"][k, t], h["rew"][k, t] = self.obs[k], actions[k], rew
            h["next_obs"][k, t], h["terminal"][k, t], h["truncated"][k, t] = nxt, term, trunc
            if self.n_info:
                h["info"][k, t] = info["features"]
            if term or trunc:        # the return as `episode_returns` computes it from the stored rows
                self.recent[k].append(float(h["rew"][k, self.ep_start[k]:t + 1].sum()))
                self.reset(k, t + 1)
                if on_episode_end is not None:
                    on_episode_end(k, t + 1)
            else:
                self.obs[k] = nxt
        self.to_buffer(slice(t, t + 1))
        self.t += 1

    def sample(self, batch_size: int, generator: torch.Generator, common: bool = False) -> dict[str, torch.Tensor]:
        """A (R, batch_size, ·) mini-batch, uniform over each env's rows so far; `common`: the same rows
        in every env."""
        idx = torch.randint(0, self.t, (1 if common else self.R, batch_size), generator=generator,
                            device=self.device).expand(self.R, batch_size)
        rows = torch.arange(self.R, device=self.device)[:, None]
        batch = {c: b[rows, idx] for c, b in self.buf.items()}
        batch["terminal"] = self.buf_terminal[rows, idx]
        return batch

    def mean_recent(self) -> list[float]:
        """Each env's mean return over its last 5 finished episodes (nan before the first)."""
        return [float(np.mean(q)) if q else float("nan") for q in self.recent]

    def close(self) -> None:
        for env in self.envs:
            env.close()

    # ---- store and resume ------------------------------------------------------------------------
    def to_buffer(self, rows: slice) -> None:
        """Host rows → the device buffer (on the CPU only terminal needs copying)."""
        self.buf_terminal[:, rows] = torch.as_tensor(self.host["terminal"][:, rows], dtype=torch.float32)
        if self.device.type != "cpu":
            for c, b in self.buf.items():
                b[:, rows] = torch.as_tensor(self.host[c][:, rows], device=self.device)

    def flush(self, store) -> None:
        """Append the rows not yet in the store."""
        if self.t > self.flushed:
            for k, path in enumerate(self.paths):
                store.append_rows(path, {c: a[k, self.flushed:self.t] for c, a in self.host.items()})
            self.flushed = self.t

    def load(self, store, t: int, episodes: list[int]) -> None:
        """Back to a checkpoint at step t (`episodes` started per env): the tables rolled back to t
        rows and read into the host arrays and the buffer, every env restored."""
        self.t = self.flushed = t
        self.episodes = np.asarray(episodes, np.int64)
        for k, path in enumerate(self.paths):
            if store.rows(path) < t:
                raise StageError(f"{store.path}: {path} has fewer rows than its checkpoint; run again with --force")
            store.set_rows(path, t)
            rows = store.read_rows(path, 0, t)
            for c, a in self.host.items():
                a[k, :t] = rows[c]
        self.to_buffer(slice(0, t))
        self.restore()

    def restore(self) -> None:
        """Bring every env to its state at step t: reset with the unfinished episode's seed and
        replay the stored actions of that episode; refill `recent` from the stored returns."""
        h, t = self.host, self.t
        for k in range(self.R):
            ends = h["terminal"][k, :t] | h["truncated"][k, :t]
            for ret in episode_returns(h["rew"][k, :t], ends)[-5:]:
                self.recent[k].append(ret)
            idx = np.flatnonzero(ends)
            start = int(idx[-1]) + 1 if len(idx) else 0
            self.episodes[k] -= 1                     # reset counts the episode again
            self.reset(k, start)
            for j in range(start, t):
                nxt = np.asarray(self.envs[k].step(h["act"][k, j])[0], np.float32)
                if not np.array_equal(nxt, h["next_obs"][k, j]):
                    raise StageError(f"{self.labels[k]}'s environment does not replay deterministically "
                                     f"(step {j}); cannot resume exactly — run again with --force")
                self.obs[k] = nxt
