"""Ant-v5 task families.

ant_dir:  run in direction θ ~ U(0, 2π/3);
          reward = v_torso,xy · (cos θ, sin θ) − 0.5‖a‖² − 5e-4·Σ clip(cfrc_ext, ±1)² + 1,
          terminated when torso z ∉ [0.2, 1] (Ant-v5's own health check). H = 200.
ant_goal: reach a goal at radius 3·√U(0, 1), angle U(0, 2π/3);
          reward = −‖xy_torso − goal‖₁ − 0.1‖a‖² − 5e-4·Σ clip(cfrc_ext, ±1)², never terminated.
          The observation includes the torso's x, y (the agent must know where it is), never the goal.
"""
from __future__ import annotations

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from .base import TaskDistribution

CONTACT_WEIGHT = 5e-4


def clipped_contact_sq(data) -> float:
    """Σ clip(cfrc_ext, −1, 1)² over all bodies, as Ant-v5 computes its contact cost."""
    return float(np.sum(np.square(np.clip(data.cfrc_ext, -1.0, 1.0))))


class AntDir(TaskDistribution):
    name = "ant_dir"
    horizon = 200
    n_train, n_test = 10, 8
    task_param = "running direction θ in [0, 2π/3] (radians)"
    info_names = ("x_velocity", "y_velocity", "contact_sq")

    def sample_tasks(self, n, rng, split):
        return rng.uniform(0.0, 2 * np.pi / 3, size=(n, 1))

    observations = ("full", "compact")

    def make_base_env(self, task):
        # full obs 105: qpos[2:] (13), qvel (14), clipped cfrc_ext of the 13 bodies (78); compact 27; act 8.
        return AntEnv(include_cfrc_ext_in_observation=self.observation == "full")

    def features(self, env, info):
        # the env's velocities are Δ(torso xpos)/dt over the step
        return np.array([info["x_velocity"], info["y_velocity"], clipped_contact_sq(env.data)])

    def reward(self, obs, act, next_obs, info, task):
        info, theta = np.asarray(info), np.asarray(task)[..., 0]
        forward = info[..., 0] * np.cos(theta) + info[..., 1] * np.sin(theta)
        ctrl = 0.5 * np.sum(np.square(act), axis=-1)
        return forward - ctrl - CONTACT_WEIGHT * info[..., 2] + 1.0


class AntGoal(TaskDistribution):
    name = "ant_goal"
    horizon = 200
    n_train, n_test = 10, 8
    task_param = "goal (x, y): radius 3·√U(0, 1), angle U(0, 2π/3)"
    info_names = ("x", "y", "contact_sq")

    def sample_tasks(self, n, rng, split):
        radius = 3.0 * np.sqrt(rng.uniform(0.0, 1.0, size=n))
        angle = rng.uniform(0.0, 2 * np.pi / 3, size=n)
        return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)

    observations = ("full", "compact")

    def make_base_env(self, task):
        # full obs 107: qpos (15, incl. x, y), qvel (14), clipped cfrc_ext (78); compact 29; act 8.
        return AntEnv(exclude_current_positions_from_observation=False, terminate_when_unhealthy=False,
                      include_cfrc_ext_in_observation=self.observation == "full")

    def features(self, env, info):
        x, y = env.data.body("torso").xpos[:2]
        return np.array([x, y, clipped_contact_sq(env.data)])

    def reward(self, obs, act, next_obs, info, task):
        info, goal = np.asarray(info), np.asarray(task)
        dist = np.sum(np.abs(info[..., :2] - goal[..., :2]), axis=-1)
        ctrl = 0.1 * np.sum(np.square(act), axis=-1)
        return -dist - ctrl - CONTACT_WEIGHT * info[..., 2]
