"""MetaGenRL in the batch setting (issue 37): K batched agents equal K single agents; the meta-gradient
reaches the learned objective α only; the agents never read the task parameter; the meta-test is a
deterministic function of the context; and the algorithm runs through `mbml run` on the smoke recipe,
resumes exactly after a kill and stops in one line when its critics diverge."""
from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from mbml_cli.algos import metagenrl as mg
from mbml_cli.algos.data import TaskData
from mbml_cli.errors import StageError
from mbml_cli.recipe.config import DistillConfig, Recipe
from mbml_cli.run.stages import open_run, run_stage
from mbml_cli.core.store import Store
from mbml_cli.views.cli import app
from conftest import SMOKE, runner, point_goal_batch

RECIPE = Recipe(distill=DistillConfig(metagenrl_hidden=[16, 16], metagenrl_objective_hidden=[8, 8],
                                      metagenrl_lstm_units=8, metagenrl_windows=6, metagenrl_anneal_steps=4,
                                      metagenrl_test_steps=6))
CFG = mg.MetaGenRLConfig.of(RECIPE)
SMALL = ["distill.metagenrl_hidden=[16, 16]", "distill.metagenrl_objective_hidden=[8, 8]",
         "distill.metagenrl_lstm_units=8", "distill.metagenrl_windows=4", "distill.metagenrl_test_steps=4",
         "distill.metagenrl_anneal_steps=4"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data() -> TaskData:
    return point_goal_batch()


def trainer(data, seed=0) -> mg.MetaGenRLTrainer:
    torch.manual_seed(seed)
    return mg.build_trainer(RECIPE, data, "cpu")


def single(agents: mg.Agents, k: int) -> mg.Agents:
    """Agent k of a batched module as a module of one agent, with the same weights."""
    one = mg.Agents(1, agents.actor.layers[0].weight.shape[1], agents.actor.layers[-1].weight.shape[2],
                    [layer.weight.shape[2] for layer in agents.actor.layers[:-1]])
    one.load_state_dict({n: (t[k:k + 1] if t.dim() else t) for n, t in agents.state_dict().items()})
    return one


def test_windows_stay_inside_one_episode(data):
    tr = trainer(data)
    w = tr.traj.windows(50, 20, torch.Generator().manual_seed(0))
    m = w["mask"]
    assert m[..., 0].all()                                        # windows start at a real step
    assert torch.all(m[..., 1:] <= m[..., :-1])                   # then valid up to the episode's end only
    steps = torch.arange(20).expand_as(m)
    same = (w["obs"][..., 1:, :] == w["next_obs"][..., :-1, :]).all(-1)
    assert torch.all(same | (m[..., 1:] == 0))                    # consecutive steps of one trajectory
    assert (m.sum(-1) < 20).any() and (m.sum(-1) == 20).any() and steps.numel() == m.numel()


def test_batched_equals_k_single_agents(data):
    """Critic and policy steps of K batched agents = the same steps of each agent alone; α's
    meta-gradient of the batch = the sum of the agents' own."""
    tr = trainer(data)
    gen = torch.Generator().manual_seed(1)
    w = tr.traj.windows(CFG.metagenrl_windows, CFG.metagenrl_window, gen)
    noise = torch.randn(w["act"].shape, generator=gen)
    singles = [single(tr.agents, k) for k in range(3)]
    objective = tr.policy.objective

    grads, future = mg.meta_gradient(tr.agents, objective, w, 0.1)
    mg.critic_update(tr.agents, tr.critic_opt, w, noise, CFG.gamma)
    loss = mg.policy_update(tr.agents, objective, tr.actor_opt, w, 0.5)
    summed = [torch.zeros_like(g) for g in grads]
    for k, one in enumerate(singles):
        wk = {f: v[k:k + 1] for f, v in w.items()}
        gk, fk = mg.meta_gradient(one, objective, wk, 0.1)
        summed = [s + g for s, g in zip(summed, gk)]
        torch.testing.assert_close(fk, future[k:k + 1], rtol=1e-5, atol=1e-6)
        mg.critic_update(one, mg.adam(one.critic_parameters(), CFG.metagenrl_lr), wk, noise[k:k + 1], CFG.gamma)
        lk = mg.policy_update(one, objective, mg.adam(one.actor.parameters(), CFG.metagenrl_lr), wk, 0.5)
        torch.testing.assert_close(lk, loss[k:k + 1], rtol=1e-5, atol=1e-6)
        for name, value in one.state_dict().items():
            if value.dim():
                torch.testing.assert_close(value, tr.agents.state_dict()[name][k:k + 1], rtol=1e-5, atol=1e-6,
                                           msg=name)
    for s, g in zip(summed, grads):
        torch.testing.assert_close(s, g, rtol=1e-4, atol=1e-7)


def test_meta_gradient_flows_only_into_the_objective(data):
    tr = trainer(data)
    w = tr.traj.windows(CFG.metagenrl_windows, CFG.metagenrl_window, torch.Generator().manual_seed(2))
    before = copy.deepcopy(tr.agents.state_dict())
    grads, _ = mg.meta_gradient(tr.agents, tr.policy.objective, w, CFG.metagenrl_inner_lr)
    assert len(grads) == len(list(tr.policy.objective.parameters()))
    assert sum(float(g.abs().sum()) for g in grads) > 0                                  # non-zero
    assert all(p.grad is None for p in tr.agents.parameters())                            # critics, policies untouched
    assert all(torch.equal(v, before[k]) for k, v in tr.agents.state_dict().items())
    # a whole step: the objective's parameters move, and the critics move as their TD step alone moves them
    ref, gen, gen_ref = trainer(data), torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    alpha = [p.clone() for p in ref.policy.objective.parameters()]
    for _ in range(CFG.metagenrl_policy_delay):
        ref.step(gen)
    assert any(not torch.equal(a, p) for a, p in zip(alpha, ref.policy.objective.parameters()))
    bare = trainer(data)
    for _ in range(CFG.metagenrl_policy_delay):
        w = bare.traj.windows(CFG.metagenrl_windows, CFG.metagenrl_window, gen_ref)
        mg.critic_update(bare.agents, bare.critic_opt, w, torch.randn(w["act"].shape, generator=gen_ref), CFG.gamma)
    for a, b in zip(ref.agents.critic_parameters(), bare.agents.critic_parameters()):
        assert torch.equal(a, b)


def test_the_policy_step_moves_the_policy_only(data):
    tr = trainer(data)
    w = tr.traj.windows(CFG.metagenrl_windows, CFG.metagenrl_window, torch.Generator().manual_seed(4))
    critics = [p.clone() for p in tr.agents.critic_parameters()]
    alpha = [p.clone() for p in tr.policy.objective.parameters()]
    actor = [p.clone() for p in tr.agents.actor.parameters()]
    mg.policy_update(tr.agents, tr.policy.objective, tr.actor_opt, w, 1.0)              # L_α alone
    assert all(torch.equal(a, b) for a, b in zip(critics, tr.agents.critic_parameters()))
    assert all(torch.equal(a, b) for a, b in zip(alpha, tr.policy.objective.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(actor, tr.agents.actor.parameters()))


def test_the_task_parameter_is_never_read(data):
    """`info` holds the simulator features the true reward is computed from: garbage there changes nothing."""
    other = TaskData(**{**data.__dict__, "info": torch.full_like(data.info, float("nan"))})
    a, b = trainer(data), trainer(other)
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(4):
        la, lb = a.step(ga), b.step(gb)
    assert all(torch.equal(la[k], lb[k]) for k in la)
    assert all(torch.equal(x, y) for x, y in zip(a.policy.state_dict().values(), b.policy.state_dict().values()))


def test_meta_test_trains_a_new_agent_deterministically(data):
    tr = trainer(data)
    gen = torch.Generator().manual_seed(6)
    for _ in range(4):
        tr.step(gen)
    p = tr.policy.eval()
    ctx = {f: getattr(data, f)[:2, :60] for f in ("obs", "act", "rew", "next_obs")}
    mask = torch.ones(2, 60)
    mask[1, 30:] = 0                                        # task 1: a shorter context
    z1, var = p.encoder(**ctx, mask=mask)
    z2, _ = p.encoder(**ctx, mask=mask)
    assert z1.shape == (2, p.latent_dim) and torch.equal(z1, z2) and torch.all(var == 0)
    assert not torch.equal(z1[0], z1[1])
    empty, _ = p.encoder(**ctx, mask=torch.zeros(2, 60))   # no context: the prior's mean
    assert torch.all(empty == 0)
    a = p.act(ctx["obs"][:, 0], z1)
    assert a.shape == (2, 2) and torch.all(a.abs() <= 1)
    from mbml_cli.api import Policy
    post = Policy(p).infer(ctx["obs"][0].numpy(), ctx["act"][0].numpy(), ctx["rew"][0].numpy(),
                           ctx["next_obs"][0].numpy())
    assert post.mean.shape == (p.latent_dim,)


# ---- through the stages on the smoke recipe -------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    path = tmp_path_factory.mktemp("metagenrl") / "smoke.zarr"
    sets = [x for s in ["algos=[metagenrl]", *SMALL] for x in ("--set", s)]
    result = runner.invoke(app, ["run", SMOKE, "--store", str(path), *sets])
    return path, result


def test_smoke_run(smoke):
    path, result = smoke
    assert result.exit_code == 0, result.output
    for key in ("distill/metagenrl", "eval/metagenrl"):
        assert f"✓ {key}: done in" in result.output, key
    store = Store.open(path)
    m = store.metrics("distill", "metagenrl")
    np.testing.assert_array_equal(m["epoch"], [1, 2])
    for col in ("critic_loss", "policy_loss", "future_q", "q_max", "td_max", "q_0", "q_2", "td_1"):
        assert np.all(np.isfinite(m[col])), col                         # each agent's own Q and TD error
    assert store.read_array("eval/metagenrl/test/returns").shape == (2, 3)
    assert store.read_rows("eval/metagenrl/history")["returns"].shape == (2, 2, 3)
    agents = store.read_rows("eval/metagenrl/agents")                   # each agent on its own training task
    np.testing.assert_array_equal(agents["epoch"], [1, 2])
    assert agents["returns"].shape == (2, 3) and np.all(np.isfinite(agents["returns"]))
    assert len(np.unique(agents["returns"])) > 1                          # K agents, K tasks: not one number
    assert "metagenrl" in result.output.split("test-task score")[-1]
    assert "probe metagenrl: skipped" in result.output                  # no task encoder to probe
    info = runner.invoke(app, ["info", str(path)])
    assert info.exit_code == 0, info.output


class Killed(Exception):
    pass


def test_killed_distill_resumes_exactly(smoke, tmp_path, monkeypatch):
    path = tmp_path / "resume.zarr"
    shutil.copytree(smoke[0], path)
    ctx = open_run(str(path), ["distill.epochs=3", "distill.checkpoint_every=1", *SMALL])
    run_stage(ctx, "distill", force=True, key="distill/metagenrl", algo="metagenrl")      # reference
    store = ctx.store
    ref_metrics = store.metrics("distill", "metagenrl")
    ref_history = store.read_rows("eval/metagenrl/history")
    ref_agents = store.read_rows("eval/metagenrl/agents")
    ref_weights, _ = store.load_weights("models/distill/metagenrl/final")

    real_step, calls = mg.MetaGenRLTrainer.step, {"n": 0}

    def dying_step(self, *args, **kwargs):           # dies in the middle of epoch 3
        calls["n"] += 1
        if calls["n"] == 2 * ctx.recipe.distill.steps_per_epoch + 2:
            raise Killed()
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(mg.MetaGenRLTrainer, "step", dying_step)
    with pytest.raises(Killed):
        run_stage(ctx, "distill", force=True, key="distill/metagenrl", algo="metagenrl")
    assert store.rows("metrics/distill/metagenrl") == 2
    monkeypatch.setattr(mg.MetaGenRLTrainer, "step", real_step)
    assert run_stage(ctx, "distill", key="distill/metagenrl", algo="metagenrl")
    got = store.metrics("distill", "metagenrl")
    for col in ref_metrics:
        if col != "wall":
            np.testing.assert_array_equal(got[col], ref_metrics[col], err_msg=col)
    hist = store.read_rows("eval/metagenrl/history")
    for col in ("epoch", "score", "returns", "z_mean"):
        np.testing.assert_array_equal(hist[col], ref_history[col], err_msg=col)
    agents = store.read_rows("eval/metagenrl/agents")
    for col in ("epoch", "returns"):
        np.testing.assert_array_equal(agents[col], ref_agents[col], err_msg=col)
    weights, _ = store.load_weights("models/distill/metagenrl/final")
    for name, value in ref_weights.items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)


def test_a_diverging_critic_stops_the_stage_in_one_line(smoke, tmp_path, monkeypatch):
    path = tmp_path / "diverge.zarr"
    shutil.copytree(smoke[0], path)
    ctx = open_run(str(path), SMALL)
    real = mg.critic_update

    def exploding(*args, **kwargs):
        out = real(*args, **kwargs)
        return {**out, "q": out["q"] * float("inf")}
    monkeypatch.setattr(mg, "critic_update", exploding)
    with pytest.raises(StageError) as err:
        run_stage(ctx, "distill", force=True, key="distill/metagenrl", algo="metagenrl")
    assert "diverged" in str(err.value) and "\n" not in str(err.value)
