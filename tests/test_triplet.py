"""The triplet losses (Eq. 8–9 and Eq. 11) against hand-worked numbers, and the MBML step's handling
of pairs without eligible transitions and of the stop-gradient z̄."""
from __future__ import annotations

import math

import pytest
import torch

import dataclasses

from mbml_cli.algos.inference_loss import LOSSES, hardest_triplet_loss, triplet_loss
from mbml_cli.algos.mbml import DistilledPolicy, MBMLConfig, MBMLTrainer, Relabelled, Teachers, step_losses
from mbml_cli.algos.registry import SPECS
from mbml_cli.recipe.config import DistillConfig, Recipe
from mbml_cli.algos.data import TaskData

VARIANTS = {s.name: s.variant for s in SPECS if s.variant is not None}


def gauss(mu, var):
    """(K, K, 1) mean and variance tensors from nested lists."""
    return (torch.tensor(mu, dtype=torch.float64).unsqueeze(-1),
            torch.tensor(var, dtype=torch.float64).unsqueeze(-1).requires_grad_(False))


# Two tasks, pairs (0, 1) and (1, 0); the diagonal holds junk that must not count.
#   pair (0, 1): anchor N(0, 1), positive N(1, 1), negative N(2, 1)
#       KL(a‖p) = ½(log 1 + (1 + 1²)/1 − 1) = 0.5;  KL(a‖n) = ½(1 + 2² − 1) = 2
#       m = 2: [0.5 − 2 + 2]_+ = 0.5           m = 5: 3.5
#   pair (1, 0): anchor N(0, 1), positive N(0, 4), negative N(3, 1)
#       KL(a‖p) = ½(log 4 + 1/4 − 1) = 0.3181472;  KL(a‖n) = ½ · 3² = 4.5
#       m = 2: [0.318 − 4.5 + 2]_+ = 0           m = 5: 0.8181472
ANCHOR = gauss([[7.0, 0.0], [0.0, -7.0]], [[0.1, 1.0], [1.0, 9.0]])
POSITIVE = gauss([[0.0, 1.0], [0.0, 3.0]], [[1.0, 1.0], [4.0, 1.0]])
NEGATIVE = gauss([[9.0, 2.0], [3.0, 0.0]], [[1.0, 1.0], [1.0, 5.0]])
VALID = torch.tensor([[False, True], [True, False]])


def test_triplet_loss_hand_worked():
    assert float(triplet_loss(ANCHOR, POSITIVE, NEGATIVE, VALID, 2.0)) == pytest.approx((0.5 + 0.0) / 2)
    hand = (3.5 + 0.5 * (math.log(4) + 0.25 - 1) - 4.5 + 5) / 2
    assert hand == pytest.approx((3.5 + 0.8181472) / 2, abs=1e-6)
    assert float(triplet_loss(ANCHOR, POSITIVE, NEGATIVE, VALID, 5.0)) == pytest.approx(hand)


def test_invalid_pairs_leave_the_mean_and_the_gradient():
    mu = ANCHOR[0].clone().requires_grad_(True)
    only = torch.tensor([[False, True], [False, False]])
    loss = triplet_loss((mu, ANCHOR[1]), POSITIVE, NEGATIVE, only, 5.0)
    assert loss.item() == pytest.approx(3.5)                        # the mean over the one valid pair
    loss.backward()
    assert mu.grad[1, 0].abs().sum() == 0 and mu.grad[0, 0].abs().sum() == 0
    assert mu.grad[0, 1].abs().sum() > 0
    none = triplet_loss(ANCHOR, POSITIVE, NEGATIVE, torch.zeros(2, 2, dtype=torch.bool), 2.0)
    assert float(none) == 0.0


def test_hardest_pair_mining_hand_worked():
    # task 0's contexts N(0,1), N(1,1); task 1's N(3,1), N(5,1); unit variances: KL = ½ Δμ².
    # task 0: hardest positive ½·1² = 0.5, hardest negative ½·(3 − 1)² = 2 → [0.5 − 2 + 2]_+ = 0.5
    # task 1: hardest positive ½·2² = 2,   hardest negative ½·(3 − 1)² = 2 → [2 − 2 + 2]_+ = 2
    mu = torch.tensor([[[0.0], [1.0]], [[3.0], [5.0]]])
    var = torch.ones_like(mu)
    assert float(hardest_triplet_loss(mu, var, 2.0)) == pytest.approx((0.5 + 2.0) / 2)
    assert float(hardest_triplet_loss(mu, var, 0.0)) == pytest.approx((0.0 + 0.0) / 2)


