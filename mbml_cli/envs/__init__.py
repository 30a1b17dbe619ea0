"""Registry of task distributions: a recipe names one by `env.name`."""
from __future__ import annotations

from .ant import AntDir, AntGoal
from .base import SPLITS, TaskDistribution, TaskEnv
from .halfcheetah_vel import HalfCheetahVel
from .humanoid_dir_m import HumanoidDirM
from .point_goal import PointGoal
from .umaze_goal_m import UMazeGoalM
from .walker_param import WalkerParam

REGISTRY: dict[str, TaskDistribution] = {d.name: d for d in [
    PointGoal(), HalfCheetahVel(), AntDir(), AntGoal(), HumanoidDirM(), WalkerParam(), UMazeGoalM()]}


def get(name: str) -> TaskDistribution:
    return REGISTRY[name]


__all__ = ["REGISTRY", "SPLITS", "TaskDistribution", "TaskEnv", "get"]
