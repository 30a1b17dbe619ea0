"""MBML: distil K single-task BCQ policies into one task-conditioned policy, with a triplet loss on
relabelled transitions that forces the task-inference module to read rewards (Alg. 1, Eq. 3–11).

Read top to bottom:
  1. the recipe keys MBML reads (`MBMLConfig`); its ablations are `Variant`s of one algorithm
     (Sec. 5.2), one per name in algos/registry.py: whether contexts mix in relabelled transitions,
     which task-inference loss (algos/inference_loss.py: Eq. 8–9, Eq. 11, none, FOCAL's or CORRO's;
     the full model's is `distill.inference_loss`), which rewards;
  2. the distilled networks Q_D, G_D, ξ_D with the encoder q_φ, and BCQ-style action selection (Fig. 3);
  3. one training step: sample contexts, relabel, the task-inference loss, Eq. 3–5 and Eq. 10, all K
     tasks and all K(K−1) pairs batched — there is no Python loop over tasks or pairs;
  4. the trainer the distill stage drives, and `build_trainer`, which makes it from a recipe.

Shapes: K training tasks, B (s, a) samples per task, T transitions per context, L = latent_dim.
The teachers (the K BCQ policies) enter as `Teachers`, three batched callables on (K, B, ·).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from ..recipe.config import Recipe, pick
from .data import TaskData, draw_device, gather_rows, sample_rows
from .encoder import ContextConfig, ContextPolicy, kl_to_prior, product_of_gaussians, sample_z
from .inference_loss import LOSSES, Contexts
from .nets import mlp, adam
from .registry import INFERENCE_LOSSES, Variant


# ---- 1. the recipe keys it reads -----------------------------------------------------------------
@dataclass(frozen=True)
class MBMLConfig(ContextConfig):
    """The `distill.*` keys MBML and its ablations read, and BCQ's φ and candidate count (Fig. 3)."""
    g_hidden: list
    xi_hidden: list
    margin: float              # m (Eq. 8, Eq. 11)
    relabel_context: int       # relabelled transitions added to c_i
    n_contexts: int            # contexts per task for Eq. 11 and dml
    inference_loss: str        # the full model's loss (`Variant.loss_from_recipe`): a key of INFERENCE_LOSSES
    dml_beta: float            # FOCAL's β, n, ε
    dml_power: float
    dml_epsilon: float
    infonce_temperature: float # CORRO's τ
    generator_lr: float        # G_D's and ξ_D's own Adam rate; 0: lr
    phi: float                 # bcq.phi
    n_candidates: int          # bcq.n_candidates

    @classmethod
    def of(cls, r: Recipe) -> "MBMLConfig":
        return pick(cls, r.distill, phi=r.bcq.phi, n_candidates=r.bcq.n_candidates)


