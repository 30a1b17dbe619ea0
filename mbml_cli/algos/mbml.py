"""MBML: distil K single-task BCQ policies into one task-conditioned policy, with a triplet loss on
relabelled transitions that forces the task-inference module to read rewards (Alg. 1, Eq. 3–11).

Read top to bottom:
  1. the variants (MBML and its ablations are flags on one algorithm, Sec. 5.2),
  2. the distilled networks Q_D, G_D, ξ_D with the encoder q_φ, and BCQ-style action selection (Fig. 3),
  3. the losses: triplet over all ordered pairs (Eq. 8–9), hardest-pair mining (Eq. 11),
  4. one training step: sample contexts, relabel, Eq. 3–5 and Eq. 10, all K tasks and all K(K−1)
     pairs batched — there is no Python loop over tasks or pairs.

Shapes: K training tasks, B (s, a) samples per task, T transitions per context, L = latent_dim.
The teachers (the K BCQ policies) enter as `Teachers`, three batched callables on (K, B, ·).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..recipe.config import DistillConfig
from .data import TaskData, draw_device, gather_rows, sample_rows
from .nets import mlp
from .encoder import ContextPolicy, kl_diag, kl_to_prior, product_of_gaussians, sample_z


# ---- 1. variants ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    relabel_context: bool        # mix relabelled transitions of other tasks into c_i ("full model")
    triplet: str | None          # "relabel" (Eq. 8–9), "hardest" (Eq. 11) or None
    ground_truth: bool = False   # relabel with the distribution's true reward instead of R̂_i

    @property
    def needs_relabel(self) -> bool:
        return self.relabel_context or self.triplet == "relabel"


VARIANTS = {
    "mbml": Variant(relabel_context=True, triplet="relabel"),
    "gt_relabel": Variant(relabel_context=True, triplet="relabel", ground_truth=True),
    "no_triplet": Variant(relabel_context=True, triplet=None),
    "no_relabel": Variant(relabel_context=False, triplet="hardest"),
    "neither": Variant(relabel_context=False, triplet=None),
}


# ---- 2. networks -----------------------------------------------------------------------------------
class DistilledPolicy(ContextPolicy):
    """q_φ, Q_D(s, a, z), G_D(s, ν, z), ξ_D(s, a, z) and BCQ action selection from them (Fig. 3).

    States are normalised with fixed statistics of the training batches (buffers), and Q_D's output
    is scaled by fixed statistics of the teachers' Q values (`q_mean`, `q_std`): the network outputs
    standardised values, which Adam fits in far fewer steps than raw returns of magnitude ~100 (the
    argmax of Eq. 1 is unchanged by it). Eq. 3's error is measured in std units by default, or in the
    teachers' units (`distill.q_loss: teacher`), which keeps the paper's weights of Eq. 10's terms.
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


