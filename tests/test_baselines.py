"""The paper's baselines: Contextual BCQ and batch PEARL (issue #5).

Their losses fall on a fixed batch; the Contextual-BCQ encoder gets gradient from the critic's TD
loss and the KL term only (never from the VAE or ξ), batch PEARL's from the critic and KL only
(never from the actor or α); and both run through distill, eval and probe on the smoke recipe."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mbml_cli.algos import batch_pearl as bp, bcq, contextual_bcq as cb, sac
from mbml_cli.views.cli import app
from mbml_cli.recipe.config import DistillConfig, Recipe
from mbml_cli.algos.data import TaskData
from mbml_cli.core.store import Store
from conftest import SMOKE, point_goal_batch

RECIPE = Recipe(distill=DistillConfig(q_hidden=[32, 32], g_hidden=[32, 32], xi_hidden=[32, 32],
                                      encoder_hidden=[32, 32], latent_dim=3, context_size=16, batch_size=64, lr=1e-3))
CB = cb.ContextualBCQConfig.of(RECIPE)
PEARL = dataclasses.replace(bp.PearlConfig.of(RECIPE), gamma=0.9, tau=0.01)


@pytest.fixture(scope="module")
def data() -> TaskData:
    return point_goal_batch()


def contextual(data, seed=0):
    torch.manual_seed(seed)
    policy = cb.ContextualBCQPolicy(2, 2, CB.latent_dim, CB.encoder_hidden, CB.q_hidden, CB.g_hidden, CB.xi_hidden)
    return cb.ContextualBCQTrainer(policy, data, CB)


def pearl(data, seed=0):
    torch.manual_seed(seed)
    policy = bp.PearlPolicy(2, 2, PEARL.latent_dim, PEARL.encoder_hidden, PEARL.q_hidden)
    return bp.PearlTrainer(policy, data, PEARL)


@pytest.mark.parametrize("make, names", [(contextual, ("critic_loss", "vae_loss", "kl")),
                                         (pearl, ("critic_loss", "kl"))], ids=["contextual_bcq", "batch_pearl"])
def test_losses_decrease_on_a_fixed_batch(data, make, names):
    trainer = make(data)
    gen = torch.Generator().manual_seed(1)
    rows = [trainer.step(gen) for _ in range(150)]
    for name in names:
        curve = np.array([r[name] for r in rows])
        assert np.all(np.isfinite(curve))
        assert curve[-30:].mean() < 0.7 * curve[:20].mean(), (name, curve[:20].mean(), curve[-30:].mean())


def grads(module):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in module.parameters()]).clone()


def record_encoder_grads(trainer, optimisers: dict, monkeypatch):
    """Snapshot the encoder's gradient when each part's optimiser steps (i.e. after its backward)."""
    seen = {}
    for name, opt in optimisers.items():
        step = opt.step

        def wrapped(*a, _name=name, _step=step, **k):
            seen[_name] = grads(trainer.policy.encoder)
            return _step(*a, **k)
        monkeypatch.setattr(opt, "step", wrapped)
    return seen


def test_contextual_bcq_encoder_learns_from_critic_and_kl_only(data, monkeypatch):
    trainer = contextual(data)
    entry = {}
    update = bcq.update

    def spy(tr, batch, cfg, **kw):           # the gradient the KL term alone left behind
        entry["kl"] = grads(trainer.policy.encoder)
        return update(tr, batch, cfg, **kw)
    monkeypatch.setattr(bcq, "update", spy)
    seen = record_encoder_grads(trainer, trainer.bcq.optimisers(), monkeypatch)
    trainer.step(torch.Generator().manual_seed(0))
    assert entry["kl"].abs().sum() > 0                                  # β·KL reaches q_φ
    assert torch.equal(seen["vae"], entry["kl"])                       # the VAE loss adds nothing
    assert not torch.allclose(seen["critic"], seen["vae"])             # the TD loss does
    assert torch.equal(seen["actor"], seen["critic"])                  # ξ's loss adds nothing


def test_batch_pearl_encoder_learns_from_critic_and_kl_only(data, monkeypatch):
    trainer = pearl(data)
    entry = {}
    update = sac.update

    def spy(agent, opt, batch, *a, **kw):
        entry["kl"] = grads(trainer.policy.encoder)
        return update(agent, opt, batch, *a, **kw)
    monkeypatch.setattr(sac, "update", spy)
    seen = record_encoder_grads(trainer, dict(trainer.opt.items()), monkeypatch)
    trainer.step(torch.Generator().manual_seed(0))
    assert entry["kl"].abs().sum() > 0
    assert not torch.allclose(seen["critic"], entry["kl"])             # the critic loss reaches q_φ
    assert torch.equal(seen["actor"], seen["critic"])                  # the actor's loss does not
    assert torch.equal(seen["alpha"], seen["critic"])                  # nor α's


def test_checkpoint_state_round_trips(data):
    """A trainer's modules and optimisers restore exactly (what distill's resume relies on)."""
    a = contextual(data)
    a.step(torch.Generator().manual_seed(0))
    b = copy.deepcopy(a)
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert a.step(ga) == b.step(gb)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    path = tmp_path_factory.mktemp("baselines") / "smoke.zarr"
    result = CliRunner().invoke(app, ["run", SMOKE, "--store", str(path), "--set",
                                      "algos=[contextual_bcq, batch_pearl]"])
    return path, result


def test_baselines_run_through_distill_eval_probe(smoke):
    path, result = smoke
    assert result.exit_code == 0, result.output
    store = Store.open(path)
    for algo in ("contextual_bcq", "batch_pearl"):
        for key in (f"distill/{algo}", f"eval/{algo}", f"probe/{algo}"):
            assert f"✓ {key}: done in" in result.output, key
        m = store.metrics("distill", algo)
        np.testing.assert_array_equal(m["epoch"], [1, 2])
        assert np.all(np.isfinite(m["critic_loss"])) and np.all(np.isfinite(m["kl"]))
        assert store.read_array(f"eval/{algo}/test/returns").shape == (2, 3)
        assert store.read_rows(f"eval/{algo}/history")["returns"].shape == (2, 2, 3)
        assert 0.0 <= store.group(f"eval/{algo}/probe").attrs["score"] <= 1.0
        assert algo in result.output.split("test-task score")[-1]        # a row in the summary table
