"""The context encoder q_φ: a product of per-transition Gaussians — invariant to the order of the
context, blind to padded entries — and the closed-form Gaussian KLs against torch.distributions."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from mbml_cli.algos.encoder import ContextEncoder, kl_diag, kl_to_prior, product_of_gaussians

OBS, ACT, L = 3, 2, 4


def context(n: int, lead=(2,), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(*lead, n, OBS, generator=g), "act": torch.rand(*lead, n, ACT, generator=g) * 2 - 1,
            "rew": torch.randn(*lead, n, generator=g), "next_obs": torch.randn(*lead, n, OBS, generator=g)}


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    enc = ContextEncoder(OBS, ACT, [16, 16], L)
    enc.set_stats(torch.full((OBS,), 0.1), torch.full((OBS,), 2.0), -0.5, 3.0)
    return enc


def test_invariant_to_context_order(encoder):
    c = context(12)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    mu, var = encoder(**c)
    mu_p, var_p = encoder(**{k: v[:, perm] for k, v in c.items()})
    assert mu.shape == (2, L) and var.shape == (2, L)
    torch.testing.assert_close(mu_p, mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var_p, var, rtol=1e-5, atol=1e-6)


def test_blind_to_padding(encoder):
    c = context(7)
    pad = context(5, seed=9)
    pad = {k: v * 1e4 for k, v in pad.items()}                    # wild values in the padding
    pad["obs"][0, 1, 0] = float("nan")                            # even a NaN stays out
    padded = {k: torch.cat([c[k], pad[k]], dim=1) for k in c}
    mask = torch.cat([torch.ones(2, 7), torch.zeros(2, 5)], dim=1)
    mu, var = encoder(**c)
    mu_m, var_m = encoder(**padded, mask=mask)
    torch.testing.assert_close(mu_m, mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var_m, var, rtol=1e-5, atol=1e-6)
    # interleaved padding: real entries need not come first
    order = torch.randperm(12, generator=torch.Generator().manual_seed(4))
    mu_i, var_i = encoder(**{k: v[:, order] for k, v in padded.items()}, mask=mask[:, order])
    torch.testing.assert_close(mu_i, mu, rtol=1e-5, atol=1e-6)
    # and no gradient reaches the padded transitions, nor a NaN the weights
    x = padded["rew"].clone().requires_grad_(True)
    (mu_g, var_g) = encoder(padded["obs"], padded["act"], x, padded["next_obs"], mask)
    (mu_g.sum() + var_g.sum()).backward()
    assert x.grad[:, 7:].abs().sum() == 0 and x.grad[:, :7].abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_empty_context_is_the_prior(encoder):
    c = context(4)
    mu, var = encoder(**c, mask=torch.zeros(2, 4))
    assert torch.equal(mu, torch.zeros(2, L)) and torch.equal(var, torch.ones(2, L))


def test_product_of_two_gaussians_by_hand():
    # N(0, 1) · N(2, 1) ∝ N(1, ½);  N(0, 1) · N(3, 2) ∝ N(1, ⅔)  (precision 1 + ½, mean ⅔·(0 + 3/2))
    mu = torch.tensor([[[0.0], [2.0]], [[0.0], [3.0]]])
    var = torch.tensor([[[1.0], [1.0]], [[1.0], [2.0]]])
    m, v = product_of_gaussians(mu, var)
    torch.testing.assert_close(m, torch.tensor([[1.0], [1.0]]))
    torch.testing.assert_close(v, torch.tensor([[0.5], [2.0 / 3.0]]))


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_p, mu_q = torch.randn(5, L, generator=g, dtype=torch.float64), torch.randn(5, L, generator=g, dtype=torch.float64)
    var_p = torch.rand(5, L, generator=g, dtype=torch.float64) + 0.05
    var_q = torch.rand(5, L, generator=g, dtype=torch.float64) + 0.05
    want = kl_divergence(Normal(mu_p, var_p.sqrt()), Normal(mu_q, var_q.sqrt())).sum(-1)
    torch.testing.assert_close(kl_diag(mu_p, var_p, mu_q, var_q), want)
    prior = kl_divergence(Normal(mu_p, var_p.sqrt()), Normal(torch.zeros_like(mu_p), torch.ones_like(var_p))).sum(-1)
    torch.testing.assert_close(kl_to_prior(mu_p, var_p), prior)
    assert torch.all(kl_diag(mu_p, var_p, mu_p, var_p).abs() < 1e-12)