# ---- the step ------------------------------------------------------------------------------------
K, N, OBS, ACT = 3, 40, 2, 2


def tiny_setup(eligible: bool):
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(K, N, OBS, generator=g)
    act = torch.rand(K, N, ACT, generator=g) * 2 - 1
    data = TaskData(obs=obs, act=act, rew=-obs.norm(dim=-1), next_obs=obs + 0.1 * act,
                    terminal=torch.zeros(K, N), info=torch.zeros(K, N, 0), sizes=torch.tensor([N, N - 5, N - 9]))
    # a stand-in for the K BCQ teachers: fixed functions of (s, a) that differ per task
    w = torch.arange(1.0, K + 1).view(K, 1)
    teachers = Teachers(q=lambda s, a: w * (s.sum(-1) - a.sum(-1)),
                        decode=lambda s, nu: torch.tanh(nu[..., :ACT] + w.unsqueeze(-1) * s),
                        actor=lambda s, a: (a + 0.05).clamp(-1, 1), vae_latent=2 * ACT)
    mask = torch.full((K, K, N), eligible) & ~torch.eye(K, dtype=torch.bool)[:, :, None]
    rel = Relabelled(torch.randn(K, K, N, generator=g), mask)
    cfg = MBMLConfig.of(Recipe(distill=DistillConfig(q_hidden=[8], g_hidden=[8], xi_hidden=[8], encoder_hidden=[8],
                                                     latent_dim=3, context_size=6, relabel_context=4, batch_size=5,
                                                     n_contexts=2)))
    torch.manual_seed(0)
    policy = DistilledPolicy(OBS, ACT, 2 * ACT, cfg.latent_dim, cfg.encoder_hidden, cfg.q_hidden,
                             cfg.g_hidden, cfg.xi_hidden)
    return policy, data, teachers, rel, cfg


@pytest.mark.parametrize("algo", list(VARIANTS))
def test_step_runs_for_every_variant(algo):
    policy, data, teachers, rel, cfg = tiny_setup(eligible=True)
    out = step_losses(policy, data, teachers, rel, VARIANTS[algo], cfg, torch.Generator().manual_seed(1))
    assert torch.isfinite(out["total"])
    if algo in ("mbml", "gt_relabel"):
        assert float(out["valid_pairs"]) == 1.0 and out["loss_triplet"].item() > 0
    if algo in ("no_triplet", "neither"):
        assert out["loss_triplet"].item() == 0.0
    out["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)


def test_no_eligible_pairs_no_crash_no_gradient():
    policy, data, teachers, rel, cfg = tiny_setup(eligible=False)
    out = step_losses(policy, data, teachers, rel, VARIANTS["mbml"], cfg, torch.Generator().manual_seed(1))
    assert out["loss_triplet"].item() == 0.0 and float(out["valid_pairs"]) == 0.0
    grads = torch.autograd.grad(out["loss_triplet"], list(policy.encoder.parameters()), allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in grads)
    assert torch.isfinite(out["total"])


def test_stop_gradient_in_generator_and_perturbation_losses():
    policy, data, teachers, rel, cfg = tiny_setup(eligible=True)
    out = step_losses(policy, data, teachers, rel, VARIANTS["mbml"], cfg, torch.Generator().manual_seed(1))
    (out["loss_g"] + out["loss_xi"]).backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in policy.encoder.parameters())   # z̄
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.g.parameters())
    policy.zero_grad()
    out["loss_q"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.encoder.parameters())  # reparam z


