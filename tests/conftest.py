"""Shared fixtures and helpers of the test suite (import the helpers with `from conftest import ...`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mbml_cli.views.cli import app

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "recipes" / "smoke.yaml")          # the seconds-long recipe of the whole pipeline
FAST = ["--set", "threads=1"]           # tiny networks: one thread beats two on a busy 2-core machine
runner = CliRunner()
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cli(*args, timeout=600) -> subprocess.CompletedProcess:
    """`mbml ARGS` in a child process (Ray, signals), in the repository's root."""
    return subprocess.run([sys.executable, "-m", "mbml_cli.views.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=timeout, stdin=subprocess.DEVNULL)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Running, or a zombie not reaped yet (whose pid a stage record's check still finds)."""
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
def one_thread():
    """Small networks: one thread is faster (and immune to oversubscription on a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_batch(seed: int, k: int, b: int, obs: int, act: int) -> dict[str, torch.Tensor]:
    """A (k, b, ·) mini-batch of random transitions, actions in [−1, 1], 20% terminal."""
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(k, b, obs, generator=g), "act": torch.rand(k, b, act, generator=g) * 2 - 1,
            "rew": torch.randn(k, b, generator=g), "next_obs": torch.randn(k, b, obs, generator=g),
            "terminal": (torch.rand(k, b, generator=g) < 0.2).float()}


def slice_task(d: dict, k: int) -> dict:
    """Task k's slice (keeping the task dimension) of every tensor in `d`."""
    return {name: v[k:k + 1] for name, v in d.items()}


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke pipeline (no fine-tuning) once per session."""
    path = tmp_path_factory.mktemp("ft") / "smoke.zarr"
    out = runner.invoke(app, ["run", SMOKE, "--store", str(path), *FAST])
    assert out.exit_code == 0, out.output
    return path


@pytest.fixture(scope="session")
def finetuned(smoke_run, tmp_path_factory):
    """A copy of it, then `mbml run` again with fine-tuning enabled: only the finetune stage runs."""
    path = tmp_path_factory.mktemp("ft") / "finetuned.zarr"
    shutil.copytree(smoke_run, path)
    out = runner.invoke(app, ["run", SMOKE, "--store", str(path), *FAST, "--set", "finetune.enabled=true"])
    assert out.exit_code == 0, out.output
    return path, out.output


def point_goal_batch():
    """A fixed batch: 3 point_goal tasks, 20 episodes each of a noisy behaviour policy that heads for the
    task's goal (so the actions depend on the state, as in a real batch)."""
    import numpy as np
    from mbml_cli import envs
    from mbml_cli.algos.data import TaskData
    from mbml_cli.run.rollout import make_envs, run_episode
    dist = envs.get("point_goal")
    goals = dist.tasks("train", 3, 0)
    e = make_envs(dist, goals, 20)
    rng = np.random.default_rng(0)
    policy = lambda o: np.clip(5 * (goals - o) + 0.2 * rng.standard_normal((3, 2)), -1, 1)
    eps = [run_episode(e, policy, seed=10 * k) for k in range(20)]
    cat = lambda name: torch.from_numpy(np.concatenate([getattr(x, name) for x in eps], 1).astype(np.float32))
    return TaskData(obs=cat("obs"), act=cat("act"), rew=cat("rew"), next_obs=cat("next_obs"),
                    terminal=cat("terminal"), info=cat("info"), sizes=torch.full((3,), 400))
