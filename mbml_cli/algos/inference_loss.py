"""Task-inference losses: the term of Eq. 10 that trains the encoder q_φ to tell tasks apart.

A loss is built from MBML's config (`LOSSES[name](cfg)`) and says what it reads:
  - `n_contexts`: own contexts drawn per task (1, or Eq. 11's n);
  - `relabelled`: whether it reads c_{j→i}, task j's transitions with R̂_i's reward (Eq. 7);
  - `key`: the name its term is logged under (and added to Eq. 10 from).
Called on the step's `Contexts`, it returns the logged values, its term among them.

The losses are the relabelled triplet (Eq. 8–9: MBML, gt_relabel), the hardest-pair triplet (Eq. 11:
no_relabel) and none (no_triplet, neither). A new loss is a module with such a class and one line
in LOSSES; a variant in algos/registry.py names it.

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


LOSSES: dict[str, type] = {
    "relabelled_triplet": RelabelledTriplet,
    "hardest_triplet": HardestTriplet,
    "none": NoLoss,
}
