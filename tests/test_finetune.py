"""Fine-tuning (Sec. 5.3): the critics start as Q_D with the frozen z; behaviour cloning fits the
MBML policy's actions; `mbml run` with `finetune.enabled` writes both curves and the summary; a
killed fine-tune resumes to exactly the numbers of an unkilled one; the threshold measure."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml

from mbml_cli.algos import finetune as ft
from mbml_cli.algos.mbml import DistilledPolicy
from mbml_cli.views.cli import app
from mbml_cli.run.stages import open_run, run_stage
from conftest import FAST, runner
from store_equal import differences
from mbml_cli.core.store import Store


# ---- the critic initialisation ---------------------------------------------------------------------
def test_initialised_critics_equal_q_d_with_frozen_z():
    torch.manual_seed(0)
    obs_dim, act_dim, L = 5, 3, 4
    policy = DistilledPolicy(obs_dim, act_dim, 6, L, [8], [32, 24, 16], [8], [8])
    policy.set_stats(torch.randn(obs_dim), torch.rand(obs_dim) + 0.5, 0.0, 1.0)
    policy.set_q_stats(-40.0, 12.5)                                  # Q_D's output scale (teachers' Q stats)
    agent = ft.FinetuneAgent(3, obs_dim, act_dim, L, [16, 16], [32, 24, 16])
    ft.set_obs_stats(agent, policy.obs_mean, policy.obs_std)
    untouched = {k: v.clone() for k, v in agent.critic1.state_dict().items()}
    z = torch.randn(2, L)
    ft.init_from_mbml(agent, [0, 2], policy.q, z, float(policy.q_std), float(policy.q_mean))   # runs 0, 2 from Q_D

    s, a = torch.randn(3, 64, obs_dim) * 3, torch.rand(3, 64, act_dim) * 2 - 1
    q1, q2 = agent.q(s, a)
    for row, zr in ((0, z[0]), (2, z[1])):
        expected = policy.q_value(s[row], a[row], zr.expand(64, L))
        torch.testing.assert_close(q1[row], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(q2[row], expected, rtol=1e-5, atol=1e-5)
        for target in (agent.target1, agent.target2):
            torch.testing.assert_close(target(agent.norm(s), a)[row].squeeze(-1), expected, rtol=1e-5, atol=1e-5)
    for name, value in agent.critic1.state_dict().items():           # the other run is untouched
        torch.testing.assert_close(value[1], untouched[name][1], rtol=0, atol=0)
    assert not torch.allclose(q1[1], policy.q_value(s[1], a[1], z[0].expand(64, L)))


# ---- behaviour cloning ---------------------------------------------------------------------------
def test_behaviour_cloned_mean_fits_the_collected_actions(finetuned):
    """On the smoke data collected with the MBML policy: the fitted tanh(μ(s)) is within a few
    hundredths of the actions taken (range [−1, 1]) and closer than their mean action; the MBML
    policy's choice among random candidates makes part of the spread noise no fit can explain. Runs
    with weight 0 are not touched."""
    store = Store.open(finetuned[0])
    n = open_run(str(finetuned[0])).recipe.finetune.init_steps
    rows = store.read_rows("data/finetune/mbml/0", 0, n)
    obs, act = torch.from_numpy(rows["obs"])[None], torch.from_numpy(rows["act"])[None]
    torch.manual_seed(0)
    agent = ft.FinetuneAgent(2, obs.shape[-1], act.shape[-1], 4, [64, 64], [16])
    before = [p[1].clone() for p in agent.actor.parameters()]
    losses = ft.behaviour_clone(agent, obs.expand(2, -1, -1), act.expand(2, -1, -1), torch.tensor([1.0, 0.0]),
                                steps=1500, lr=3e-3, batch_size=64, generator=torch.Generator().manual_seed(0))
    assert losses[-1] < losses[0] - 1.0                                  # the likelihood rose
    with torch.no_grad():
        mean = agent.actor.mode(agent.norm(obs.expand(2, -1, -1)))[0]
    err = (mean - act[0]).abs().mean()
    const = (act[0] - act[0].mean(0)).abs().mean()
    assert err < 0.03 and err < 0.75 * const, (float(err), float(const))
    for p, b in zip(agent.actor.parameters(), before):
        torch.testing.assert_close(p[1], b, rtol=0, atol=0)


# ---- end to end ----------------------------------------------------------------------------------
def test_run_with_finetune_enabled_writes_both_curves(finetuned):
    path, output = finetuned
    assert "✓ finetune: done in" in output and "✓ collect: skipped" in output
    assert "fine-tuning" in output                                      # the summary table
    store = Store.open(path)
    r = open_run(str(path)).recipe.finetune
    total = r.init_steps + r.steps
    expected = np.arange(r.init_steps, total + 1, r.eval_every)
    for init in ("mbml", "scratch"):
        curve = store.read_rows(f"finetune/{init}/0")
        np.testing.assert_array_equal(curve["interactions"], expected)
        assert np.all(np.isfinite(curve["return"])) and np.all(curve["return"] < 0)     # point_goal: −distance
        assert store.rows(f"data/finetune/{init}/0") == total
        m = store.metrics("finetune", f"{init}/0")
        assert np.all(np.isfinite(m["critic_loss"][1:])) and np.isnan(m["critic_loss"][0])   # no update before t0
    # the first init_steps: the MBML run acted with the MBML policy, the scratch run uniformly at random
    first = {init: store.read_rows(f"data/finetune/{init}/0", 0, r.init_steps) for init in ("mbml", "scratch")}
    np.testing.assert_array_equal(first["mbml"]["obs"][0], first["scratch"]["obs"][0])   # same reset seed
    assert not np.array_equal(first["mbml"]["act"], first["scratch"]["act"])
    s = dict(store.group("finetune/summary/0").attrs)
    assert s["interactions"] == total and s["init_steps"] == r.init_steps
    assert s["worst_initial"] <= s["threshold"] <= s["best"]
    assert s["worst_initial"] == min(s["mbml_first"], s["scratch_first"])
    for init in ("mbml", "scratch"):
        assert s[init] is None or r.init_steps <= s[init] <= total
    assert store.stage("finetune")["status"] == "done"
    assert not store.has_weights("models/finetune/checkpoint/all")     # removed once done
    assert store.has_weights("models/finetune/mbml/0") and store.has_weights("models/finetune/scratch/0")


class Killed(Exception):
    pass


def test_killed_finetune_resumes_exactly(finetuned, tmp_path, monkeypatch):
    path = tmp_path / "resume.zarr"
    shutil.copytree(finetuned[0], path)
    store = Store.open(path, mode="r+")
    ref = {init: store.read_rows(f"finetune/{init}/0") for init in ("mbml", "scratch")}
    ref_data = store.read_rows("data/finetune/scratch/0")
    ref_w, _ = store.load_weights("models/finetune/mbml/0")

    real, calls = ft.update, {"n": 0}

    def dying(*args, **kwargs):                  # dies 130 updates in: after the checkpoint at t = 200
        calls["n"] += 1
        if calls["n"] == 130:
            raise Killed()
        return real(*args, **kwargs)

    ctx = open_run(str(path), ["threads=1"])
    monkeypatch.setattr(ft, "update", dying)
    with pytest.raises(Killed):
        run_stage(ctx, "finetune", force=True)
    assert store.stage("finetune")["status"] == "failed"
    monkeypatch.setattr(ft, "update", real)
    assert run_stage(ctx, "finetune")                                   # resumes from t = 200
    assert store.stage("finetune")["status"] == "done"
    for init in ("mbml", "scratch"):
        got = store.read_rows(f"finetune/{init}/0")
        for col in ("interactions", "return"):
            np.testing.assert_array_equal(got[col], ref[init][col], err_msg=f"{init} {col}")
    got_data = store.read_rows("data/finetune/scratch/0")
    for col, value in ref_data.items():
        np.testing.assert_array_equal(got_data[col], value, err_msg=col)
    weights, _ = store.load_weights("models/finetune/mbml/0")
    for name, value in ref_w.items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)


def test_finetune_one_unseen_task_via_cli(smoke_run, tmp_path):
    path = tmp_path / "unseen.zarr"
    shutil.copytree(smoke_run, path)
    out = runner.invoke(app, ["finetune", str(path), "--unseen", *FAST, "--set", "finetune.steps=50"])
    assert out.exit_code == 0, out.output
    store = Store.open(path)
    assert store.stage("finetune/unseen")["status"] == "done"
    np.testing.assert_array_equal(store.read_rows("finetune/scratch/unseen")["interactions"], [100, 150])
    assert store.group("finetune/summary/unseen").attrs["interactions"] == 150
    bad = runner.invoke(app, ["finetune", str(path), "--task", "7"])
    assert bad.exit_code == 2 and "out of range" in bad.output
    assert Store.open(path).stage("finetune/7") == {}              # refused before any record is written


def test_finetune_command_is_the_runs_own_and_its_lock_repeats_it(smoke_run, finetuned, tmp_path):
    """`mbml finetune STORE` computes what `mbml run --set finetune.enabled=true` does, and records it:
    the store's lock file says `enabled: true`, and `mbml run LOCK` on the store finds nothing to do."""
    path = tmp_path / "by-command.zarr"
    shutil.copytree(smoke_run, path)
    out = runner.invoke(app, ["finetune", str(path), *FAST])
    assert out.exit_code == 0, out.output
    assert differences(str(finetuned[0]), str(path)) == []                 # same arrays as the enabled run's
    assert Store.open(path).stage("finetune")["hash"] == Store.open(finetuned[0]).stage("finetune")["hash"]
    lock = tmp_path / "run.lock.yaml"
    lock.write_text(runner.invoke(app, ["lock", str(path)]).output)
    assert yaml.safe_load(lock.read_text())["finetune"]["enabled"] is True
    again = runner.invoke(app, ["run", str(lock), "--store", str(path), *FAST])
    assert again.exit_code == 0 and "✓ finetune: skipped" in again.output and "done in" not in again.output, again.output


