"""The task-inference module q_φ (PEARL's probabilistic context encoder, Sec. 2.2) and the
Gaussian arithmetic around it.

Each transition (s, a, r, s') of a context goes through one MLP to a Gaussian factor (μ_n, σ²_n)
with σ² = softplus(·); the posterior is the product of the factors,

    σ² = 1 / Σ_n 1/σ²_n,     μ = σ² · Σ_n μ_n/σ²_n,

which does not depend on the order of the transitions. A mask (1 = real, 0 = padding) takes a
transition out of both sums, so padded entries are invisible; a context with no real transition
gives the prior N(0, I). Contexts may carry any leading shape (tasks, pairs, ...): the encoder runs
once over all of their transitions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data import TaskData, sample_rows
from .nets import mlp


@dataclass(frozen=True)
class ContextConfig:
    """The `distill.*` keys every policy with q_φ reads: its sizes and KL weight, the context, the
    mini-batch and the rate (each algorithm's config adds its own)."""
    q_hidden: list
    encoder_hidden: list
    latent_dim: int
    kl_beta: float             # β (Eq. 3)
    context_size: int          # T own transitions per context
    batch_size: int            # B
    lr: float

MIN_VAR = 1e-7          # PEARL's floor on each factor's variance


def kl_diag(mu_p: torch.Tensor, var_p: torch.Tensor, mu_q: torch.Tensor, var_q: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(N(μ_p, σ²_p) ‖ N(μ_q, σ²_q)) of diagonal Gaussians, summed over the last dim."""
    return 0.5 * (torch.log(var_q / var_p) + (var_p + (mu_p - mu_q) ** 2) / var_q - 1.0).sum(-1)


def kl_to_prior(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) summed over the last dim (Eq. 3's regulariser)."""
    return 0.5 * (var + mu ** 2 - 1.0 - torch.log(var)).sum(-1)


def product_of_gaussians(mu: torch.Tensor, var: torch.Tensor, mask: torch.Tensor | None = None):
    """Posterior of factors (..., N, L) with mask (..., N) → (μ, σ²) each (..., L).

    Masked factors contribute nothing; an all-masked context yields N(0, I) with no gradient
    path to the factors (no division by zero anywhere, so no NaN even in unused branches)."""
    prec = 1.0 / var.clamp_min(MIN_VAR)
    if mask is not None:      # `where`, not a product: a NaN in a padded entry stays out too
        keep = mask.unsqueeze(-1) > 0
        prec = torch.where(keep, prec, torch.zeros_like(prec))
        mu = torch.where(keep, mu, torch.zeros_like(mu))
    total = prec.sum(-2)                                   # Σ 1/σ²_n
    empty = total <= 0
    total = torch.where(empty, torch.ones_like(total), total)
    var_post = 1.0 / total
    mu_post = var_post * (prec * mu).sum(-2)               # 0 for an empty context
    return mu_post, var_post


class ContextEncoder(nn.Module):
    """q_φ: MLP on each transition → per-transition Gaussian → product over the context.

    Inputs are normalised with fixed statistics of the training batches (buffers, saved with the
    weights) so that states of very different scales do not drown the reward."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], latent_dim: int):
        super().__init__()
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, latent_dim
        self.net = mlp(2 * obs_dim + act_dim + 1, list(hidden), 2 * latent_dim)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("rew_mean", torch.zeros(()))
        self.register_buffer("rew_std", torch.ones(()))

    def set_stats(self, obs_mean, obs_std, rew_mean, rew_std) -> None:
        for name, value in (("obs_mean", obs_mean), ("obs_std", obs_std), ("rew_mean", rew_mean),
                            ("rew_std", rew_std)):
            getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32))

    def factors(self, obs, act, rew, next_obs):
        """Per-transition Gaussian factors: (..., N, ·) → μ, σ² each (..., N, L)."""
        x = torch.cat([(obs - self.obs_mean) / self.obs_std, act,
                       ((rew - self.rew_mean) / self.rew_std).unsqueeze(-1),
                       (next_obs - self.obs_mean) / self.obs_std], dim=-1)
        out = self.net(x)
        mu, raw = out[..., :self.latent_dim], out[..., self.latent_dim:]
        return mu, F.softplus(raw).clamp_min(MIN_VAR)

    def forward(self, obs, act, rew, next_obs, mask=None):
        """Posterior q_φ(c) of contexts (..., N, ·) with optional mask (..., N) → (μ, σ²) (..., L).
        Padded transitions are zeroed before the MLP, so not even a NaN there reaches the weights."""
        if mask is not None:
            keep = mask > 0
            obs, next_obs, act = (torch.where(keep.unsqueeze(-1), t, torch.zeros_like(t)) for t in (obs, next_obs, act))
            rew = torch.where(keep, rew, torch.zeros_like(rew))
        return product_of_gaussians(*self.factors(obs, act, rew, next_obs), mask)


def sample_z(mu: torch.Tensor, var: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = μ + σ ⊙ ε, ε ~ N(0, I): the reparameterisation trick (Eq. 3)."""
    eps = torch.randn(mu.shape, generator=generator, device="cpu").to(mu.device)
    return mu + var.sqrt() * eps


class ContextPolicy(nn.Module):
    """Base of every task-conditioned policy: the encoder q_φ and fixed state-normalisation buffers
    (statistics of the training batches, saved with the weights). Subclasses add their networks and
    `act(obs, z, generator)`."""

    def __init__(self, obs_dim: int, act_dim: int, encoder_hidden: list, latent_dim: int):
        super().__init__()
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, latent_dim
        self.encoder = ContextEncoder(obs_dim, act_dim, encoder_hidden, latent_dim)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    def set_stats(self, obs_mean, obs_std, rew_mean, rew_std) -> None:
        self.obs_mean.copy_(torch.as_tensor(obs_mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(obs_std, dtype=torch.float32))
        self.encoder.set_stats(obs_mean, obs_std, rew_mean, rew_std)

    def normalise(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def state_with(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The augmented state [normalised s, z] of the baselines' networks."""
        return torch.cat([self.normalise(obs), z], dim=-1)

    def inferred_batch(self, data: TaskData, context_size: int, batch_size: int,
                       generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The baselines' RL mini-batch, one network over all K tasks: z ~ q_φ(c_i) from a context of
        task i's own batch, [s, z] with z's gradient into q_φ ([s', z] without), flattened to
        (1, K·B, ·); and KL(q_φ(c_i) ‖ N(0, I)) averaged over the tasks."""
        K = data.n_tasks
        ctx = data.transitions(sample_rows(data.sizes, (context_size,), generator))          # c_i ~ B_i
        mu, var = product_of_gaussians(*self.encoder.factors(**ctx))                         # (K, L)
        z = sample_z(mu, var, generator)                                                     # reparameterised
        batch = data.sample(batch_size, generator)                                           # b_i ~ B_i
        zb = z.unsqueeze(1).expand(K, batch_size, self.latent_dim)
        flat = lambda t: t.reshape((1, K * batch_size) + t.shape[2:])
        rl = {"obs": flat(self.state_with(batch["obs"], zb)),
              "next_obs": flat(self.state_with(batch["next_obs"], zb.detach())),
              "act": flat(batch["act"]), "rew": flat(batch["rew"]), "terminal": flat(batch["terminal"])}
        return rl, kl_to_prior(mu, var).mean()