# ---- 2. networks -----------------------------------------------------------------------------------
class DistilledPolicy(ContextPolicy):
    """q_φ, Q_D(s, a, z), G_D(s, ν, z), ξ_D(s, a, z) and BCQ action selection from them (Fig. 3).

    States are normalised with fixed statistics of the training batches (buffers), and Q_D's output
    is scaled by fixed statistics of the teachers' Q values (`q_mean`, `q_std`): the network outputs
    standardised values, which Adam fits in far fewer steps than raw returns of magnitude ~100 (the
    argmax of Eq. 1 is unchanged by it), and Eq. 3's error is measured in those std units.
    G_D ends in tanh like BCQ's decoder; ξ_D outputs a perturbation of at most φ, like BCQ's actor."""

    def __init__(self, obs_dim: int, act_dim: int, vae_latent: int, latent_dim: int, encoder_hidden: list,
                 q_hidden: list, g_hidden: list, xi_hidden: list, phi: float = 0.05, n_candidates: int = 10):
        super().__init__(obs_dim, act_dim, encoder_hidden, latent_dim)          # q_φ, state normalisation
        self.meta = {"obs_dim": obs_dim, "act_dim": act_dim, "vae_latent": vae_latent, "latent_dim": latent_dim,
                     "encoder_hidden": list(encoder_hidden), "q_hidden": list(q_hidden),
                     "g_hidden": list(g_hidden), "xi_hidden": list(xi_hidden), "phi": float(phi),
                     "n_candidates": int(n_candidates)}
        self.vae_latent, self.phi, self.n_candidates = vae_latent, phi, n_candidates
        self.q = mlp(obs_dim + act_dim + latent_dim, list(q_hidden), 1)                 # Q_D
        self.g = mlp(obs_dim + vae_latent + latent_dim, list(g_hidden), act_dim)        # G_D
        self.xi = mlp(obs_dim + act_dim + latent_dim, list(xi_hidden), act_dim)         # ξ_D
        self.register_buffer("q_mean", torch.zeros(()))
        self.register_buffer("q_std", torch.ones(()))

    @classmethod
    def from_meta(cls, meta: dict) -> "DistilledPolicy":
        return cls(**{k: meta[k] for k in ("obs_dim", "act_dim", "vae_latent", "latent_dim", "encoder_hidden",
                                            "q_hidden", "g_hidden", "xi_hidden", "phi", "n_candidates")})

    def set_q_stats(self, q_mean, q_std) -> None:
        self.q_mean.fill_(float(q_mean))
        self.q_std.fill_(float(q_std))

    def q_value(self, obs, act, z):
        return self.q(torch.cat([self.normalise(obs), act, z], -1)).squeeze(-1) * self.q_std + self.q_mean

    def generate(self, obs, nu, z):
        return torch.tanh(self.g(torch.cat([self.normalise(obs), nu, z], -1)))

    def perturb(self, obs, act, z):
        """a + ξ_D(s, a, z): the corrected action (unclipped, for regression onto the teacher)."""
        return act + self.phi * torch.tanh(self.xi(torch.cat([self.normalise(obs), act, z], -1)))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fig. 3 / Eq. 1: n candidates a_m = G_D(s, ν_m, z), ν_m ~ N(0, I) clipped to ±0.5, corrected
        by ξ_D, and the one with the highest Q_D. obs (B, obs_dim), z (B, L) → (B, act_dim)."""
        B, n = obs.shape[0], self.n_candidates
        s = obs.unsqueeze(1).expand(B, n, self.obs_dim)
        zz = z.unsqueeze(1).expand(B, n, self.latent_dim)
        nu = torch.randn(B, n, self.vae_latent, generator=generator, device=draw_device(generator)).to(obs.device).clamp(-0.5, 0.5)
        cand = self.perturb(s, self.generate(s, nu, zz), zz).clamp(-1.0, 1.0)
        best = self.q_value(s, cand, zz).argmax(1)
        return cand[torch.arange(B, device=obs.device), best]


@dataclass
class Teachers:
    """The K single-task BCQ policies as batched functions on (K, B, ·): Q_i(s, a) → (K, B),
    G_i(s, ν) (the VAE decoder with given noise ν) → (K, B, A), ξ_i(s, a) → perturbed action."""
    q: Callable
    decode: Callable
    actor: Callable
    vae_latent: int

    @classmethod
    def from_bcq(cls, bcq) -> "Teachers":
        """From `algos.bcq.BCQ`: Q_i = critic.q1, G_i = vae.decode with given ν, ξ_i = actor."""
        return cls(q=lambda s, a: bcq.critic.q1(s, a).squeeze(-1),
                   decode=lambda s, nu: bcq.vae.decode(s, nu), actor=lambda s, a: bcq.actor(s, a),
                   vae_latent=int(bcq.vae.latent_dim))


@dataclass
class Relabelled:
    """Relabelled rewards of every ordered pair, done once (pipeline/relabel.py): mean[i, j, n] is
    R̂_i(s_{j,n}, a_{j,n}), mask[i, j, n] its eligibility (Eq. 7); next_obs[i, j, n] the next-state
    ensemble's prediction where tasks differ in dynamics (else None: the stored s' is kept)."""
    mean: torch.Tensor               # (K, K, N)
    mask: torch.Tensor               # (K, K, N) bool
    next_obs: torch.Tensor | None = None   # (K, K, N, obs_dim)

    def to(self, device) -> "Relabelled":
        return Relabelled(self.mean.to(device), self.mask.to(device),
                          None if self.next_obs is None else self.next_obs.to(device))


# ---- 3. one step -------------------------------------------------------------------------------------
def relabelled_pairs(rel: Relabelled, own: dict, idx: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """c_{j→i} for every ordered pair (Eq. 7): task j's sampled transitions idx (K, T) with R̂_i's
    reward. Returns inputs (K, K, T, ·) (rows i, columns j) and the eligibility mask (K, K, T)."""
    K, T = idx.shape
    at = idx.unsqueeze(0).expand(K, K, T)
    rew = torch.gather(rel.mean, 2, at)
    mask = torch.gather(rel.mask, 2, at)
    if rel.next_obs is not None:
        d = rel.next_obs.shape[-1]
        next_obs = torch.gather(rel.next_obs, 2, at.unsqueeze(-1).expand(K, K, T, d))
    else:
        next_obs = own["next_obs"].unsqueeze(0).expand(K, *own["next_obs"].shape)
    pairs = {"obs": own["obs"].unsqueeze(0).expand(K, *own["obs"].shape),
             "act": own["act"].unsqueeze(0).expand(K, *own["act"].shape), "rew": rew, "next_obs": next_obs}
    return pairs, mask


def pick_relabelled(pairs: dict, mask: torch.Tensor, n: int, generator: torch.Generator):
    """For each task i, n eligible relabelled transitions drawn without replacement from all other
    tasks' (K − 1)·T candidates. Returns inputs (K, n, ·) and a mask (K, n): fewer than n eligible
    candidates leave the rest as padding."""
    K, _, T = mask.shape
    flat_mask = mask.reshape(K, K * T)
    score = torch.rand(K, K * T, generator=generator, device=draw_device(generator)).to(mask.device)
    score = torch.where(flat_mask, score, torch.full_like(score, -1.0))   # eligible ones first, random order
    n = min(n, K * T)
    top = score.topk(n, dim=1).indices                                     # (K, n)
    picked = {k: gather_rows(v.reshape(K, K * T, *v.shape[3:]), top) for k, v in pairs.items()}
    return picked, torch.gather(flat_mask, 1, top)


def step_losses(policy: DistilledPolicy, data: TaskData, teachers: Teachers, rel: Relabelled | None,
                variant: Variant, cfg: MBMLConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Alg. 1, lines 2–6 for all K tasks at once → the loss terms (and 'total', Eq. 10)."""
    K, T, L = data.n_tasks, cfg.context_size, cfg.latent_dim
    enc = policy.encoder
    loss = LOSSES[variant.loss](cfg)

    # Alg. 1 line 2: context sets c_i from B_i (n of them per task for Eq. 11)
    idx = sample_rows(data.sizes, (loss.n_contexts, T), generator)             # (K, n, T)
    own = data.transitions(idx)
    c = Contexts(enc, *enc.factors(**own))                                     # (K, n, T, L) per-transition factors
    if variant.relabel_context or loss.relabelled:
        # Alg. 1 line 3: c_{j→i} for every ordered pair, and which relabelled transitions are eligible
        first = {k: v[:, 0] for k, v in own.items()}                           # c_i: the first context
        c.pairs, c.eligible = relabelled_pairs(rel, first, idx[:, 0])          # (K, K, T, ·), (K, K, T)
    out = loss(c)                                                              # Alg. 1 line 4: Eq. 8–9 or Eq. 11
    own_mu, own_var = c.first                                                  # (K, T, L)
    ctx_mu, ctx_var, ctx_mask = own_mu, own_var, torch.ones(K, T, device=own_mu.device)
    if variant.relabel_context:                                                # c_i ∪ c̃_i (Sec. 5.2)
        picked, pmask = pick_relabelled(c.pairs, c.eligible, cfg.relabel_context, generator)
        p_mu, p_var = enc.factors(**picked)
        ctx_mu, ctx_var = torch.cat([own_mu, p_mu], 1), torch.cat([own_var, p_var], 1)
        ctx_mask = torch.cat([ctx_mask, pmask.float()], 1)

    # Eq. 3: z_i ~ q_φ(c_i) by reparameterisation, with β·KL(q_φ(c_i) ‖ N(0, I))
    mu, var = product_of_gaussians(ctx_mu, ctx_var, ctx_mask)                  # (K, L)
    z = sample_z(mu, var, generator)
    kl = kl_to_prior(mu, var).mean()

    # the distillation targets from the K teachers, on (s, a) ~ B_i
    t = teacher_targets(data, teachers, cfg, generator)
    zq = z.unsqueeze(1).expand(K, t["s"].shape[1], L)
    err = t["q"] - policy.q_value(t["s"], t["a"], zq)
    out["loss_q"] = ((err / policy.q_std) ** 2).mean()                                           # Eq. 3
    out["loss_g"], out["loss_xi"] = imitation_losses(policy, t, zq.detach())                      # Eq. 4–5, z̄
    out["kl"] = kl
    out["total"] = (out[loss.key] + out["loss_q"] + cfg.kl_beta * kl                              # Eq. 10
                    + out["loss_g"] + out["loss_xi"])
    return out