# ---- 3. losses ---------------------------------------------------------------------------------------
def triplet_loss(anchor, positive, negative, valid: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 8–9 over every ordered pair (i, j): [d(a, p) − d(a, n) + m]_+ with d = KL(a ‖ ·).

    anchor/positive/negative are (μ, σ²) pairs of shape (K, K, L); `valid` (K, K) is False on the
    diagonal and for pairs without eligible transitions — those are left out of the mean (no
    gradient, no NaN); with no valid pair at all the loss is 0."""
    d_pos = kl_diag(*anchor, *positive)                                      # d(q(c_{j→i}), q(c_i))
    d_neg = kl_diag(*anchor, *negative)                                      # d(q(c_{j→i}), q(c_j))
    per_pair = torch.relu(d_pos - d_neg + margin)                            # Eq. 8
    per_pair = torch.where(valid, per_pair, torch.zeros_like(per_pair))
    return per_pair.sum() / valid.sum().clamp_min(1)                         # Eq. 9 (mean over pairs)


def hardest_triplet_loss(mu: torch.Tensor, var: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 11 (no_relabel): posteriors of n contexts per task, (K, n, L). For each task i, the
    hardest positive is the most divergent pair of its own contexts, the hardest negative the least
    divergent pair between one of its contexts and one of another task's."""
    K, n, L = mu.shape
    d = kl_diag(mu.reshape(K, n, 1, 1, L), var.reshape(K, n, 1, 1, L),
                mu.reshape(1, 1, K, n, L), var.reshape(1, 1, K, n, L))          # (K, n, K, n)
    same = torch.eye(K, dtype=torch.bool, device=mu.device).reshape(K, 1, K, 1).expand(K, n, K, n)
    pos = d.masked_fill(~same, float("-inf")).amax(dim=(1, 2, 3))               # max_{n,n'} d(c_i^n, c_i^n')
    neg = d.masked_fill(same, float("inf")).amin(dim=(1, 2, 3))                 # min_{n,n',j≠i} d(c_i^n, c_j^n')
    return torch.relu(pos - neg + margin).mean()                                # Eq. 11


# ---- 4. one step -------------------------------------------------------------------------------------
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
                variant: Variant, cfg: DistillConfig, generator: torch.Generator):
    """Alg. 1, lines 2–6 for all K tasks at once → the loss terms (and 'total', Eq. 10), and the
    posterior (μ, σ²) of q_φ(c_i), detached, (K, L) each."""
    K, T, L = data.n_tasks, cfg.context_size, cfg.latent_dim
    enc = policy.encoder
    zero = torch.zeros((), device=data.obs.device)
    out = {"loss_triplet": zero, "valid_pairs": zero}

    # Alg. 1 line 2: context sets c_i from B_i (n of them per task for Eq. 11)
    n_ctx = cfg.n_contexts if variant.triplet == "hardest" else 1
    idx = sample_rows(data.sizes, (n_ctx, T), generator)                       # (K, n, T)
    own = data.transitions(idx)
    own_mu, own_var = enc.factors(**own)                                       # (K, n, T, L) per-transition factors

    if variant.triplet == "hardest":                                           # Eq. 11
        post_mu, post_var = product_of_gaussians(own_mu, own_var)              # (K, n, L)
        out["loss_triplet"] = hardest_triplet_loss(post_mu, post_var, cfg.margin)
    own = {k: v[:, 0] for k, v in own.items()}                                 # c_i: the first context
    own_mu, own_var, idx = own_mu[:, 0], own_var[:, 0], idx[:, 0]              # (K, T, L), (K, T)
    ctx_mu, ctx_var, ctx_mask = own_mu, own_var, torch.ones(K, T, device=own_mu.device)

    if variant.needs_relabel:
        # Alg. 1 line 3: c_{j→i} for every ordered pair, and which relabelled transitions are eligible
        pairs, elig = relabelled_pairs(rel, own, idx)                          # (K, K, T, ·), (K, K, T)
        if variant.triplet == "relabel":                                       # Alg. 1 line 4
            m = elig.float()
            valid = elig.any(-1)                                               # (K, K); diagonal is never eligible
            anchor = product_of_gaussians(*enc.factors(**pairs), m)            # q(c_{j→i})
            positive = product_of_gaussians(own_mu.unsqueeze(1).expand(K, K, T, L),      # as many of
                                            own_var.unsqueeze(1).expand(K, K, T, L), m)   # task i's own
            negative = product_of_gaussians(own_mu.unsqueeze(0).expand(K, K, T, L),      # the same (s, a) with
                                            own_var.unsqueeze(0).expand(K, K, T, L), m)   # task j's true reward
            out["loss_triplet"] = triplet_loss(anchor, positive, negative, valid, cfg.margin)   # Eq. 8–9
            out["valid_pairs"] = valid.float().sum() / max(K * (K - 1), 1)
        if variant.relabel_context:                                            # c_i ∪ c̃_i (Sec. 5.2)
            picked, pmask = pick_relabelled(pairs, elig, cfg.relabel_context, generator)
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
    out["loss_q"] = ((err if cfg.q_loss == "teacher" else err / policy.q_std) ** 2).mean()            # Eq. 3
    out["loss_g"], out["loss_xi"] = imitation_losses(policy, t, generator_z(mu, zq, cfg))              # Eq. 4–5
    out["kl"] = kl
    out["total"] = (out["loss_triplet"] + out["loss_q"] + cfg.kl_beta * kl                             # Eq. 10
                    + out["loss_g"] + out["loss_xi"])
    return out, (mu.detach(), var.detach())


