"""Contextual BCQ — the paper's first baseline (Sec. 5.1): BCQ whose generator (VAE), perturbation
actor ξ and twin critics all take the task embedding z as an input, trained on the union of the K
batches at once, with no per-task teachers. The encoder q_φ (MBML's architecture) is trained only
by the critic's TD loss plus β·KL(q_φ(c) ‖ N(0, I)), on contexts drawn from the same task as the
RL mini-batch (PEARL's recipe for training an encoder; Rakelly et al. 2019, Alg. 1).

Implementation: z is appended to the (normalised) state, so the networks are exactly BCQ's
(`algos/bcq.py`, one network: n_tasks = 1) on the augmented state [s, z] and one `bcq.update` is
one BCQ iteration; `bcq.update` hands the augmented state to the VAE and ξ detached and to the
critics with its gradient, so q_φ learns from the TD loss alone (plus the KL term below).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..recipe.config import BCQConfig, Recipe, pick
from .data import TaskData
from . import bcq
from .encoder import ContextConfig, ContextPolicy
from .nets import adam


@dataclass(frozen=True)
class ContextualBCQConfig(ContextConfig):
    """The `distill.*` keys it reads (MBML's network sizes, rate and context), and the `bcq` section:
    BCQ's own constants (φ, λ, γ, τ, the VAE's KL weight, candidates)."""
    g_hidden: list
    xi_hidden: list
    bcq: BCQConfig

    @classmethod
    def of(cls, r: Recipe) -> "ContextualBCQConfig":
        return pick(cls, r.distill, bcq=r.bcq)


class ContextualBCQPolicy(ContextPolicy):
    """q_φ and one BCQ on [s, z]: Q(s, a, z), G(s, ν, z), ξ(s, a, z) with MBML's network sizes."""

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, encoder_hidden: list, q_hidden: list,
                 g_hidden: list, xi_hidden: list, phi: float = 0.05, n_candidates: int = 10):
        super().__init__(obs_dim, act_dim, encoder_hidden, latent_dim)
        self.meta = {"kind": "contextual_bcq", "obs_dim": obs_dim, "act_dim": act_dim, "latent_dim": latent_dim,
                     "encoder_hidden": list(encoder_hidden), "q_hidden": list(q_hidden),
                     "g_hidden": list(g_hidden), "xi_hidden": list(xi_hidden), "phi": float(phi),
                     "n_candidates": int(n_candidates)}
        cfg = BCQConfig(actor_hidden=list(xi_hidden), critic_hidden=list(q_hidden), vae_hidden=list(g_hidden),
                        phi=phi, n_candidates=n_candidates)
        self.bcq = bcq.BCQ(1, obs_dim + latent_dim, act_dim, cfg)

    @classmethod
    def from_meta(cls, meta: dict) -> "ContextualBCQPolicy":
        return cls(**{k: meta[k] for k in ("obs_dim", "act_dim", "latent_dim", "encoder_hidden", "q_hidden",
                                            "g_hidden", "xi_hidden", "phi", "n_candidates")})

    @torch.no_grad()
    def act(self, obs: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """BCQ's selection (its Eq. 11 / MBML's Eq. 1) given z. obs (B, obs_dim), z (B, L) → (B, act_dim)."""
        return self.bcq.select_action(self.state_with(obs, z).unsqueeze(0), generator).squeeze(0)


class ContextualBCQTrainer:
    """One training step of Contextual BCQ on all K tasks' batches at once."""

    def __init__(self, policy: ContextualBCQPolicy, data: TaskData, cfg: ContextualBCQConfig):
        self.policy, self.data, self.cfg = policy, data, cfg
        # BCQ's own constants (λ, γ, τ, KL weight, candidates) with MBML's learning rate
        self.bcq_cfg = BCQConfig(**{**cfg.bcq.__dict__, "phi": policy.meta["phi"], "lr": cfg.lr,
                                    "n_candidates": policy.meta["n_candidates"]})
        self.bcq = bcq.BCQTrainer(policy.bcq, cfg.lr)
        self.encoder_opt = adam(policy.encoder.parameters(), cfg.lr)

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {**self.bcq.optimisers(), "encoder": self.encoder_opt}

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "actor_target": self.bcq.actor_target,
                "critic_target": self.bcq.critic_target}

    def step(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        # context c_i and mini-batch, both from task i's own batch; z on the states
        rl, kl = self.policy.inferred_batch(self.data, cfg.context_size, cfg.batch_size, generator)
        self.encoder_opt.zero_grad(set_to_none=True)
        (cfg.kl_beta * kl).backward(retain_graph=True)                                        # β·KL
        losses = bcq.update(self.bcq, rl, self.bcq_cfg, generator=generator)                   # + TD loss → q_φ
        self.encoder_opt.step()
        return {"critic_loss": losses["critic_loss"].sum().detach(), "actor_loss": losses["actor_loss"].sum().detach(),
                "vae_loss": losses["vae_loss"].sum().detach(), "q": losses["q"].sum().detach(), "kl": kl.detach(),
                "total": (losses["critic_loss"].sum() + cfg.kl_beta * kl).detach()}


POLICY = ContextualBCQPolicy


def build_trainer(r: Recipe, data: TaskData, device) -> ContextualBCQTrainer:
    """Contextual BCQ from the recipe's keys (`ContextualBCQConfig`), on the K batches."""
    cfg = ContextualBCQConfig.of(r)
    policy = ContextualBCQPolicy(data.obs.shape[-1], data.act.shape[-1], cfg.latent_dim, cfg.encoder_hidden,
                                 cfg.q_hidden, cfg.g_hidden, cfg.xi_hidden, cfg.bcq.phi, cfg.bcq.n_candidates).to(device)
    policy.set_stats(*data.stats())
    return ContextualBCQTrainer(policy, data, cfg)
