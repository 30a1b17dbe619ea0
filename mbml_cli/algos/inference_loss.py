"""Task-inference losses: the term of Eq. 10 that trains the encoder q_φ to tell tasks apart.

A loss is built from MBML's config (`LOSSES[name](cfg)`) and says what it reads:
  - `n_contexts`: own contexts drawn per task (1, or Eq. 11's n);
  - `relabelled`: whether it reads c_{j→i}, task j's transitions with R̂_i's reward (Eq. 7);
  - `key`: the name its term is logged under (and added to Eq. 10 from).
Called on the step's `Contexts`, it returns the logged values, its term among them.

The losses are the relabelled triplet (Eq. 8–9: MBML, gt_relabel), the hardest-pair triplet (Eq. 11:
no_relabel), none (no_triplet, neither), and two from later offline meta-RL papers: FOCAL's
distance-metric loss (`dml`, Li, Yang & Luo, ICLR 2021) and CORRO's InfoNCE (`infonce`, Yuan & Lu,
ICML 2022). A new loss is a class and one line in LOSSES; a variant in algos/registry.py names it,
and `distill.inference_loss` picks the full model's (registry.INFERENCE_LOSSES).

Shapes: K tasks, n contexts per task, T transitions per context, L = latent_dim.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import torch

from .encoder import kl_diag, product_of_gaussians


@dataclass
class Contexts:
    """What a task-inference loss may read."""
    encoder: torch.nn.Module           # q_φ, to encode the relabelled transitions
    own_mu: torch.Tensor               # (K, n, T, L) q_φ's per-transition factors of task i's own contexts
    own_var: torch.Tensor
    pairs: dict | None = None          # c_{j→i}: (K, K, T, ·) inputs, rows i, columns j (Eq. 7)
    eligible: torch.Tensor | None = None   # (K, K, T) bool: R̂_i is certain enough on that transition

    @cached_property
    def first(self) -> tuple[torch.Tensor, torch.Tensor]:
        """c_i: the factors of each task's first context, (K, T, L) each; made once, the loss and the
        rest of the step share them."""
        return self.own_mu[:, 0], self.own_var[:, 0]


class TaskInferenceLoss(Protocol):
    key: str
    n_contexts: int
    relabelled: bool

    def __call__(self, c: Contexts) -> dict[str, torch.Tensor]: ...


# ---- Eq. 8–9: the relabelled triplet --------------------------------------------------------------
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


class RelabelledTriplet:
    """Alg. 1 line 4: the anchor q(c_{j→i}) must be nearer q(c_i), task i's own context of the same
    size, than q(c_j), the same (s, a) with task j's true reward."""
    key, n_contexts, relabelled = "loss_triplet", 1, True

    def __init__(self, cfg):
        self.margin = cfg.margin

    def __call__(self, c: Contexts) -> dict[str, torch.Tensor]:
        K, _, T, L = c.own_mu.shape
        own_mu, own_var = c.first                                            # c_i
        m = c.eligible.float()
        valid = c.eligible.any(-1)                                           # (K, K); diagonal is never eligible
        anchor = product_of_gaussians(*c.encoder.factors(**c.pairs), m)      # q(c_{j→i})
        positive = product_of_gaussians(own_mu.unsqueeze(1).expand(K, K, T, L),      # as many of
                                        own_var.unsqueeze(1).expand(K, K, T, L), m)   # task i's own
        negative = product_of_gaussians(own_mu.unsqueeze(0).expand(K, K, T, L),      # the same (s, a) with
                                        own_var.unsqueeze(0).expand(K, K, T, L), m)   # task j's true reward
        return {"loss_triplet": triplet_loss(anchor, positive, negative, valid, self.margin),   # Eq. 8–9
                "valid_pairs": valid.float().sum() / max(K * (K - 1), 1)}


# ---- Eq. 11: the hardest-pair triplet -------------------------------------------------------------
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


