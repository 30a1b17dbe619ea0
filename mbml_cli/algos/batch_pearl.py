"""Batch PEARL — the paper's second baseline (Sec. 5.1): PEARL (Rakelly et al. 2019) trained only
from the K stored batches. In PEARL's Alg. 1 the data-collection lines (1–10) are skipped; on line
13 both the context c_i and the RL mini-batch are drawn uniformly from task i's batch. The agent is
SAC on the state augmented with z; the encoder q_φ (MBML's architecture) is trained by the critic
loss plus β·KL(q_φ(c) ‖ N(0, I)) (PEARL's Eq. 2 and Sec. 4.2), the actor sees z detached.

Implementation: SAC of `algos/sac.py` with one network (n_tasks = 1) on [s, z]; `sac.update` hands the
augmented state to the actor and α detached and to the critics with its gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..recipe.config import Recipe, pick
from .data import TaskData
from . import sac
from .encoder import ContextConfig, ContextPolicy
from .nets import adam


@dataclass(frozen=True)
class PearlConfig(ContextConfig):
    """The `distill.*` keys it reads (MBML's encoder and Q_D sizes, rate and context), and BCQ's γ and τ."""
    gamma: float               # bcq.gamma
    tau: float                 # bcq.tau

    @classmethod
    def of(cls, r: Recipe) -> "PearlConfig":
        return pick(cls, r.distill, gamma=r.bcq.gamma, tau=r.bcq.tau)


class PearlPolicy(ContextPolicy):
    """q_φ and a SAC agent on [s, z]: tanh-Gaussian actor and twin critics of MBML's Q_D size."""

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, encoder_hidden: list, hidden: list):
        super().__init__(obs_dim, act_dim, encoder_hidden, latent_dim)
        self.meta = {"kind": "batch_pearl", "obs_dim": obs_dim, "act_dim": act_dim, "latent_dim": latent_dim,
                     "encoder_hidden": list(encoder_hidden), "hidden": list(hidden)}
        self.sac = sac.SAC(1, obs_dim + latent_dim, act_dim, list(hidden))

    @classmethod
    def from_meta(cls, meta: dict) -> "PearlPolicy":
        return cls(**{k: meta[k] for k in ("obs_dim", "act_dim", "latent_dim", "encoder_hidden", "hidden")})

    @torch.no_grad()
    def act(self, obs: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """PEARL evaluates with the policy's mean action tanh(μ(s, z)). (B, obs), (B, L) → (B, act)."""
        return self.sac.actor.mode(self.state_with(obs, z).unsqueeze(0)).squeeze(0)


class PearlTrainer:
    """One PEARL step (its Alg. 1 lines 11–20, minus collection) on all K tasks' batches at once."""

    def __init__(self, policy: PearlPolicy, data: TaskData, cfg: PearlConfig):
        self.policy, self.data, self.cfg = policy, data, cfg
        self.opt = sac.SACOptimisers(policy.sac, cfg.lr)
        self.encoder_opt = adam(policy.encoder.parameters(), cfg.lr)

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {**dict(self.opt.items()), "encoder": self.encoder_opt}

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy}

    def step(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        p, cfg = self.policy, self.cfg
        rl, kl = p.inferred_batch(self.data, cfg.context_size, cfg.batch_size, generator)    # lines 13–15
        self.encoder_opt.zero_grad(set_to_none=True)
        (cfg.kl_beta * kl).backward(retain_graph=True)                                        # line 18: ∇φ β·KL
        losses = sac.update(p.sac, self.opt, rl, cfg.gamma, cfg.tau, generator=generator)   # lines 16–20
        self.encoder_opt.step()                                                                # ... + ∇φ L_critic
        return {"critic_loss": losses["critic_loss"].sum().detach(), "actor_loss": losses["actor_loss"].sum().detach(),
                "alpha": losses["alpha"].sum().detach(), "q": losses["q"].sum().detach(), "kl": kl.detach(),
                "total": (losses["critic_loss"].sum() + cfg.kl_beta * kl).detach()}


POLICY = PearlPolicy


def build_trainer(r: Recipe, data: TaskData, device) -> PearlTrainer:
    """Batch PEARL from the recipe's keys (`PearlConfig`), on the K batches."""
    cfg = PearlConfig.of(r)
    policy = PearlPolicy(data.obs.shape[-1], data.act.shape[-1], cfg.latent_dim, cfg.encoder_hidden,
                         cfg.q_hidden).to(device)
    policy.set_stats(*data.stats())
    return PearlTrainer(policy, data, cfg)
