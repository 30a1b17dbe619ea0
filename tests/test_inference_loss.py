"""A task-inference loss is a class and one line in LOSSES: a toy loss defined here is registered,
a variant names it, and one step of that variant logs it, adds it to Eq. 10 and trains q_φ with it."""
from __future__ import annotations

import pytest
import torch

from mbml_cli.algos import inference_loss, mbml
from mbml_cli.algos.data import TaskData
from mbml_cli.algos.encoder import product_of_gaussians
from mbml_cli.algos.registry import Variant
from mbml_cli.recipe.config import DistillConfig, Recipe

K, N, OBS, ACT = 3, 40, 2, 2
WEIGHT = 0.7


class SquaredMean:
    """WEIGHT · ‖μ_i‖², the posterior mean of each task's own context, averaged over tasks."""
    key, n_contexts, relabelled = "loss_toy", 1, False

    def __init__(self, cfg):
        pass

    def __call__(self, c: inference_loss.Contexts) -> dict[str, torch.Tensor]:
        mu, _ = product_of_gaussians(*c.first)
        return {"loss_toy": WEIGHT * (mu ** 2).sum(-1).mean()}


def toy_inputs():
    """K toy batches, K teachers of known form and the generator they were drawn from (shared with
    tests/test_inference_losses.py)."""
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(K, N, OBS, generator=g)
    act = torch.rand(K, N, ACT, generator=g) * 2 - 1
    data = TaskData(obs=obs, act=act, rew=-obs.norm(dim=-1), next_obs=obs + 0.1 * act, terminal=torch.zeros(K, N),
                    info=torch.zeros(K, N, 0), sizes=torch.tensor([N, N - 5, N - 9]))
    w = torch.arange(1.0, K + 1).view(K, 1)
    teachers = mbml.Teachers(q=lambda s, a: w * (s.sum(-1) - a.sum(-1)),
                             decode=lambda s, nu: torch.tanh(nu[..., :ACT] + w.unsqueeze(-1) * s),
                             actor=lambda s, a: (a + 0.05).clamp(-1, 1), vae_latent=2 * ACT)
    return data, teachers, g


def trainer(loss: str):
    data, teachers, _ = toy_inputs()
    recipe = Recipe(distill=DistillConfig(q_hidden=[8], g_hidden=[8], xi_hidden=[8], encoder_hidden=[8], latent_dim=3,
                                          context_size=6, batch_size=5))
    torch.manual_seed(0)
    return mbml.build_trainer(recipe, data, "cpu", Variant(relabel_context=False, loss=loss), teachers, None)


def grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def test_a_registered_loss_is_logged_added_to_eq_10_and_trains_the_encoder(monkeypatch):
    monkeypatch.setitem(inference_loss.LOSSES, "toy", SquaredMean)          # the one registry line
    toy, none = trainer("toy"), trainer("none")
    out_toy = toy.step(torch.Generator().manual_seed(1))
    out_none = none.step(torch.Generator().manual_seed(1))
    assert out_toy["loss_toy"].item() > 0
    assert "loss_triplet" not in out_toy
    assert out_toy["total"].item() == pytest.approx(out_none["total"].item() + out_toy["loss_toy"].item(), rel=1e-6)
    # the same draws and the same forward pass: the toy term is the only difference in the gradient,
    # and it reaches q_φ and nothing else
    assert any(not torch.equal(a, b) for a, b in zip(grads(toy.policy.encoder), grads(none.policy.encoder)))
    for part in ("q", "g", "xi"):
        assert all(torch.equal(a, b) for a, b in zip(grads(getattr(toy.policy, part)), grads(getattr(none.policy, part))))


def test_unknown_loss_names_fail_loudly():
    with pytest.raises(KeyError):
        trainer("no_such_loss").step(torch.Generator().manual_seed(1))
