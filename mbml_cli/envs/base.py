"""The task-distribution interface every environment family implements.

A distribution samples task parameters, builds a gymnasium environment for one task, and
evaluates its ground-truth reward on whole arrays of transitions. The environment's own step
reward *is* `reward(...)` applied to the single transition, so the two can never disagree.
The task parameter is never part of the observation.
"""
from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np

SPLITS = {"train": 0, "test": 1, "unseen": 2}


class TaskDistribution:
    """Base class: subclasses set the class attributes and implement the four hooks."""

    name: str = ""
    horizon: int = 0            # default episode length (a recipe may shorten it)
    n_train: int = 10
    n_test: int = 8
    task_param: str = ""        # one line: what a task parameter is
    info_names: tuple[str, ...] = ()   # columns of the per-step `info` features stored with the data
    reward_varies: bool = True  # False: every task has the same reward (only the dynamics differ)
    observations: tuple[str, ...] = ("full",)   # what `env.observation` may choose; `observation` is this copy's
    observation: str = "full"

    # ---- hooks -------------------------------------------------------------------------------
    def sample_tasks(self, n: int, rng: np.random.Generator, split: str) -> np.ndarray:
        """(n, p) float64 task parameters for `split` ("train", "test" or "unseen")."""
        raise NotImplementedError

    def make_base_env(self, task: np.ndarray) -> gym.Env:
        """The underlying environment set up for `task` (physics may depend on it)."""
        raise NotImplementedError

    def features(self, env: gym.Env, info: dict) -> np.ndarray:
        """(len(info_names),) float64 features of the step just taken, read from the simulator."""
        return np.zeros(0)

    def reward(self, obs, act, next_obs, info, task) -> np.ndarray:
        """Vectorised ground-truth reward. `act` in [-1, 1]; `info` (..., len(info_names));
        `task` (p,) or broadcastable (..., p). Returns (...,) float64."""
        raise NotImplementedError

    # ---- shared ------------------------------------------------------------------------------
    def observing(self, kind: str) -> "TaskDistribution":
        """A copy that builds its environments with observation `kind` (one of `observations`)."""
        if kind not in self.observations:
            raise LookupError(f"{self.name} has no {kind!r} observation (it has: {', '.join(self.observations)})")
        twin = copy.copy(self)
        twin.observation = kind
        return twin

    def tasks(self, split: str, n: int, seed: int) -> np.ndarray:
        """Deterministic draw: the same (split, n, seed) always gives the same tasks."""
        rng = np.random.default_rng([int(seed), SPLITS[split]])
        return np.asarray(self.sample_tasks(n, rng, split), dtype=np.float64).reshape(n, -1)

    def make_env(self, task: np.ndarray, horizon: int | None = None) -> gym.Env:
        """A gymnasium env for one task: actions in [-1, 1], reward from `reward`, time limit H."""
        env = TaskEnv(self, np.asarray(task, dtype=np.float64))
        return gym.wrappers.TimeLimit(env, max_episode_steps=int(horizon or self.horizon))


class TaskEnv(gym.Wrapper):
    """Rescales actions to [-1, 1] and replaces the reward with the distribution's reward."""

    def __init__(self, dist: TaskDistribution, task: np.ndarray):
        base = dist.make_base_env(task)
        space = base.action_space
        self._low = np.asarray(space.low, dtype=np.float64)
        self._high = np.asarray(space.high, dtype=np.float64)
        if not (np.all(self._low == -1) and np.all(self._high == 1)):
            ones = np.ones(space.shape, dtype=space.dtype)
            base = gym.wrappers.RescaleAction(base, -ones, ones)
        super().__init__(base)
        self.dist, self.task = dist, task
        self._obs = None

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = obs
        return obs, info

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        next_obs, _, terminated, truncated, info = self.env.step(action.astype(self.action_space.dtype))
        feats = self.dist.features(self.env.unwrapped, info)
        info["features"] = feats
        reward = float(self.dist.reward(self._obs, action, next_obs, feats, self.task))
        self._obs = next_obs
        return next_obs, reward, terminated, truncated, info
