"""point_goal: the toy of the paper's Fig. 1. A 2-D point starts at the origin; the action moves
it by 0.1·a; the goal lies on a 120° arc of radius 1; reward = −‖xy' − goal‖; H = 20."""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from .base import TaskDistribution


class PointEnv(gym.Env):
    """Pure-numpy point mass; the observation is its position only."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._xy = np.zeros(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._xy = np.zeros(2)
        return self._xy.copy(), {}

    def step(self, action):
        self._xy = self._xy + 0.1 * np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return self._xy.copy(), 0.0, False, False, {}


class PointGoal(TaskDistribution):
    name = "point_goal"
    horizon = 20
    n_train, n_test = 10, 8
    task_param = "goal (x, y) on a 120° arc of radius 1"

    def sample_tasks(self, n, rng, split):
        angle = rng.uniform(0.0, 2 * np.pi / 3, size=n)
        return np.stack([np.cos(angle), np.sin(angle)], axis=-1)

    def make_base_env(self, task):
        return PointEnv()

    def reward(self, obs, act, next_obs, info, task):
        return -np.linalg.norm(np.asarray(next_obs)[..., :2] - np.asarray(task)[..., :2], axis=-1)
