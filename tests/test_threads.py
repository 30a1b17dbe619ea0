"""`threads: 0` picks the CPU threads from the cores and the launcher's share (not torch's default of
every core), and a stage's first line says which it picked."""
from __future__ import annotations

import os

import torch

from conftest import SMOKE, cli
from mbml_cli.algos.nets import seed_everything
from mbml_cli.recipe.limits import auto_threads


def test_auto_threads_is_half_the_cores_or_the_launchers_share(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert auto_threads() == max(1, (os.cpu_count() or 1) // 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert auto_threads() == 3
    before = torch.get_num_threads()
    try:
        seed_everything(0, 0)
        assert torch.get_num_threads() == 3
        seed_everything(0, 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_stage_says_the_threads_it_picked(tmp_path):
    env_cores = os.cpu_count() or 1
    out = cli("collect", SMOKE, "--set", "threads=0", "--set", f"store={tmp_path / 'run.zarr'}", "--set", "collect.steps=50",
              "--set", "collect.random_steps=50")
    assert out.returncode == 0, out.stderr
    n = max(1, env_cores // 2)
    assert f"▶ collect on cpu ({n} thread{'s' if n > 1 else ''}, auto of {env_cores} cores)" in out.stderr, out.stderr
