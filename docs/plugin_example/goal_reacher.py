"""goal_reacher: an mbml task distribution packaged outside mbml (see README.md beside this file).

A point mass with inertia on a plane: the observation is its position and velocity, the action a
force in [-1, 1]²; the task is a goal position in the unit disc's upper half, which the observation
never shows. Reward −‖xy′ − goal‖ per step, 30 steps an episode.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from mbml_cli.envs import TaskDistribution

DT, DAMPING = 0.1, 0.5


class PointMass(gym.Env):
    """Position and velocity; a = force; semi-implicit Euler with linear damping."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._state = np.zeros(4)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._state = np.concatenate([self.np_random.uniform(-0.05, 0.05, 2), np.zeros(2)])
        return self._state.copy(), {}

    def step(self, action):
        xy, v = self._state[:2], self._state[2:]
        v = v + DT * (np.clip(np.asarray(action, np.float64), -1, 1) - DAMPING * v)
        self._state = np.concatenate([xy + DT * v, v])
        return self._state.copy(), 0.0, False, False, {}


class GoalReacher(TaskDistribution):
    """The protocol mbml needs: task sampling, the env of one task, a vectorised reward."""

    name = "goal_reacher"
    horizon = 30
    n_train, n_test = 6, 4
    task_param = "goal (x, y): radius U(0.3, 1), angle U(0, π)"

    def sample_tasks(self, n, rng, split):
        radius, angle = rng.uniform(0.3, 1.0, n), rng.uniform(0.0, np.pi, n)
        return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)

    def make_base_env(self, task):
        return PointMass()

    def reward(self, obs, act, next_obs, info, task):
        return -np.linalg.norm(np.asarray(next_obs)[..., :2] - np.asarray(task)[..., :2], axis=-1)
