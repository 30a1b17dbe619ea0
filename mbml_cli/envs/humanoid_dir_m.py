"""humanoid_dir_m: Humanoid-v5 walking in direction θ ~ U(0, 2π/3).

reward = 1.25·(Δcom_xy · (cos θ, sin θ))/dt − 0.1‖a_raw‖² − min(5e-7·Σ cfrc_ext², 10) + 5,
where a_raw = 0.4·a is the control actually applied (Humanoid's ctrlrange is ±0.4) and com is
the whole-body centre of mass. Terminated when the torso height z ∉ (1, 2). H = 200.
"""
from __future__ import annotations

import numpy as np
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv

from .base import TaskDistribution

CTRL_RANGE = 0.4   # humanoid.xml: every motor has ctrlrange ±0.4


class HumanoidDirM(TaskDistribution):
    name = "humanoid_dir_m"
    horizon = 200
    n_train, n_test = 10, 8
    task_param = "walking direction θ in [0, 2π/3] (radians)"
    info_names = ("x_velocity", "y_velocity", "contact_sq")

    def sample_tasks(self, n, rng, split):
        return rng.uniform(0.0, 2 * np.pi / 3, size=(n, 1))

    observations = ("full", "compact")

    def make_base_env(self, task):
        # full obs 348: qpos[2:] (22), qvel (23), cinert (130), cvel (78), qfrc_actuator (17), cfrc_ext (78);
        # compact obs 45: qpos[2:], qvel. act 17 in ±0.4
        full = self.observation == "full"
        return HumanoidEnv(include_cinert_in_observation=full, include_cvel_in_observation=full,
                           include_qfrc_actuator_in_observation=full, include_cfrc_ext_in_observation=full)

    def features(self, env, info):
        # the env's velocities are Δ(mass-weighted centre of mass)/dt over the step
        contact_sq = float(np.sum(np.square(env.data.cfrc_ext)))
        return np.array([info["x_velocity"], info["y_velocity"], contact_sq])

    def reward(self, obs, act, next_obs, info, task):
        info, theta = np.asarray(info), np.asarray(task)[..., 0]
        forward = 1.25 * (info[..., 0] * np.cos(theta) + info[..., 1] * np.sin(theta))
        ctrl = 0.1 * np.sum(np.square(CTRL_RANGE * np.asarray(act)), axis=-1)
        contact = np.minimum(5e-7 * info[..., 2], 10.0)
        return forward - ctrl - contact + 5.0
