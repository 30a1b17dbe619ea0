"""Batch-Constrained deep Q-learning (BCQ; Fujimoto, Meger & Precup 2019) for K tasks at once.

One `BCQ` module holds K independent BCQ agents — weights with a leading task dimension
(`nets.BatchedMLP`), inputs (K, B, ·):

- `vae`: the generative model G_ω of the batch's actions. `encode(s, a) -> (mean, std)`,
  `decode(s, z=None)` — z None draws N(0, I) clipped to ±0.5 — returns actions in [−1, 1];
- `actor`: the perturbation model ξ_φ: `actor(s, a) -> clamp(a + φ·tanh(ξ(s, a)), −1, 1)`;
- `critic`: twin Q: `critic(s, a) -> (q1, q2)`, each (K, B, 1), and `critic.q1(s, a)`;
- `select_action(s)`: n candidates from G, perturbed by ξ, argmax of Q1 (paper Eq. 1, BCQ's Eq. 11).

`update` is one gradient step of every part on every task; the losses are summed over tasks (each
task's own mean), so batched training equals K separate single-task runs. (`loaders.load_bcq` reads
the trained policies of all K training tasks from a store.)

Equation numbers refer to Fujimoto et al. 2019 (arXiv:1812.02900): Eq. 11 the policy (n candidates
from G, perturbed by ξ, argmax of Q), Eq. 12 ξ's objective, Eq. 13 the soft clipped double-Q target;
the VAE is trained by reconstruction + KL as in that paper's Alg. 1 and reference code. "paper Eq. 1"
is MBML's Eq. 1 (how BCQ selects an action).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..recipe.config import BCQConfig
from .data import TaskData
from .nets import adam, BatchedMLP, soft_update
from .sac import TwinQ, frozen


class VAE(nn.Module):
    """Conditional VAE of the batch's actions: encoder (s, a) → (μ, σ), decoder (s, z) → a."""

    def __init__(self, n_tasks: int, obs_dim: int, act_dim: int, hidden: list[int], latent_dim: int):
        super().__init__()
        self.encoder = BatchedMLP(n_tasks, obs_dim + act_dim, list(hidden), 2 * latent_dim)
        self.decoder = BatchedMLP(n_tasks, obs_dim + latent_dim, list(hidden), act_dim)
        self.latent_dim = latent_dim

    def encode(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.encoder(torch.cat([s, a], dim=-1)).chunk(2, dim=-1)
        return mean, log_std.clamp(-4.0, 15.0).exp()          # the clamp of BCQ's reference code

    def decode(self, s: torch.Tensor, z: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        if z is None:    # at generation time the latent is drawn from the clipped prior
            z = torch.randn(s.shape[:-1] + (self.latent_dim,), generator=generator,
                            device=s.device).clamp(-0.5, 0.5)
        return torch.tanh(self.decoder(torch.cat([s, z], dim=-1)))

    def forward(self, s, a, eps: torch.Tensor | None = None, generator=None):
        """Reconstruction of `a` through z = μ + σ·ε, with (μ, σ)."""
        mean, std = self.encode(s, a)
        if eps is None:
            eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        return self.decode(s, mean + std * eps), mean, std


class Perturbation(nn.Module):
    """ξ_φ(s, a) ∈ [−φ, φ]: the correction added to a generated action (Sec. 4 of BCQ)."""

    def __init__(self, n_tasks: int, obs_dim: int, act_dim: int, hidden: list[int], phi: float):
        super().__init__()
        self.net = BatchedMLP(n_tasks, obs_dim + act_dim, list(hidden), act_dim)
        self.phi = phi

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return (a + self.phi * torch.tanh(self.net(torch.cat([s, a], dim=-1)))).clamp(-1.0, 1.0)


class BCQ(nn.Module):
    """K BCQ agents: `vae` (G), `actor` (ξ), `critic` (Q1, Q2). Built from a `BCQConfig`."""

    def __init__(self, n_tasks: int, obs_dim: int, act_dim: int, cfg: BCQConfig):
        super().__init__()
        self.vae = VAE(n_tasks, obs_dim, act_dim, cfg.vae_hidden, 2 * act_dim)   # latent 2|A|
        self.actor = Perturbation(n_tasks, obs_dim, act_dim, cfg.actor_hidden, cfg.phi)
        self.critic = TwinQ(n_tasks, obs_dim, act_dim, cfg.critic_hidden)
        self.n_tasks, self.obs_dim, self.act_dim = n_tasks, obs_dim, act_dim
        self.n_candidates = cfg.n_candidates

    @torch.no_grad()
    def select_action(self, s: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """π(s) = argmax_{a_m + ξ(s, a_m)} Q1(s, ·) over a_m ~ G(s), m = 1..n (paper Eq. 1; BCQ Eq. 11).
        (K, B, obs) → (K, B, act)."""
        K, B, _ = s.shape
        n = self.n_candidates
        rep = s.repeat_interleave(n, dim=1)                                  # (K, B·n, obs)
        cand = self.actor(rep, self.vae.decode(rep, generator=generator))    # (K, B·n, act)
        q = self.critic.q1(rep, cand).view(K, B, n)
        best = q.argmax(dim=-1)                                              # (K, B)
        cand = cand.view(K, B, n, self.act_dim)
        return cand.gather(2, best[..., None, None].expand(K, B, 1, self.act_dim)).squeeze(2)

    def act(self, obs, generator: torch.Generator | None = None):
        """numpy (K, obs) → numpy (K, act): one state per task, for `rollout.run_episode`."""
        device = next(self.parameters()).device
        s = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(1)
        return self.select_action(s, generator).squeeze(1).cpu().numpy()


class BCQTrainer:
    """The networks being trained, their Polyak targets (ξ′, Q′) and one Adam per part. Given the
    tasks' `data` and the `cfg`, `step(gen)` is one `update` on a mini-batch drawn from `gen`, its
    noise drawn from `noise_gen` (`gen` when None)."""

    def __init__(self, model: BCQ, lr: float, data: TaskData | None = None, cfg: BCQConfig | None = None,
                 noise_gen: torch.Generator | None = None):
        self.model, self.data, self.cfg, self.noise_gen = model, data, cfg, noise_gen
        self.actor_target = copy.deepcopy(model.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(model.critic).requires_grad_(False)
        self.vae_opt = adam(model.vae.parameters(), lr)
        self.actor_opt = adam(model.actor.parameters(), lr)
        self.critic_opt = adam(model.critic.parameters(), lr)

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"vae": self.vae_opt, "actor": self.actor_opt, "critic": self.critic_opt}

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "actor_target": self.actor_target, "critic_target": self.critic_target}

    def step(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        cfg, batch, noise_gen = self.cfg, self.data.sample(self.cfg.batch_size, gen), self.noise_gen or gen
        noise = sample_noise(self.model.n_tasks, cfg.batch_size, self.model.vae.latent_dim, cfg.n_candidates,
                             noise_gen, noise_gen.device)
        return update(self, batch, cfg, noise)


def sample_noise(n_tasks: int, batch_size: int, latent_dim: int, n_candidates: int,
                 generator: torch.Generator | None = None, device="cpu") -> dict[str, torch.Tensor]:
    """The random draws one `update` consumes (all (K, ·, latent)): ε of the VAE's reparameterisation,
    the clipped-prior latents of the target's candidates and of ξ's training actions."""
    def randn(*shape):
        return torch.randn(shape, generator=generator, device=device)
    return {"vae": randn(n_tasks, batch_size, latent_dim),
            "next": randn(n_tasks, batch_size * n_candidates, latent_dim).clamp(-0.5, 0.5),
            "actor": randn(n_tasks, batch_size, latent_dim).clamp(-0.5, 0.5)}


@torch.no_grad()
def td_target(tr: BCQTrainer, batch: dict[str, torch.Tensor], cfg: BCQConfig, z_next: torch.Tensor) -> torch.Tensor:
    """y = r + γ(1 − terminal) max_i [λ min_j Q′_j(s′, a_i) + (1 − λ) max_j Q′_j(s′, a_i)] over n
    candidates a_i = ã_i + ξ′(s′, ã_i), ã_i = G(s′, z_i) (Eq. 13). Only a terminal state
    stops the bootstrap; a time-limit cut does not. `z_next` (K, B·n, latent). Returns (K, B, 1)."""
    s2 = batch["next_obs"]
    r, done = batch["rew"].unsqueeze(-1), batch["terminal"].float().unsqueeze(-1)
    K, B, _ = s2.shape
    n = cfg.n_candidates
    s2_rep = s2.repeat_interleave(n, dim=1)                                     # (K, B·n, obs)
    a2 = tr.actor_target(s2_rep, tr.model.vae.decode(s2_rep, z_next))           # ã_i + ξ′(s′, ã_i)
    t1, t2 = tr.critic_target(s2_rep, a2)
    tq = cfg.lmbda * torch.min(t1, t2) + (1 - cfg.lmbda) * torch.max(t1, t2)    # Eq. 13
    tq = tq.view(K, B, n).max(dim=-1, keepdim=True)[0]                          # max over candidates
    return r + cfg.gamma * (1.0 - done) * tq


def update(tr: BCQTrainer, batch: dict[str, torch.Tensor], cfg: BCQConfig,
           noise: dict[str, torch.Tensor] | None = None, generator: torch.Generator | None = None
           ) -> dict[str, torch.Tensor]:
    """One BCQ iteration (BCQ's Alg. 1) on every task. `batch`: obs, act, rew (K, B), next_obs,
    terminal (K, B). Only `terminal` stops the bootstrap (time-limit truncation does not).
    Returns per-task (K,) values: vae_loss, recon, kl, critic_loss, actor_loss, q."""
    m = tr.model
    s, a = batch["obs"], batch["act"]
    K, B, _ = s.shape
    n = cfg.n_candidates
    if noise is None:
        noise = sample_noise(K, B, m.vae.latent_dim, n, generator, s.device)

    # ---- generator G_ω: VAE reconstruction + KL (Alg. 1); on the first `generator_rows` rows only when
    # the batch says so (teachers from every task's data whose G models their own behaviour)
    s_in = s.detach()   # `obs` may carry gradient (Contextual BCQ's z): only the critics pass it on
    g = slice(batch.get("generator_rows"))
    recon, mean, std = m.vae(s_in[:, g], a[:, g], noise["vae"][:, g])
    recon_loss = (recon - a[:, g]).pow(2).mean(dim=(1, 2))
    kl = -0.5 * (1 + (std.pow(2)).log() - mean.pow(2) - std.pow(2)).mean(dim=(1, 2))
    vae_loss = recon_loss + cfg.kl_weight * kl                                   # (K,)
    tr.vae_opt.zero_grad(set_to_none=True)
    vae_loss.sum().backward()
    tr.vae_opt.step()

    # ---- critics (Alg. 1): n candidates per next state, Eq. 13 target
    y = td_target(tr, batch, cfg, noise["next"])
    q1, q2 = m.critic(s, a)
    critic_loss = (q1 - y).pow(2).mean(dim=(1, 2)) + (q2 - y).pow(2).mean(dim=(1, 2))
    tr.critic_opt.zero_grad(set_to_none=True)
    critic_loss.sum().backward()
    tr.critic_opt.step()

    # ---- perturbation model ξ_φ (Eq. 12): maximise Q1(s, a + ξ(s, a)), a ~ G(s)
    with torch.no_grad():
        sampled = m.vae.decode(s_in, noise["actor"])
    with frozen(m.critic):
        actor_loss = -m.critic.q1(s_in, m.actor(s_in, sampled)).mean(dim=(1, 2))
        tr.actor_opt.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
    tr.actor_opt.step()

    # ---- Polyak targets ξ′, Q′ (Alg. 1)
    soft_update(tr.critic_target, m.critic, cfg.tau)
    soft_update(tr.actor_target, m.actor, cfg.tau)
    return {"vae_loss": vae_loss.detach(), "recon": recon_loss.detach(), "kl": kl.detach(),
            "critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
            "q": q1.detach().mean(dim=(1, 2))}
