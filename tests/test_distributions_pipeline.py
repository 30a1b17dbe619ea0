"""Every task distribution through the whole pipeline (collect → bcq → reward → relabel → distill →
eval → probe) at the smoke sizes, from its `_cpu` recipe: each one's observation and action shapes,
simulator features, reward and (walker_param, umaze_goal_m) next-state relabelling fit together.
point_goal is covered by test_pipeline.py."""
from __future__ import annotations


import numpy as np
import pytest
from typer.testing import CliRunner

from mbml_cli.views.cli import app
from mbml_cli.core.store import Store
from conftest import ROOT

TINY = ["--set", "algos=[mbml]", "--set", "threads=1", "--set", "env.n_train=3", "--set", "env.n_test=2",
        "--set", "env.horizon=20", "--set", "collect.steps=120", "--set", "collect.random_steps=60",
        "--set", "collect.hidden=[16,16]", "--set", "collect.batch_size=32", "--set", "collect.log_every=60",
        "--set", "bcq.iterations=20", "--set", "bcq.eval_every=20", "--set", "bcq.batch_size=32",
        "--set", "bcq.actor_hidden=[16,16]", "--set", "bcq.critic_hidden=[16,16]", "--set", "bcq.vae_hidden=[16,16]",
        "--set", "reward.ensemble_size=2", "--set", "reward.hidden=16", "--set", "reward.steps=20",
        "--set", "reward.batch_size=32", "--set", "distill.epochs=1", "--set", "distill.steps_per_epoch=3",
        "--set", "distill.q_hidden=[16]", "--set", "distill.g_hidden=[16]", "--set", "distill.xi_hidden=[16]",
        "--set", "distill.encoder_hidden=[16]", "--set", "distill.latent_dim=3", "--set", "distill.context_size=8",
        "--set", "distill.relabel_context=8", "--set", "distill.batch_size=16", "--set", "distill.eval_every=1",
        "--set", "eval.episodes=3", "--set", "eval.skip=2", "--set", "eval.repeats=1"]


@pytest.mark.parametrize("dist", ["halfcheetah_vel", "ant_dir", "ant_goal", "humanoid_dir_m", "walker_param",
                                  "umaze_goal_m"])
def test_whole_pipeline_runs_on_every_distribution(dist, tmp_path):
    path = tmp_path / f"{dist}.zarr"
    out = CliRunner().invoke(app, ["run", str(ROOT / "recipes" / f"{dist}_cpu.yaml"), "--store", str(path), *TINY])
    assert out.exit_code == 0, out.output
    store = Store.open(path)
    for key in ("collect", "bcq", "reward", "relabel", "distill/mbml", "eval/mbml", "probe/mbml"):
        assert store.stage(key)["status"] == "done", key
    assert all(store.rows(f"data/train/{i}") == 120 for i in range(3))
    score = store.read_rows("eval/mbml/history")["score"]
    assert len(score) == 1 and np.isfinite(score).all()
    assert store.exists("relabel/next_obs") == store.recipe["reward"]["next_state"]
    # the probe asks whether the encoder reads rewards: moot where every task has the same reward
    assert store.exists("eval/mbml/probe") == (dist != "walker_param")
    assert ("probe mbml: skipped" in out.output) == (dist == "walker_param")