def test_a_changed_distillation_re_runs_finetune(finetuned, tmp_path):
    """finetune reads distill/mbml: a changed distill section re-runs distill and then finetune
    (the fine-tuning curves must describe the new policy), and nothing upstream."""
    path = tmp_path / "margin.zarr"
    shutil.copytree(finetuned[0], path)
    out = runner.invoke(app, ["run", str(path), *FAST, "--set", "distill.margin=1.0", "--yes"])
    assert out.exit_code == 0, out.output
    assert "✓ distill/mbml: done in" in out.output and "✓ finetune: done in" in out.output, out.output
    assert "✓ collect: skipped" in out.output and "✓ bcq: skipped" in out.output, out.output


def test_a_changed_number_of_test_tasks_re_runs_only_what_reads_them(smoke_run, tmp_path):
    """`--set env.n_test=3` redraws the test tasks; distill, eval and probe run on them, collect,
    bcq, reward and relabel are skipped (the training data does not change)."""
    path = tmp_path / "three.zarr"
    shutil.copytree(smoke_run, path)
    out = runner.invoke(app, ["run", str(path), *FAST, "--set", "env.n_test=3", "--yes"])
    assert out.exit_code == 0, out.output
    for key in ("collect", "bcq", "reward", "relabel"):
        assert f"✓ {key}: skipped" in out.output, (key, out.output)
    assert "✓ eval/mbml: done in" in out.output and "on 3 test tasks" in out.output, out.output
    store = Store.open(path)
    assert store.read_array("tasks/test").shape[0] == 3


