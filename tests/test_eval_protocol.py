"""The evaluation protocol: episode 1 from the prior, the posterior from everything collected so
far before each later episode, and a score that leaves out exactly the first `skip` episodes."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from mbml_cli.api import Policy, Posterior
from mbml_cli.algos.mbml import DistilledPolicy
from mbml_cli.run.evaluate import run_protocol

H = 4


class CountingEnv(gym.Env):
    """Reward on every step = how many times the env has been reset (1 in episode 1, 2 in 2, ...)."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.resets = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets += 1
        return np.zeros(2), {}

    def step(self, action):
        return np.zeros(2), float(self.resets), False, False, {"features": np.zeros(0)}


def envs(n=3):
    return [gym.wrappers.TimeLimit(CountingEnv(), max_episode_steps=H) for _ in range(n)]


class RecordingPolicy:
    """Posterior mean = the number of real transitions it was given; z = that mean exactly."""
    latent_dim = 1

    def __init__(self):
        self.z_seen, self.contexts = [], []

    def prior(self, n):
        return Posterior(np.full((n, 1), -1.0), np.ones((n, 1)))

    def infer(self, obs, act, rew, next_obs, mask):
        self.contexts.append((obs.shape, mask.sum(1), rew.copy()))
        return Posterior(mask.sum(1, keepdims=True).astype(float), np.zeros((len(obs), 1)))

    def sample(self, posterior, generator):
        return posterior.mean

    def act(self, obs, z, generator):
        self.z_seen.append(np.array(z))
        return np.zeros((len(obs), 2), np.float32)


def test_protocol_skips_exactly_the_first_two_episodes():
    policy = RecordingPolicy()
    result = run_protocol(envs(), policy, episodes=5, skip=2, seed=0)
    np.testing.assert_array_equal(result.returns, np.tile(np.arange(1, 6) * H, (3, 1)))
    assert result.score == pytest.approx(np.mean([3, 4, 5]) * H)                  # episodes 3–5 only
    np.testing.assert_allclose(result.per_task, 4 * H)
    # z of each episode: the prior's in episode 1, then the posterior of all earlier episodes
    per_episode = [z[0, 0] for z in policy.z_seen[::H]]
    assert per_episode == [-1.0, 1 * H, 2 * H, 3 * H, 4 * H]
    # the posterior after episode e saw everything collected so far, rewards included
    assert [int(c[1][0]) for c in policy.contexts] == [H, 2 * H, 3 * H, 4 * H, 5 * H]
    np.testing.assert_array_equal(policy.contexts[-1][2][0], np.repeat(np.arange(1, 6), H))
    np.testing.assert_array_equal(result.z_mean[:, 0], 5 * H)
    np.testing.assert_array_equal(result.z_points[..., 0], np.tile(np.arange(1, 6) * H, (3, 1)))  # after each episode


@pytest.mark.parametrize("skip", [0, 1, 3])
def test_skip_is_a_parameter(skip):
    result = run_protocol(envs(2), RecordingPolicy(), episodes=5, skip=skip, seed=0)
    assert result.score == pytest.approx(np.mean(np.arange(skip + 1, 6)) * H)


def test_real_policy_is_deterministic_given_the_seed():
    torch.manual_seed(0)
    module = DistilledPolicy(2, 2, 4, 3, [8], [8], [8], [8])
    policy = Policy(module)
    from mbml_cli.envs import get
    dist = get("point_goal")
    make = lambda: [dist.make_env(t, 5) for t in dist.tasks("test", 3, 0)]
    a = run_protocol(make(), policy, episodes=3, skip=2, seed=11)
    b = run_protocol(make(), policy, episodes=3, skip=2, seed=11)
    assert a.returns.shape == (3, 3) and a.z_mean.shape == (3, 3)
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.z_mean, b.z_mean)


def test_repeats_average_independent_runs():
    from mbml_cli.run.evaluate import evaluate_tasks
    policy = RecordingPolicy()
    res = evaluate_tasks(envs(2 * 3), policy, episodes=5, skip=2, seed=0, repeats=3)
    assert res.returns.shape == (2, 5) and res.z_mean.shape == (2, 1)
    assert res.z_points.shape == (2, 3 * 5, 1)            # every episode of every repeat, per task
    np.testing.assert_array_equal(res.z_points[0, :, 0], np.tile(np.arange(1, 6) * H, 3))
    np.testing.assert_array_equal(res.returns, np.tile(np.arange(1, 6) * H, (2, 1)))
    assert res.score == pytest.approx(4 * H)