class HardestTriplet:
    """Without relabelled transitions: n contexts per task, and the hardest pairs among them (Eq. 11)."""
    key, relabelled = "loss_triplet", False

    def __init__(self, cfg):
        self.margin, self.n_contexts = cfg.margin, cfg.n_contexts

    def __call__(self, c: Contexts) -> dict[str, torch.Tensor]:
        post_mu, post_var = product_of_gaussians(c.own_mu, c.own_var)           # (K, n, L)
        return {"loss_triplet": hardest_triplet_loss(post_mu, post_var, self.margin),   # Eq. 11
                "valid_pairs": torch.zeros((), device=c.own_mu.device)}


# ---- none ---------------------------------------------------------------------------------------------
class NoLoss:
    """The ablations without a triplet: q_φ learns from Eq. 3 alone. Logs the same columns, at 0."""
    key, n_contexts, relabelled = "loss_triplet", 1, False

    def __init__(self, cfg):
        pass

    def __call__(self, c: Contexts) -> dict[str, torch.Tensor]:
        zero = torch.zeros((), device=c.own_mu.device)
        return {"loss_triplet": zero, "valid_pairs": zero}


# ---- FOCAL: the distance-metric loss ---------------------------------------------------------------
def dml_loss(mu: torch.Tensor, beta: float, power: float, eps: float) -> torch.Tensor:
    """FOCAL's distance-metric loss L_dml (Li, Yang & Luo, ICLR 2021, "negative-power distance metric") on posterior means
    mu (K, n, L), n contexts per task, over every pair of contexts:

        same task:       ‖z_a − z_b‖²                    (pulled together)
        different tasks: β / (‖z_a − z_b‖ⁿ + ε)          (pushed apart, negative power)

    each averaged over its own pairs and the two means added, as the authors' code does
    (rlkit/torch/sac/sac.py, `z_loss`), so that the weight of each side does not depend on K or n.
    Only distances enter: it is unchanged by translating or rotating every z."""
    K, n, L = mu.shape
    z = mu.reshape(K * n, L)
    sq = ((z.unsqueeze(0) - z.unsqueeze(1)) ** 2).sum(-1)                      # ‖z_a − z_b‖², (Kn, Kn)
    task = torch.arange(K, device=mu.device).repeat_interleave(n)
    same = task.unsqueeze(0) == task.unsqueeze(1)
    upper = torch.ones_like(same).triu(1)                                       # each unordered pair once
    pos, neg = same & upper, ~same & upper
    pull = sq[pos].mean() if pos.any() else sq.new_zeros(())                   # 1{y_a = y_b} ‖z_a − z_b‖²
    push = (beta / (sq[neg].clamp_min(1e-12) ** (power / 2) + eps)).mean()     # 1{y_a ≠ y_b} β / (‖z_a − z_b‖ⁿ + ε)
    return pull + push


class DistanceMetric:
    """`dml`: FOCAL's loss on the posterior means of n own contexts per task (`distill.n_contexts`):
    contexts of one task are positives, contexts of two tasks negatives. It reads no relabelled
    transition (FOCAL has none); `dml_beta`, `dml_power`, `dml_epsilon` are its β, n, ε."""
    key, relabelled = "loss_dml", False

    def __init__(self, cfg):
        self.n_contexts = cfg.n_contexts
        self.beta, self.power, self.eps = cfg.dml_beta, cfg.dml_power, cfg.dml_epsilon

    def __call__(self, c: Contexts) -> dict[str, torch.Tensor]:
        post_mu, _ = product_of_gaussians(c.own_mu, c.own_var)                 # (K, n, L)
        return {"loss_dml": dml_loss(post_mu, self.beta, self.power, self.eps),
                "valid_pairs": torch.zeros((), device=c.own_mu.device)}


