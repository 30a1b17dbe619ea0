"""Soft Actor-Critic (Haarnoja et al. 2018, "SAC: Algorithms and Applications") for K tasks at once.

Every network carries a leading task dimension (`nets.BatchedMLP`): one tanh-Gaussian actor, one
twin critic and its Polyak target, and one log α per task, all trained by one `update` call.
Task k's slice of every tensor is exactly the network a single-task SAC would hold, and the losses
are *summed* over tasks (each task's own mean), so the gradient of task k's slice is the gradient a
single-task run would compute: K tasks batched = K separate runs (tests/test_sac.py checks this).

Equation numbers are those of Haarnoja et al. 2018a (arXiv:1801.01290): Eq. 3 the soft value,
Eq. 7-8 the soft Q loss and its target, Eq. 11-12 the reparameterised policy loss, Eq. 21 (App. C)
the tanh change of variables; the temperature loss is Eq. 18 of Haarnoja et al. 2018b
(arXiv:1812.05905). Twin critics and the min over them are as in 2018b and TD3.
"""
from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import nn

from .nets import adam, BatchedMLP, soft_update

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Parameters of `module` take no gradient inside the block (inputs still do)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class TwinQ(nn.Module):
    """Two independent Q networks per task: (K, B, obs), (K, B, act) → ((K, B, 1), (K, B, 1))."""

    def __init__(self, n_tasks: int, obs_dim: int, act_dim: int, hidden: list[int]):
        super().__init__()
        self.net1 = BatchedMLP(n_tasks, obs_dim + act_dim, list(hidden), 1)
        self.net2 = BatchedMLP(n_tasks, obs_dim + act_dim, list(hidden), 1)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([s, a], dim=-1)
        return self.net1(x), self.net2(x)

    def q1(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.net1(torch.cat([s, a], dim=-1))


class TanhGaussianActor(nn.Module):
    """π(a|s): a = tanh(μ + σ·ε), ε ~ N(0, I); actions in [−1, 1]."""

    def __init__(self, n_tasks: int, obs_dim: int, act_dim: int, hidden: list[int]):
        super().__init__()
        self.net = BatchedMLP(n_tasks, obs_dim, list(hidden), 2 * act_dim)
        self.act_dim = act_dim

    def forward(self, s: torch.Tensor, eps: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A sampled action (K, B, act) and its log-probability (K, B)."""
        mean, log_std = self.mean_log_std(s)
        if eps is None:
            eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        u = mean + log_std.exp() * eps                                      # Eq. 11 (reparameterisation)
        logp = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)   # Eq. 21
        return torch.tanh(u), logp

    def mean_log_std(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and log σ, the latter squashed smoothly into [LOG_STD_MIN, LOG_STD_MAX] (as CleanRL does)."""
        mean, log_std = self.net(s).chunk(2, dim=-1)
        return mean, LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)

    def mode(self, s: torch.Tensor) -> torch.Tensor:
        """The deterministic action tanh(μ), for evaluation."""
        return torch.tanh(self.net(s).chunk(2, dim=-1)[0])


class SAC(nn.Module):
    """K SAC agents as one module: `actor`, `critic`, `critic_target`, `log_alpha` (K,)."""

    def __init__(self, n_tasks: int, obs_dim: int, act_dim: int, hidden: list[int]):
        super().__init__()
        self.actor = TanhGaussianActor(n_tasks, obs_dim, act_dim, hidden)
        self.critic = TwinQ(n_tasks, obs_dim, act_dim, hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros(n_tasks))
        self.n_tasks, self.obs_dim, self.act_dim = n_tasks, obs_dim, act_dim
        self.target_entropy = -float(act_dim)                                # −|A|

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())


class SACOptimisers:
    """One Adam per part; Adam is element-wise, so one optimiser over (K, ...) tensors is K Adams.
    `agent` has `actor`, `critic_parameters()` and `log_alpha` (`SAC`, `finetune.FinetuneAgent`)."""

    def __init__(self, agent: nn.Module, lr: float):
        self.actor = adam(agent.actor.parameters(), lr)
        self.critic = adam(agent.critic_parameters(), lr)
        self.alpha = adam([agent.log_alpha], lr)

    def items(self):
        return {"actor": self.actor, "critic": self.critic, "alpha": self.alpha}.items()


