"""Task distributions from outside mbml: a `module:Class` name, or an entry point of the group
`mbml.distributions`, and `none` for imported data that has no environment.

A plugin implements the protocol of `base.TaskDistribution` (subclassing it is the easy way): the
attributes `name`, `horizon`, `n_train`, `n_test`, `task_param`, `info_names` and the methods
`tasks(split, n, seed)` (deterministic task sampling), `make_env(task, horizon)` (a gymnasium env,
actions in [-1, 1]) and `reward(obs, act, next_obs, info, task)` (vectorised ground-truth reward).
See docs/plugin_example/ for a packaged one.
"""
from __future__ import annotations

import importlib
from importlib import metadata

import numpy as np

from ..errors import StageError
from .base import TaskDistribution

GROUP = "mbml.distributions"
NONE = "none"
PROTOCOL = ("name", "horizon", "n_train", "n_test", "task_param", "info_names", "tasks", "make_env", "reward")


class NoEnvironment(StageError):
    """A stage asked for an environment or a ground-truth reward that imported data does not have."""


class DatasetOnly(TaskDistribution):
    """`env.name: none`: batches imported without an environment. Tasks are the datasets' parameters;
    there are no test tasks, no environment to act in and no ground-truth reward."""

    name = NONE
    horizon = 0
    n_train, n_test = 0, 0
    task_param = "imported with the data (no environment)"
    needs_env_message = ("this run's data has no environment (env.name: none); evaluation needs a task "
                         "distribution: import with --env NAME (a registered one, module:Class or an entry point)")

    def tasks(self, split, n, seed):
        return np.zeros((0, 0)) if n == 0 else np.zeros((n, 0))

    def make_base_env(self, task):
        raise NoEnvironment(self.needs_env_message)

    def reward(self, obs, act, next_obs, info, task):
        raise NoEnvironment(self.needs_env_message)


def has_environment(dist) -> bool:
    return not isinstance(dist, DatasetOnly)


def _check_protocol(obj, name: str):
    missing = [a for a in PROTOCOL if not hasattr(obj, a)]
    if missing:
        raise LookupError(f"task distribution {name!r} lacks {', '.join(missing)} "
                          "(implement mbml_cli.envs.TaskDistribution's protocol)")
    return obj


def _instantiate(target, name: str):
    try:
        return _check_protocol(target() if isinstance(target, type) else target, name)
    except LookupError:
        raise
    except Exception as e:
        raise LookupError(f"task distribution {name!r} could not be created: {type(e).__name__}: {e}") from None


def from_module(name: str):
    """`package.module:Class` (a class, or an instance) → an instance."""
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise LookupError(f"task distribution {name!r}: cannot import {module_name!r} ({e})") from None
    if not hasattr(module, attr):
        raise LookupError(f"task distribution {name!r}: module {module_name!r} has no {attr!r}")
    return _instantiate(getattr(module, attr), name)


def entry_points() -> dict:
    """Installed distributions of the `mbml.distributions` entry-point group, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def from_entry_point(name: str):
    ep = entry_points().get(name)
    if ep is None:
        return None
    try:
        target = ep.load()
    except Exception as e:
        raise LookupError(f"task distribution {name!r} (entry point {ep.value}): {type(e).__name__}: {e}") from None
    return _instantiate(target, name)


def load(name: str):
    """A distribution outside the built-in registry, or None when `name` names nothing."""
    if name == NONE:
        return DatasetOnly()
    if ":" in name:
        return from_module(name)
    return from_entry_point(name)