def teacher_targets(data: TaskData, teachers: Teachers, cfg: MBMLConfig, generator: torch.Generator) -> dict:
    """(s, a) ~ B_i (K, B, ·), ν ~ N(0, I) clipped to ±0.5, and the teachers' Q_i(s, a), G_i(s, ν) and
    ξ_i(s, G_i(s, ν)) on them."""
    batch = data.transitions(sample_rows(data.sizes, (cfg.batch_size,), generator))
    s, a = batch["obs"], batch["act"]
    nu = torch.randn(*s.shape[:2], teachers.vae_latent, generator=generator,
                     device=draw_device(generator)).to(s.device).clamp(-0.5, 0.5)
    with torch.no_grad():
        g = teachers.decode(s, nu)
        return {"s": s, "a": a, "nu": nu, "q": teachers.q(s, a), "g": g, "xi": teachers.actor(s, g)}


def imitation_losses(policy: DistilledPolicy, t: dict, zbar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4 (G_D onto G_i) and Eq. 5 (ξ_D onto ξ_i), squared errors summed over action dimensions;
    z̄ is the sampled z with its gradient stopped, as in the paper."""
    loss_g = ((t["g"] - policy.generate(t["s"], t["nu"], zbar)) ** 2).sum(-1).mean()              # Eq. 4
    loss_xi = ((t["xi"] - policy.perturb(t["s"], t["g"], zbar)) ** 2).sum(-1).mean()              # Eq. 5
    return loss_g, loss_xi


# ---- 4. the trainer ----------------------------------------------------------------------------------
@torch.no_grad()
def teacher_q_stats(teachers: Teachers, data: TaskData, rows: int = 10_000) -> tuple[float, float]:
    """Mean and std of Q_i(s, a) over the first `rows` transitions of every task's batch."""
    n = min(int(data.sizes.min()), rows)
    q = teachers.q(data.obs[:, :n], data.act[:, :n])
    return float(q.mean()), max(float(q.std()), 1e-3)


def param_groups(policy: DistilledPolicy, cfg: MBMLConfig) -> list[dict]:
    """One Adam group, or two when G_D and ξ_D have their own learning rate (`generator_lr`)."""
    if not cfg.generator_lr or cfg.generator_lr == cfg.lr:
        return [{"params": list(policy.parameters())}]
    heads = list(policy.g.parameters()) + list(policy.xi.parameters())
    ids = {id(p) for p in heads}
    return [{"params": [p for p in policy.parameters() if id(p) not in ids]},
            {"params": heads, "lr": cfg.generator_lr}]


class MBMLTrainer:
    """MBML (or an ablation) as the distill stage drives every algorithm: `step`, and the modules and
    optimisers a checkpoint holds. Q_D's output scale is set from the teachers' Q values here."""

    def __init__(self, policy: DistilledPolicy, data: TaskData, teachers: Teachers, rel: Relabelled | None,
                 variant: Variant, cfg: MBMLConfig):
        self.policy, self.data, self.teachers, self.rel, self.variant, self.cfg = policy, data, teachers, rel, variant, cfg
        policy.set_q_stats(*teacher_q_stats(teachers, data))
        self.opt = adam(param_groups(policy, cfg), cfg.lr)

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.opt}

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy}

    def step(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Alg. 1 line 7: one Adam step on θ (Q_D, G_D, ξ_D) and φ (q_φ) together."""
        losses = step_losses(self.policy, self.data, self.teachers, self.rel, self.variant, self.cfg, generator)
        self.opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.opt.step()
        return {k: v.detach() for k, v in losses.items()}


POLICY = DistilledPolicy


def build_trainer(r: Recipe, data: TaskData, device, variant: Variant, teachers: Teachers,
                  rel: Relabelled | None) -> MBMLTrainer:
    """MBML or one of its ablations, from the recipe's keys (`MBMLConfig`), on the K batches."""
    cfg = MBMLConfig.of(r)
    if variant.loss_from_recipe:                                     # the full model: `distill.inference_loss`
        variant = replace(variant, loss=INFERENCE_LOSSES[cfg.inference_loss])
    policy = DistilledPolicy(data.obs.shape[-1], data.act.shape[-1], teachers.vae_latent, cfg.latent_dim,
                             cfg.encoder_hidden, cfg.q_hidden, cfg.g_hidden, cfg.xi_hidden, cfg.phi,
                             cfg.n_candidates).to(device)
    policy.set_stats(*data.stats())
    return MBMLTrainer(policy, data, teachers, rel, variant, cfg)
