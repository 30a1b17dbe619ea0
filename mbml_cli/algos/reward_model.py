"""Reward-model ensembles R̂_i (Sec. 3.2, Fig. 7, docs/design.md §4): per training task an ensemble of
one-hidden-layer MLPs (s, a) → r, all K·M members in one `BatchedMLP` (n = K·M), each member
trained on its own bootstrap mini-batches of its task's batch. For distributions whose tasks
differ in dynamics, a next-state ensemble (s, a) → s' of the same shape.

The ensemble mean relabels another task's transitions (Eq. 7) and the ensemble std says where the
relabelled reward can be trusted (the eligibility mask of `pipeline/relabel.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..recipe.config import RewardConfig
from .data import gather_rows
from .nets import BatchedMLP, adam


class EnsembleModel(nn.Module):
    """K tasks × M members of (s, a) → y, with fixed input/output normalisation buffers.

    `forward(obs, act)` takes (K, B, ·) (each task's members see their task's rows) or
    (K, M, B, ·) (each member its own rows) and returns (K, M, B, out_dim) in raw units.
    With `residual`, the target is y − s (next-state models predict the change of state)."""

    def __init__(self, n_tasks: int, n_members: int, obs_dim: int, act_dim: int, hidden: int,
                 out_dim: int, residual: bool = False):
        super().__init__()
        self.K, self.M, self.out_dim, self.residual = n_tasks, n_members, out_dim, residual
        self.meta = {"n_tasks": n_tasks, "n_members": n_members, "obs_dim": obs_dim, "act_dim": act_dim,
                     "hidden": hidden, "out_dim": out_dim, "residual": residual}
        self.net = BatchedMLP(n_tasks * n_members, obs_dim + act_dim, [hidden], out_dim)
        self.register_buffer("in_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("out_mean", torch.zeros(out_dim))
        self.register_buffer("out_std", torch.ones(out_dim))

    def set_stats(self, in_mean, in_std, out_mean, out_std) -> None:
        for name, value in (("in_mean", in_mean), ("in_std", in_std), ("out_mean", out_mean),
                            ("out_std", out_std)):
            getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32).reshape(getattr(self, name).shape))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = (torch.cat([obs, act], -1) - self.in_mean) / self.in_std
        if x.dim() == 3:                                   # (K, B, d) → every member of task k
            x = x.unsqueeze(1).expand(self.K, self.M, *x.shape[1:])
        B = x.shape[2]
        y = self.net(x.reshape(self.K * self.M, B, -1)).reshape(self.K, self.M, B, self.out_dim)
        y = y * self.out_std + self.out_mean
        if self.residual:
            y = y + (obs.unsqueeze(1) if obs.dim() == 3 else obs)
        return y

    def predict(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ensemble mean and std over members: (K, B, out_dim) each."""
        y = self(obs, act)
        mean = y.mean(1)
        return mean, (y.std(1) if self.M > 1 else torch.zeros_like(mean))


@dataclass
class Split:
    """Per-task train/holdout split of the batch rows: rows perm[k, :n_fit[k]] fit the models,
    rows perm[k, n_fit[k]:sizes[k]] measure their error."""
    perm: torch.Tensor      # (K, N) a permutation of 0..sizes[k]-1 (padded with 0 beyond)
    n_fit: torch.Tensor     # (K,)
    sizes: torch.Tensor     # (K,)


def make_split(sizes: torch.Tensor, holdout: float, generator: torch.Generator) -> Split:
    """Drawn on the generator's device, where the split then lives."""
    device = generator.device
    sizes = sizes.to(device)
    K, N = len(sizes), int(sizes.max())
    perm = torch.zeros(K, N, dtype=torch.long, device=device)
    for k in range(K):      # once, at set-up: not in the training step
        n = int(sizes[k])
        perm[k, :n] = torch.randperm(n, generator=generator, device=device)
    n_fit = torch.clamp((sizes.float() * (1 - holdout)).long(), min=1)
    n_fit = torch.minimum(n_fit, sizes)
    return Split(perm, n_fit, sizes.clone())


def bootstrap_rows(split: Split, n_members: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """(K, M, B) row indices: each member draws its own mini-batch, with replacement, from its
    task's fitting rows (a fresh bootstrap sample every step)."""
    K = len(split.sizes)
    u = torch.rand(K, n_members, batch, generator=generator, device=generator.device)
    pos = (u * split.n_fit.view(K, 1, 1)).long()
    return torch.gather(split.perm, 1, pos.view(K, -1)).view(K, n_members, batch)


def train_ensemble(model: EnsembleModel, obs, act, target, split: Split, cfg: RewardConfig,
                   generator: torch.Generator, on_log=None, log_every: int = 100) -> None:
    """Fit every member of every task at once by MSE (Adam). `target` (K, N, out_dim) raw units.

    Each member's loss is its own mean squared error; their sum is minimised, so a member's
    gradient does not depend on how many members or tasks share the module."""
    opt = adam(model.parameters(), cfg.lr)
    for step in range(1, cfg.steps + 1):
        rows = bootstrap_rows(split, model.M, cfg.batch_size, generator)       # (K, M, B)
        pred = model(gather_rows(obs, rows), gather_rows(act, rows))          # (K, M, B, out)
        y = gather_rows(target, rows)
        per_member = (((pred - y) / model.out_std) ** 2).mean(dim=(2, 3))      # (K, M), normalised units
        loss = per_member.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_log is not None and (step % log_every == 0 or step == cfg.steps):
            on_log(step, float(per_member.detach().mean()))


@torch.no_grad()
def predict_chunked(model: EnsembleModel, obs: torch.Tensor, act: torch.Tensor, chunk: int = 4096):
    """Every task's ensemble on the same rows: obs (B, ·) → mean, std each (K, B, out_dim)."""
    means, stds = [], []
    for start in range(0, obs.shape[0], chunk):
        o = obs[start:start + chunk].unsqueeze(0).expand(model.K, -1, -1)
        a = act[start:start + chunk].unsqueeze(0).expand(model.K, -1, -1)
        m, s = model.predict(o, a)
        means.append(m)
        stds.append(s)
    return torch.cat(means, 1), torch.cat(stds, 1)


def member_zero(model: EnsembleModel, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """The first member alone (the 'without an ensemble' curve of Fig. 7): (K, B, out_dim)."""
    with torch.no_grad():
        return model(obs, act)[:, 0]
