"""halfcheetah_vel: HalfCheetah-v5 (dt 0.05) asked to run at a target forward velocity v*.

reward = −|v_x − v*| − 0.05‖a‖², v_x = Δ(root x)/dt (the env's own `x_velocity`).
Train tasks v* ~ U(0, 1.5); test and unseen tasks v* ~ U(0.5, 1.5). H = 1000.
"""
from __future__ import annotations

import contextlib
import warnings

import mujoco
import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from .base import TaskDistribution


@contextlib.contextmanager
def _no_settotalmass_warning():
    """Recent MuJoCo (4.0 here) warns that gymnasium's half_cheetah.xml uses the deprecated `settotalmass`
    and appends the warning to MUJOCO_LOG.TXT in the working directory on every load. Drop that
    one warning while the model compiles; pass any other on as a Python warning."""
    previous = mujoco.get_mju_user_warning()

    def on_warning(message):
        if "settotalmass" not in message:
            warnings.warn(f"MuJoCo: {message}", stacklevel=2)

    mujoco.set_mju_user_warning(on_warning)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


class HalfCheetahVel(TaskDistribution):
    name = "halfcheetah_vel"
    horizon = 1000
    n_train, n_test = 10, 8
    task_param = "target forward velocity v*"
    info_names = ("x_velocity",)

    def sample_tasks(self, n, rng, split):
        low = 0.0 if split == "train" else 0.5
        return rng.uniform(low, 1.5, size=(n, 1))

    def make_base_env(self, task):
        with _no_settotalmass_warning():
            return HalfCheetahEnv()   # obs 17 (root x excluded), act 6 in [-1, 1], dt 0.05

    def features(self, env, info):
        return np.array([info["x_velocity"]], dtype=np.float64)

    def reward(self, obs, act, next_obs, info, task):
        v = np.asarray(info)[..., 0]
        target = np.asarray(task)[..., 0]
        return -np.abs(v - target) - 0.05 * np.sum(np.square(act), axis=-1)
