"""The peers our BCQ is set beside (bench scripts only, never mbml itself): Fujimoto's reference BCQ
(github.com/sfujim/BCQ, continuous_BCQ/BCQ.py; not on PyPI, never copied here: pass a checkout's path).

`reference_bcq(path, bcq_cfg, obs_dim, act_dim)` builds its `BCQ` with the recipe's γ, τ, λ, φ and
learning rate, its fixed 400-300 / 750-750 layers resized to the recipe's widths (pass the reference's
own widths to keep them); `Buffer` is its `utils.ReplayBuffer.sample` over given arrays.
"""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn


def reference_module(path: str):
    """sfujim/BCQ's continuous_BCQ/BCQ.py as a module, or a ValueError saying where it looked."""
    p = Path(path)
    file = next((f for f in (p, p / "BCQ.py", p / "continuous_BCQ" / "BCQ.py") if f.is_file()), None)
    if file is None:
        raise ValueError(f"no BCQ.py at {path} (expected a checkout of github.com/sfujim/BCQ)")
    spec = importlib.util.spec_from_file_location("sfujim_bcq", file)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    ref.FILE = str(file)
    return ref


def reference_bcq(path: str, b, obs_dim: int, act_dim: int):
    """The reference's BCQ at the widths of `b` (a `BCQConfig`), on the CPU."""
    ref = reference_module(path)
    pol = ref.BCQ(obs_dim, act_dim, 1.0, torch.device("cpu"), b.gamma, b.tau, b.lmbda, b.phi)

    def chain(module, names, d_in, hidden, d_out):
        for name, a, o in zip(names, [d_in, *hidden], [*hidden, d_out]):
            setattr(module, name, nn.Linear(a, o))
    ad, ah, ch, vh, L = obs_dim + act_dim, b.actor_hidden, b.critic_hidden, b.vae_hidden, 2 * act_dim
    chain(pol.actor, ["l1", "l2", "l3"], ad, ah, act_dim)
    chain(pol.critic, ["l1", "l2", "l3"], ad, ch, 1)
    chain(pol.critic, ["l4", "l5", "l6"], ad, ch, 1)
    chain(pol.vae, ["e1", "e2"], ad, vh[:1], vh[-1])
    pol.vae.mean, pol.vae.log_std = nn.Linear(vh[-1], L), nn.Linear(vh[-1], L)
    chain(pol.vae, ["d1", "d2", "d3"], obs_dim + L, vh, act_dim)
    pol.actor_target, pol.critic_target = copy.deepcopy(pol.actor), copy.deepcopy(pol.critic)
    pol.actor_optimizer = torch.optim.Adam(pol.actor.parameters(), lr=b.lr)
    pol.critic_optimizer = torch.optim.Adam(pol.critic.parameters(), lr=b.lr)
    pol.vae_optimizer = torch.optim.Adam(pol.vae.parameters(), lr=b.lr)
    return pol


class Buffer:
    """The reference's `utils.ReplayBuffer.sample` (uniform rows, numpy's global generator) over arrays."""
    def __init__(self, obs, act, next_obs, rew, not_done):
        self.s, self.a, self.s2 = obs, act, next_obs
        self.r, self.nd = rew.reshape(-1, 1), not_done.reshape(-1, 1)

    def sample(self, batch_size):
        i = np.random.randint(0, len(self.s), size=batch_size)
        return tuple(torch.FloatTensor(x[i]) for x in (self.s, self.a, self.s2, self.r, self.nd))

    @classmethod
    def random(cls, obs_dim: int, act_dim: int, N: int = 2048) -> "Buffer":
        g = np.random.default_rng(0)
        return cls(g.standard_normal((N, obs_dim)), g.uniform(-1, 1, (N, act_dim)), g.standard_normal((N, obs_dim)),
                   g.standard_normal(N), np.ones(N))
