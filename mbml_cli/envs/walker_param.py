"""walker_param: Walker2d-v5 whose physics is randomised per task (rand_param_envs convention).

Each element of body_mass, body_inertia, geom_friction gets its own factor 1.5^u and each element of
dof_damping 1.3^u, u ~ U(−2, 2); the task vector is all the u's concatenated in that order (65 numbers).
Zero entries (the world body, the unactuated root dofs) stay zero. The reward does not depend on the
task: Δx/dt + 1 − 1e-3‖a‖²; terminated unless 0.8 < h < 2 and |angle| < 1 (Walker2d-v5's defaults).
"""
from __future__ import annotations

import functools

import mujoco
import numpy as np
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

from .base import TaskDistribution

PARAMS = (("body_mass", 1.5), ("body_inertia", 1.5), ("geom_friction", 1.5), ("dof_damping", 1.3))
LOG_SCALE_LIMIT = 2.0


class RandParamWalker2dEnv(Walker2dEnv):
    """Walker2d-v5 with `set_task(u)`: scales the model arrays from their pristine copies."""

    def __init__(self, task: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self._pristine = {name: getattr(self.model, name).copy() for name, _ in PARAMS}
        self.set_task(task)

    def set_task(self, task: np.ndarray) -> None:
        u = np.asarray(task, dtype=np.float64).ravel()
        offset = 0
        for name, base in PARAMS:
            pristine = self._pristine[name]
            part = u[offset:offset + pristine.size].reshape(pristine.shape)
            getattr(self.model, name)[:] = pristine * base ** part   # from pristine: never compounds
            offset += pristine.size
        assert offset == u.size, f"walker_param task has {u.size} numbers, expected {offset}"
        # recompute the constants MuJoCo derives from these at compile time (subtree masses,
        # inverse weights used by the constraint solver, ...)
        mujoco.mj_setConst(self.model, self.data)


@functools.cache
def param_sizes() -> tuple[int, ...]:
    model = Walker2dEnv().model
    return tuple(getattr(model, name).size for name, _ in PARAMS)


class WalkerParam(TaskDistribution):
    name = "walker_param"
    horizon = 200
    n_train, n_test = 30, 8
    task_param = "log-scale physics factors u ~ U(−2, 2): body_mass, body_inertia, geom_friction ×1.5^u, dof_damping ×1.3^u"
    info_names = ("x_velocity",)
    reward_varies = False

    def sample_tasks(self, n, rng, split):
        return rng.uniform(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT, size=(n, sum(param_sizes())))

    def make_base_env(self, task):
        return RandParamWalker2dEnv(task)   # obs 17, act 6 in [-1, 1], dt 0.008

    def features(self, env, info):
        return np.array([info["x_velocity"]], dtype=np.float64)

    def reward(self, obs, act, next_obs, info, task):
        r = np.asarray(info)[..., 0] + 1.0 - 1e-3 * np.sum(np.square(act), axis=-1)
        # the same value for every task, shaped like any other distribution's relabelled rewards
        return np.broadcast_to(r, np.broadcast_shapes(r.shape, np.shape(task)[:-1])).copy()