def test_q_d_regresses_standardised_teacher_values():
    """The trainer sets Q_D's scale from the teachers' Q on the batches; Eq. 3 is then the squared
    error in units of that std, and Q_D's output is back in the teachers' units."""
    policy, data, teachers, rel, cfg = tiny_setup(eligible=True)
    MBMLTrainer(policy, data, teachers, rel, VARIANTS["mbml"], cfg)
    n = int(data.sizes.min())
    q = teachers.q(data.obs[:, :n], data.act[:, :n])
    assert float(policy.q_mean) == pytest.approx(float(q.mean()), rel=1e-5)
    assert float(policy.q_std) == pytest.approx(float(q.std()), rel=1e-5)
    z = torch.randn(4, cfg.latent_dim)
    s, a = data.obs[0, :4], data.act[0, :4]
    raw = policy.q(torch.cat([(s - policy.obs_mean) / policy.obs_std, a, z], -1)).squeeze(-1)
    torch.testing.assert_close(policy.q_value(s, a, z), raw * float(q.std()) + float(q.mean()))

    gen = torch.Generator().manual_seed(1)
    out = step_losses(policy, data, teachers, rel, VARIANTS["mbml"], cfg, gen)
    unscaled = DistilledPolicy(OBS, ACT, 2 * ACT, cfg.latent_dim, cfg.encoder_hidden, cfg.q_hidden,
                               cfg.g_hidden, cfg.xi_hidden)
    unscaled.load_state_dict(policy.state_dict())
    unscaled.set_q_stats(0.0, 1.0)
    with torch.no_grad():                         # the same raw network, scale 1: loss × std² apart
        unscaled.q[-1].weight.mul_(float(q.std()))
        unscaled.q[-1].bias.mul_(float(q.std())).add_(float(q.mean()))
    ref = step_losses(unscaled, data, teachers, rel, VARIANTS["mbml"], cfg, torch.Generator().manual_seed(1))
    assert out["loss_q"].item() * float(q.std()) ** 2 == pytest.approx(ref["loss_q"].item(), rel=1e-4)


def test_generator_and_perturbation_see_the_sampled_z(monkeypatch):
    """Eq. 4–5 are on z ~ q_φ(c), the same sample as Q_D's (Eq. 3), not on q_φ(c)'s mean. The sample is
    made 100 off its mean here, so the two are told apart."""
    import mbml_cli.algos.mbml as mbml
    policy, data, teachers, rel, cfg = tiny_setup(eligible=True)
    seen = {}
    monkeypatch.setattr(mbml, "sample_z", lambda mu, var, gen: mu + 100.0)
    for name in ("q_value", "generate", "perturb"):
        def spy(s, a, z, name=name, inner=getattr(policy, name)):
            seen[name] = z.detach().clone()
            return inner(s, a, z)
        monkeypatch.setattr(policy, name, spy)
    step_losses(policy, data, teachers, rel, VARIANTS["mbml"], cfg, torch.Generator().manual_seed(1))
    for name in ("generate", "perturb"):
        torch.testing.assert_close(seen[name], seen["q_value"])


def test_generator_lr_gives_g_d_and_xi_d_their_own_adam_group():
    from mbml_cli.algos.mbml import param_groups
    policy, _, _, _, cfg = tiny_setup(eligible=True)
    assert len(param_groups(policy, cfg)) == 1                       # 0: one rate for everything
    cfg = dataclasses.replace(cfg, generator_lr=1e-3)
    rest, heads = torch.optim.Adam(param_groups(policy, cfg), lr=cfg.lr).param_groups
    assert heads["lr"] == 1e-3 and rest["lr"] == cfg.lr
    assert {id(p) for p in heads["params"]} == {id(p) for p in [*policy.g.parameters(), *policy.xi.parameters()]}
    assert len(rest["params"]) + len(heads["params"]) == len(list(policy.parameters()))


def test_cosine_schedule_by_hand():
    """½(1 + cos(π e / E)) times each group's initial rate: 1 at epoch 0, ½ at E/2, ¼·(2 − √2) at 3E/4
    (cos(3π/4) = −√2/2); constant leaves the rates alone."""
    from mbml_cli.run.pipeline.distill import schedule_lr
    w = torch.nn.Parameter(torch.zeros(1))
    v = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [w]}, {"params": [v], "lr": 1e-3}], lr=3e-4)
    schedule_lr({"adam": opt}, "constant", 30, 40)
    assert [g["lr"] for g in opt.param_groups] == [3e-4, 1e-3]
    for epoch, factor in [(0, 1.0), (20, 0.5), (30, (2 - math.sqrt(2)) / 4), (0, 1.0)]:
        schedule_lr({"adam": opt}, "cosine", epoch, 40)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([3e-4 * factor, 1e-3 * factor])


def test_each_variant_reads_the_relabelling_its_spec_loads():
    """distill.py loads R̂'s relabelling where a spec needs the relabel stage, the true rewards where its
    variant says so, and nothing else; the variant's step must read exactly that much."""
    for s in SPECS:
        if s.variant is None:
            assert "bcq" not in s.needs and "relabel" not in s.needs        # the baselines read the data alone
            continue
        loss = LOSSES[s.variant.loss](MBMLConfig.of(Recipe()))
        reads = s.variant.relabel_context or loss.relabelled
        assert reads == ("relabel" in s.needs or s.variant.true_rewards), s.name
        assert not ("relabel" in s.needs and s.variant.true_rewards), s.name
        assert "bcq" in s.needs, s.name