# ---- the threshold measure -----------------------------------------------------------------------
def test_interactions_to_threshold_with_negative_returns():
    curves = {"mbml": (np.array([10, 20, 30, 40]), np.array([-50.0, -20.0, -12.0, -10.0])),
              "scratch": (np.array([10, 20, 30, 40]), np.array([-110.0, -60.0, -15.0, -11.0]))}
    res = ft.interactions_to_threshold(curves, 0.9)
    assert res["worst_initial"] == -110.0 and res["best"] == -10.0
    assert res["threshold"] == pytest.approx(-20.0)                    # −110 + 0.9 · 100
    assert res["reached"] == {"mbml": 20, "scratch": 30}
    assert ft.saving(20, 30, 40) == (pytest.approx(100 / 3), False)
    assert ft.saving(20, None, 40) == (pytest.approx(50.0), True)       # scratch never: a lower bound
    assert ft.saving(None, 30, 40) == (None, False)
    pos = {"a": (np.array([1, 2]), np.array([0.0, 100.0])), "b": (np.array([1, 2]), np.array([5.0, 89.0]))}
    res = ft.interactions_to_threshold(pos, 0.9)
    assert res["threshold"] == pytest.approx(90.0) and res["reached"] == {"a": 2, "b": None}   # 90% of the best


def test_threshold_on_smoothed_curves_ignores_a_lucky_evaluation():
    inter = np.array([0, 10, 20, 30, 40, 50])
    curves = {"lucky": (inter, np.array([-100.0, -100.0, -10.0, -100.0, -100.0, -100.0])),
              "steady": (inter, np.array([-100.0, -60.0, -40.0, -30.0, -20.0, -20.0]))}
    np.testing.assert_allclose(ft.trailing_mean(curves["steady"][1], 3), [-100, -80, -200 / 3, -130 / 3, -30, -70 / 3])
    raw = ft.interactions_to_threshold(curves, 0.9, smooth=1)
    assert raw["reached"] == {"lucky": 20, "steady": None}                  # one spike sets the bar and wins
    res = ft.interactions_to_threshold(curves, 0.9, smooth=3)
    assert res["best"] == pytest.approx(-70 / 3) and res["worst_initial"] == -100.0
    assert res["threshold"] == pytest.approx(-100 + 0.9 * (100 - 70 / 3))
    assert res["reached"] == {"lucky": None, "steady": 40}                  # −30 ≥ thr ≈ −31
