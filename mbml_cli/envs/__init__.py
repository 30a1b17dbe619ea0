"""Registry of task distributions: a recipe names one by `env.name` — a built-in name, an installed
plugin (entry point group `mbml.distributions`), `package.module:Class`, or `none` (imported data
without an environment); see `plugins.py`."""
from __future__ import annotations

import difflib

from . import plugins
from .ant import AntDir, AntGoal
from .base import SPLITS, TaskDistribution, TaskEnv
from .halfcheetah_vel import HalfCheetahVel
from .humanoid_dir_m import HumanoidDirM
from .plugins import has_environment
from .point_goal import PointGoal
from .umaze_goal_m import UMazeGoalM
from .walker_param import WalkerParam

REGISTRY: dict[str, TaskDistribution] = {d.name: d for d in [
    PointGoal(), HalfCheetahVel(), AntDir(), AntGoal(), HumanoidDirM(), WalkerParam(), UMazeGoalM()]}
_LOADED: dict[str, TaskDistribution] = {}


def get(name: str) -> TaskDistribution:
    """The distribution `name`; LookupError (one line) when it names none."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name not in _LOADED:
        dist = plugins.load(name)
        if dist is None:
            names = list(REGISTRY) + sorted(plugins.entry_points())
            near = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (one of {', '.join(names)}, module:Class or none)"
            raise LookupError(f"unknown distribution {name!r}{hint}")
        _LOADED[name] = dist
    return _LOADED[name]


def of(env) -> TaskDistribution:
    """The distribution a recipe's `env` section names, seeing its `env.observation`; LookupError (one line)
    when the name is unknown or the distribution has no such observation."""
    return seeing(get(env.name), getattr(env, "observation", "full"), env.name)


def seeing(dist, kind: str, name: str | None = None) -> TaskDistribution:
    """`dist` with observation `kind`: itself for "full", else its `observing(kind)` copy; LookupError
    (one line, naming `name`, default `dist.name`) when it has no such observation."""
    if kind == "full":
        return dist
    if not hasattr(dist, "observing"):                 # a plugin without the TaskDistribution base
        raise LookupError(f"{name or dist.name} has no {kind!r} observation (it has: full)")
    return dist.observing(kind)


def widths(dist, task=None) -> tuple[int, int]:
    """(observation, action) widths of `dist`'s environments, from one built on `task` (default: its
    first training task of seed 0)."""
    env = dist.make_env(dist.tasks("train", 1, 0)[0] if task is None else task)
    try:
        return env.observation_space.shape[0], env.action_space.shape[0]
    finally:
        env.close()


__all__ = ["REGISTRY", "SPLITS", "TaskDistribution", "TaskEnv", "get", "has_environment", "of", "plugins", "seeing", "widths"]
