"""`mbml run recipes/smoke.yaml` end to end through the CLI into a temporary store; a second run
skips every finished stage; a killed distill resumes to exactly the numbers of an unkilled one;
`mbml eval --unseen`; and the Python API on the result."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from mbml_cli import api
from mbml_cli.views.cli import app
from mbml_cli.run.stages import open_run, run_stage
from mbml_cli.core.store import Store
from mbml_cli.core.checkpoint import load as load_checkpoint
from conftest import SMOKE, runner

PER_RUN = ["collect", "bcq", "reward", "relabel", "distill/mbml", "distill/neither", "eval/mbml",
           "eval/neither", "probe/mbml", "probe/neither"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "smoke.zarr"
    first = runner.invoke(app, ["run", SMOKE, "--store", str(path)])
    return path, first


def test_run_end_to_end(smoke):
    path, first = smoke
    assert first.exit_code == 0, first.output
    for key in PER_RUN:
        assert f"✓ {key}: done in" in first.output, key
    store = Store.open(path)
    K, T, E, L = 3, 2, 3, 4                        # smoke: 3 train / 2 test tasks, 3 episodes, latent 4
    N = max(store.rows(f"data/train/{i}") for i in range(K))
    assert store.read_array("models/reward/error").shape == (K, K)
    for name in ("mean", "std", "mask"):
        assert store.read_array(f"relabel/{name}").shape == (K, K, N)
    assert store.read_array("relabel/eligible").shape == (K, K)
    m = store.metrics("distill", "mbml")
    assert {"step", "epoch", "loss_q", "loss_g", "loss_xi", "loss_triplet", "kl"} <= set(m)
    np.testing.assert_array_equal(m["epoch"], [1, 2])
    assert np.all(np.isfinite(m["loss_q"])) and np.all(m["loss_triplet"] > 0)
    assert np.all(store.metrics("distill", "neither")["loss_triplet"] == 0)
    hist = store.read_rows("eval/mbml/history")
    np.testing.assert_array_equal(hist["epoch"], [1, 2])                     # eval_every 1
    assert hist["returns"].shape == (2, T, E) and hist["z_mean"].shape == (2, T, L)
    np.testing.assert_allclose(hist["score"], hist["returns"][:, :, 2:].mean(axis=(1, 2)), rtol=1e-6)
    assert store.read_array("eval/mbml/test/returns").shape == (T, E)
    assert 0.0 <= store.group("eval/mbml/probe").attrs["score"] <= 1.0
    assert "test-task score" in first.output and "probe" in first.output     # the summary table


def test_second_run_skips_finished_stages(smoke):
    path, _ = smoke
    again = runner.invoke(app, ["run", SMOKE, "--store", str(path)])
    assert again.exit_code == 0, again.output
    for key in PER_RUN:
        assert f"✓ {key}: skipped (finished, inputs unchanged)" in again.output, key
    assert "done in" not in again.output


def test_eval_unseen_tasks(smoke, tmp_path):
    path = tmp_path / "copy.zarr"
    shutil.copytree(smoke[0], path)
    out = runner.invoke(app, ["eval", str(path), "--algo", "mbml", "--unseen", "3"])
    assert out.exit_code == 0, out.output
    store = Store.open(path)
    assert store.read_array("eval/mbml/unseen/returns").shape == (3, 3)
    assert store.read_array("eval/mbml/unseen/tasks").shape == (3, 2)
    assert not np.allclose(store.read_array("eval/mbml/unseen/tasks")[:2], store.read_array("tasks/test"))


class Killed(Exception):
    pass


@pytest.mark.parametrize("extra", [[], ["distill.lr_schedule=cosine"]], ids=["paper", "cosine"])
def test_killed_distill_resumes_exactly(smoke, tmp_path, monkeypatch, extra):
    """A killed distillation resumes to the same numbers, with the cosine schedule's rates too."""
    path = tmp_path / "resume.zarr"
    shutil.copytree(smoke[0], path)
    ctx = open_run(str(path), ["distill.epochs=3", "distill.checkpoint_every=1", *extra])
    run_stage(ctx, "distill", force=True, key="distill/mbml", algo="mbml")     # uninterrupted reference
    store = ctx.store
    ref_metrics = store.metrics("distill", "mbml")
    ref_history = store.read_rows("eval/mbml/history")
    ref_weights, _ = store.load_weights("models/distill/mbml/final")

    from mbml_cli.algos.mbml import MBMLTrainer
    real_step, calls = MBMLTrainer.step, {"n": 0}

    def dying_step(self, *args, **kwargs):         # dies in the middle of epoch 3
        calls["n"] += 1
        if calls["n"] == 2 * ctx.recipe.distill.steps_per_epoch + 2:
            raise Killed()
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(MBMLTrainer, "step", dying_step)
    with pytest.raises(Killed):
        run_stage(ctx, "distill", force=True, key="distill/mbml", algo="mbml")
    assert store.stage("distill/mbml")["status"] == "failed"
    assert store.rows("metrics/distill/mbml") == 2
    monkeypatch.setattr(MBMLTrainer, "step", real_step)
    assert run_stage(ctx, "distill", key="distill/mbml", algo="mbml")           # resumes after epoch 2
    assert store.stage("distill/mbml")["status"] == "done"

    got = store.metrics("distill", "mbml")
    for col in ("step", "epoch", "loss_q", "loss_g", "loss_xi", "loss_triplet", "kl"):
        np.testing.assert_array_equal(got[col], ref_metrics[col], err_msg=col)
    hist = store.read_rows("eval/mbml/history")
    for col in ("epoch", "score", "returns", "z_mean"):
        np.testing.assert_array_equal(hist[col], ref_history[col], err_msg=col)
    weights, _ = store.load_weights("models/distill/mbml/final")
    for name, value in ref_weights.items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)
    checkpoint, _ = load_checkpoint(store, "models/distill/mbml/checkpoint")
    trained = {k[len("policy/"):]: v for k, v in checkpoint.items() if k.startswith("policy/")}
    assert set(weights) == set(trained) and all(np.array_equal(weights[k], trained[k]) for k in weights)


def test_python_api(smoke):
    run = api.open_run(smoke[0])
    policy = run.policy("mbml")
    assert policy.latent_dim == 4 and run.tasks("test").shape == (2, 2)
    best = api.load_policy(str(smoke[0]), "neither", which="best")
    rng = np.random.default_rng(0)
    obs, act = rng.normal(size=(6, 2)), rng.uniform(-1, 1, size=(6, 2))
    post = policy.infer(obs, act, -np.linalg.norm(obs, axis=1), obs + 0.1 * act)
    assert post.mean.shape == post.var.shape == (4,) and np.all(post.var > 0)
    batch = best.infer(np.stack([obs, obs]), np.stack([act, act]), np.zeros((2, 6)), np.stack([obs, obs]))
    assert batch.mean.shape == (2, 4)
    a = policy.act(obs[0], post.mean)
    assert a.shape == (2,) and np.all(np.abs(a) <= 1)
    assert policy.act(obs, policy.sample(post)).shape == (6, 2)
    with pytest.raises(Exception, match="no trained 'no_triplet' policy"):
        run.policy("no_triplet")