# ---- CORRO: InfoNCE on single transitions ------------------------------------------------------------
def infonce_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, eligible: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """CORRO's InfoNCE objective (Yuan & Lu, ICML 2022, "contrastive learning objective"; authors' code
    train_contrastive.py, `contrastive_loss`), per anchor x with positive x′ and negatives x̃_m:

        −log  exp S(z, z′) / (exp S(z, z′) + Σ_m exp S(z, z̃_m)),     S(u, v) = cos(u, v) / τ

    (CORRO normalises its transition embeddings, `--normalize-z`, and divides dot products by τ:
    the cosine over τ.) anchor, positive (A, L); negatives (A, M, L) with `eligible` (A, M): an
    ineligible negative leaves the sum. Anchors with no eligible negative leave the mean (their
    term would be 0 and tell the encoder nothing); with none at all the loss is 0."""
    unit = lambda v: torch.nn.functional.normalize(v, dim=-1)
    a, p, n = unit(anchor), unit(positive), unit(negatives)
    pos = (a * p).sum(-1, keepdim=True) / temperature                                 # S(z, z′), (A, 1)
    neg = (a.unsqueeze(-2) * n).sum(-1) / temperature                                 # S(z, z̃_m), (A, M)
    neg = neg.masked_fill(~eligible, float("-inf"))
    per_anchor = torch.logsumexp(torch.cat([pos, neg], -1), -1) - pos.squeeze(-1)     # −log softmax of the positive
    used = eligible.any(-1)
    per_anchor = torch.where(used, per_anchor, torch.zeros_like(per_anchor))
    return per_anchor.sum() / used.sum().clamp_min(1)


class InfoNCE:
    """`infonce`: CORRO's InfoNCE on the per-transition embeddings of q_φ (the means μ_n of its
    per-transition Gaussian factors: CORRO's transition encoder E_θ1 is this MLP). For every task j
    and transition t of its context c_j:
      - anchor    x = c_j[t] = (s, a, r, s′), task j's own transition;
      - positive  x′ = c_j[t + 1 mod T], another transition of the same task j (CORRO: a second
                  transition of the same task);
      - negatives x̃_i = c_{j→i}[t] for every i ≠ j: the same (s, a) with R̂_i's reward (and the
                  next-state ensemble's s′ where tasks differ in dynamics) — MBML's relabelling
                  (Eq. 7) in the place of CORRO's learned generative model; a negative is used only
                  where R̂_i is certain enough (Eq. 7's eligibility mask, as the triplet uses it).
    Because x and x̃_i share (s, a), only the reward (and s′) can tell them apart.
    `infonce_temperature` is τ."""
    key, n_contexts, relabelled = "loss_infonce", 1, True

    def __init__(self, cfg):
        self.temperature = cfg.infonce_temperature

    def __call__(self, c: Contexts) -> dict[str, torch.Tensor]:
        K, _, T, L = c.own_mu.shape
        own_mu, _ = c.first                                                    # (K, T, L): rows j
        rel_mu, _ = c.encoder.factors(**c.pairs)                               # (K, K, T, L): [i, j, t] = c_{j→i}[t]
        anchor = own_mu.reshape(K * T, L)                                      # x = c_j[t]
        positive = own_mu.roll(-1, dims=1).reshape(K * T, L)                   # x′ = c_j[t + 1]
        negatives = rel_mu.permute(1, 2, 0, 3).reshape(K * T, K, L)            # x̃_i = c_{j→i}[t], i = 0..K−1
        eligible = c.eligible.permute(1, 2, 0).reshape(K * T, K)               # (never on i = j)
        valid = c.eligible.any(-1)
        return {"loss_infonce": infonce_loss(anchor, positive, negatives, eligible, self.temperature),
                "valid_pairs": valid.float().sum() / max(K * (K - 1), 1)}


LOSSES: dict[str, type] = {
    "relabelled_triplet": RelabelledTriplet,
    "hardest_triplet": HardestTriplet,
    "none": NoLoss,
    "dml": DistanceMetric,
    "infonce": InfoNCE,
}