def gaussian_draws(shapes: dict[str, tuple], generator: torch.Generator | None = None,
                   device="cpu") -> dict[str, torch.Tensor]:
    """Standard normal tensors of the given shapes, drawn in the dict's order."""
    return {name: torch.randn(shape, generator=generator, device=device) for name, shape in shapes.items()}


def sample_noise(n_tasks: int, batch_size: int, act_dim: int, generator: torch.Generator | None = None,
                 device="cpu") -> dict[str, torch.Tensor]:
    """The Gaussian draws one `update` consumes: for a′ ~ π(s′) and for ã ~ π(s)."""
    shape = (n_tasks, batch_size, act_dim)
    return gaussian_draws({"next": shape, "pi": shape}, generator, device)


@torch.no_grad()
def td_target(sac: SAC, batch: dict[str, torch.Tensor], gamma: float, eps_next: torch.Tensor) -> torch.Tensor:
    """y = r + γ(1 − terminal)(min_j Q′_j(s′, a′) − α log π(a′|s′)), a′ ~ π(s′): Eq. 7 with the soft
    value of Eq. 3. Only a terminal state stops the bootstrap; a time-limit cut does not. (K, B, 1)."""
    r, done = batch["rew"].unsqueeze(-1), batch["terminal"].float().unsqueeze(-1)
    a2, logp2 = sac.actor(batch["next_obs"], eps_next)
    t1, t2 = sac.critic_target(batch["next_obs"], a2)
    v2 = torch.min(t1, t2) - sac.alpha[:, None, None] * logp2.unsqueeze(-1)       # soft value V(s′), Eq. 3
    return r + gamma * (1.0 - done) * v2                                         # Eq. 7


def update(sac: SAC, opt: SACOptimisers, batch: dict[str, torch.Tensor], gamma: float, tau: float,
           noise: dict[str, torch.Tensor] | None = None, generator: torch.Generator | None = None
           ) -> dict[str, torch.Tensor]:
    """One SAC gradient step on every task. `batch`: obs, act, rew (K, B), next_obs, terminal (K, B).

    Only `terminal` stops the bootstrap: a transition cut by the time limit (truncated) still
    bootstraps from its next state. Returns per-task (K,) values: critic_loss, actor_loss,
    alpha_loss, alpha, entropy, q.
    """
    s, a = batch["obs"], batch["act"]
    if noise is None:
        noise = sample_noise(*a.shape[:2], sac.act_dim, generator, a.device)
    alpha = sac.alpha.detach()[:, None, None]                                   # (K, 1, 1)

    # ---- critics: Eq. 7-8
    y = td_target(sac, batch, gamma, noise["next"])
    q1, q2 = sac.critic(s, a)
    critic_loss = ((q1 - y).pow(2).mean(dim=(1, 2)) + (q2 - y).pow(2).mean(dim=(1, 2)))   # (K,) Eq. 8
    opt.critic.zero_grad(set_to_none=True)
    critic_loss.sum().backward()
    opt.critic.step()

    # ---- actor: Eq. 12
    s_pi = s.detach()   # `obs` may carry gradient (batch PEARL's z): only the critics pass it on
    a_pi, logp = sac.actor(s_pi, noise["pi"])
    with frozen(sac.critic):                       # gradients reach the actor only (saves the critics' weight grads)
        q_pi = torch.min(*sac.critic(s_pi, a_pi)).squeeze(-1)
        actor_loss = (alpha.squeeze(-1) * logp - q_pi).mean(dim=1)               # (K,)
        opt.actor.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
    opt.actor.step()

    # ---- temperature: Eq. 18 of 2018b, one log α per task, target entropy −|A|
    alpha_loss = -(sac.log_alpha[:, None] * (logp.detach() + sac.target_entropy)).mean(dim=1)
    opt.alpha.zero_grad(set_to_none=True)
    alpha_loss.sum().backward()
    opt.alpha.step()

    soft_update(sac.critic_target, sac.critic, tau)                             # Polyak targets
    return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
            "alpha_loss": alpha_loss.detach(), "alpha": sac.alpha.detach().clone(),
            "entropy": -logp.detach().mean(dim=1), "q": q1.detach().mean(dim=(1, 2))}