def teacher_targets(data: TaskData, teachers: Teachers, cfg: DistillConfig, generator: torch.Generator) -> dict:
    """(s, a) ~ B_i (K, B, ·), ν ~ N(0, I) clipped to ±0.5, and the teachers' Q_i(s, a), G_i(s, ν) and
    ξ_i(s, G_i(s, ν)) on them."""
    batch = data.transitions(sample_rows(data.sizes, (cfg.batch_size,), generator))
    s, a = batch["obs"], batch["act"]
    nu = torch.randn(*s.shape[:2], teachers.vae_latent, generator=generator,
                     device=draw_device(generator)).to(s.device).clamp(-0.5, 0.5)
    with torch.no_grad():
        g = teachers.decode(s, nu)
        return {"s": s, "a": a, "nu": nu, "q": teachers.q(s, a), "g": g, "xi": teachers.actor(s, g)}


def generator_z(mu: torch.Tensor, zq: torch.Tensor, cfg: DistillConfig) -> torch.Tensor:
    """z̄ of Eq. 4–5: the sampled z (K, B, L), or q_φ(c)'s mean (`generator_z: mean`); a stop-gradient
    as in the paper, unless `distill.encoder_from_generator` lets Eq. 4–5 train q_φ too."""
    zbar = mu.unsqueeze(1).expand_as(zq) if cfg.generator_z == "mean" else zq
    return zbar if cfg.encoder_from_generator else zbar.detach()


def imitation_losses(policy: DistilledPolicy, t: dict, zbar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4 (G_D onto G_i) and Eq. 5 (ξ_D onto ξ_i), squared errors summed over action dimensions."""
    loss_g = ((t["g"] - policy.generate(t["s"], t["nu"], zbar)) ** 2).sum(-1).mean()              # Eq. 4
    loss_xi = ((t["xi"] - policy.perturb(t["s"], t["g"], zbar)) ** 2).sum(-1).mean()              # Eq. 5
    return loss_g, loss_xi


def train_step(policy, optimizer, data, teachers, rel, variant, cfg, generator) -> dict[str, torch.Tensor]:
    """Alg. 1 line 7: one Adam step on θ (Q_D, G_D, ξ_D) and φ (q_φ) together. With
    `distill.generator_steps` n > 1, n − 1 more steps of Eq. 4–5 alone follow, each on fresh (s, ν)
    and a fresh z ~ q_φ(c_i) of this step's posterior: they move only G_D and ξ_D (z̄ is a
    stop-gradient, and Adam skips parameters without a gradient). The losses logged are the joint step's."""
    losses, (mu, var) = step_losses(policy, data, teachers, rel, variant, cfg, generator)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()
    for _ in range(cfg.generator_steps - 1):
        t = teacher_targets(data, teachers, cfg, generator)
        zq = sample_z(mu, var, generator).unsqueeze(1).expand(*t["s"].shape[:2], mu.shape[-1])
        optimizer.zero_grad(set_to_none=True)
        sum(imitation_losses(policy, t, generator_z(mu, zq, cfg))).backward()
        optimizer.step()
    return {k: v.detach() for k, v in losses.items()}


@torch.no_grad()
def teacher_q_stats(teachers: Teachers, data: TaskData, rows: int = 10_000) -> tuple[float, float]:
    """Mean and std of Q_i(s, a) over the first `rows` transitions of every task's batch."""
    n = min(int(data.sizes.min()), rows)
    q = teachers.q(data.obs[:, :n], data.act[:, :n])
    return float(q.mean()), max(float(q.std()), 1e-3)


def param_groups(policy: DistilledPolicy, cfg: DistillConfig) -> list[dict]:
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
                 variant: Variant, cfg: DistillConfig):
        self.policy, self.data, self.teachers, self.rel, self.variant, self.cfg = policy, data, teachers, rel, variant, cfg
        policy.set_q_stats(*teacher_q_stats(teachers, data))
        self.opt = torch.optim.Adam(param_groups(policy, cfg), lr=cfg.lr)

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.opt}

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy}

    def step(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return train_step(self.policy, self.opt, self.data, self.teachers, self.rel, self.variant, self.cfg, generator)
