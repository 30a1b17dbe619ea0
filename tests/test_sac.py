"""Batched SAC: K tasks in one update equal K single-task updates; the TD target; the tanh-Gaussian."""

import pytest
import torch

from mbml_cli.algos import sac
from conftest import random_batch, slice_task
from mbml_cli.algos.nets import stack_states, task_state

K, OBS, ACT, B = 3, 4, 2, 16


pytestmark = pytest.mark.usefixtures("one_thread")


def batch(seed: int, k: int = K) -> dict[str, torch.Tensor]:
    return random_batch(seed, k, B, OBS, ACT)


def test_batched_update_equals_k_single_task_updates():
    torch.manual_seed(0)
    batched = sac.SAC(K, OBS, ACT, [8, 8])
    with torch.no_grad():
        batched.log_alpha.copy_(torch.tensor([-1.0, 0.0, 0.5]))      # different α per task
    singles = []
    for k in range(K):
        s = sac.SAC(1, OBS, ACT, [8, 8])
        s.load_state_dict(stack_states([task_state(batched, k)]))
        singles.append(s)
    opt_b = sac.SACOptimisers(batched, 1e-2)
    opt_s = [sac.SACOptimisers(s, 1e-2) for s in singles]
    for step in range(3):                          # several steps: Adam's moments must agree too
        b = batch(step)
        noise = sac.sample_noise(K, B, ACT, torch.Generator().manual_seed(100 + step))
        out_b = sac.update(batched, opt_b, b, 0.99, 0.05, noise)
        for k in range(K):
            out_k = sac.update(singles[k], opt_s[k], slice_task(b, k), 0.99, 0.05, slice_task(noise, k))
            for name in out_b:
                assert torch.allclose(out_b[name][k], out_k[name][0], atol=1e-5, rtol=1e-5), (step, k, name)
    for k in range(K):
        got, want = task_state(batched, k), task_state(singles[k], 0)
        assert set(got) == set(want)
        for name in got:
            assert torch.allclose(got[name], want[name], atol=1e-5), (k, name)
    # the weights did move, and the tasks' networks stayed different
    assert not torch.allclose(task_state(batched, 0)["actor.net.layers.0.weight"],
                              task_state(batched, 1)["actor.net.layers.0.weight"])


def test_td_target_bootstraps_through_truncation_but_not_terminal():
    torch.manual_seed(1)
    agent = sac.SAC(1, OBS, ACT, [8])
    b = batch(5, k=1)
    b["rew"] = torch.full((1, B), 2.0)
    b["terminal"] = torch.zeros(1, B)
    b["terminal"][0, :4] = 1.0              # rows 0-3 end in a terminal state; the rest were cut by the
    eps = torch.randn(1, B, ACT)            # time limit or go on: same target formula for both
    y = sac.td_target(agent, b, 0.9, eps).squeeze(-1)[0]
    assert torch.equal(y[:4], torch.full((4,), 2.0))
    a2, logp2 = agent.actor(b["next_obs"], eps)
    q1, q2 = agent.critic_target(b["next_obs"], a2)
    want = 2.0 + 0.9 * (torch.min(q1, q2).squeeze(-1) - agent.alpha * logp2)[0]
    assert torch.allclose(y[4:], want[4:], atol=1e-6)
    assert not torch.allclose(y[4:], torch.full((B - 4,), 2.0))


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(2)
    actor = sac.TanhGaussianActor(2, OBS, ACT, [8])
    s, eps = torch.randn(2, 5, OBS), torch.randn(2, 5, ACT)
    a, logp = actor(s, eps)
    mean, log_std = actor.net(s).chunk(2, dim=-1)
    log_std = sac.LOG_STD_MIN + 0.5 * (sac.LOG_STD_MAX - sac.LOG_STD_MIN) * (torch.tanh(log_std) + 1)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
    u = mean + log_std.exp() * eps
    assert torch.allclose(a, torch.tanh(u))
    assert torch.allclose(logp, dist.log_prob(torch.tanh(u)).sum(-1), atol=1e-3)
    assert a.abs().max() <= 1.0


def test_temperature_moves_towards_target_entropy():
    """A near-deterministic policy (entropy far below −|A|) must raise α."""
    torch.manual_seed(3)
    agent = sac.SAC(1, OBS, ACT, [8])
    with torch.no_grad():
        agent.actor.net.layers[-1].bias[..., ACT:] = -50.0       # log σ → LOG_STD_MIN
    opt = sac.SACOptimisers(agent, 1e-2)
    before = agent.log_alpha.item()
    sac.update(agent, opt, batch(7, k=1), 0.99, 0.005)
    assert agent.log_alpha.item() > before
    assert agent.target_entropy == -ACT
