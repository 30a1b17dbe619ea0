"""umaze_goal_m: a point mass in a D4RL-style U-maze (our own MJCF, assets/umaze.xml).

Arms at x ≈ 1 and x ≈ 3 (y from 1 to 3) joined at (2, 3); the point starts at the junction (2, 3)
plus U(−0.1, 0.1) noise. Observation (x, y, vx, vy); action = motor force in [−1, 1]² (gear 100).
Goals: half with x ~ U(0.4, 1.2) (left arm), half with x ~ U(2.4, 3.2) (right arm), y ~ U(1, 2).
reward = exp(−‖xy' − goal‖); never terminated. H = 300.
"""
from __future__ import annotations

import os

import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco import MujocoEnv

from .base import TaskDistribution

XML = os.path.join(os.path.dirname(__file__), "assets", "umaze.xml")
START = np.array([2.0, 3.0])
FRAME_SKIP = 3   # timestep 0.01 → dt 0.03


class PointUMazeEnv(MujocoEnv, utils.EzPickle):
    """The point mass in the U-maze; knows nothing about goals."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 33}

    def __init__(self, reset_noise_scale: float = 0.1, **kwargs):
        utils.EzPickle.__init__(self, reset_noise_scale, **kwargs)
        self._reset_noise_scale = reset_noise_scale
        obs_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float64)
        MujocoEnv.__init__(self, XML, FRAME_SKIP, observation_space=obs_space, **kwargs)
        self.init_qpos = START.copy()   # the slide joints' qpos is the point's (x, y)

    def _get_obs(self):
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def step(self, action):
        self.do_simulation(action, self.frame_skip)
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), 0.0, False, False, {}

    def reset_model(self):
        s = self._reset_noise_scale
        qpos = self.init_qpos + self.np_random.uniform(-s, s, size=self.model.nq)
        self.set_state(qpos, np.zeros(self.model.nv))
        return self._get_obs()


class UMazeGoalM(TaskDistribution):
    name = "umaze_goal_m"
    horizon = 300
    n_train, n_test = 10, 10
    task_param = "goal (x, y): x ~ U(0.4, 1.2) or U(2.4, 3.2) (half each), y ~ U(1, 2)"

    def sample_tasks(self, n, rng, split):
        n_left = (n + 1) // 2   # for odd n the extra goal goes to the left arm
        x = np.concatenate([rng.uniform(0.4, 1.2, n_left), rng.uniform(2.4, 3.2, n - n_left)])
        y = rng.uniform(1.0, 2.0, n)
        return np.stack([x, y], axis=-1)

    def make_base_env(self, task):
        return PointUMazeEnv()

    def reward(self, obs, act, next_obs, info, task):
        dist = np.linalg.norm(np.asarray(next_obs)[..., :2] - np.asarray(task)[..., :2], axis=-1)
        return np.exp(-dist)
