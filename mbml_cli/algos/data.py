"""The K offline batches as tensors with a leading task dimension, and the row sampling and
gathering every algorithm shares (pure torch: `loaders.load_batches` reads them from a store).

Batches shorter than the longest are padded; sampling never reaches the padding. `gather_rows`
picks rows of every task with one `torch.gather`: no loop over tasks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.layout import BATCH_COLUMNS

FIELDS = tuple(c for c in BATCH_COLUMNS if c != "truncated")    # what training reads of a batch
CONTEXT_FIELDS = ("obs", "act", "rew", "next_obs")                # a transition in a task's context


def gather_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t (K, N, ·) and row indices idx (K, ...) → t[k, idx[k, ...]] of shape (K, ..., ·)."""
    K = t.shape[0]
    flat = idx.reshape(K, -1)
    out = torch.gather(t, 1, flat.reshape(flat.shape + (1,) * (t.dim() - 2)).expand(flat.shape + t.shape[2:]))
    return out.reshape(idx.shape + t.shape[2:])


def draw_device(generator: torch.Generator | None) -> torch.device | None:
    """Where a generator draws: random numbers are made on the device that uses them (a generator
    on the GPU for GPU runs), never drawn on the host and copied every step."""
    return None if generator is None else generator.device


def sample_rows(sizes: torch.Tensor, shape: tuple, generator: torch.Generator) -> torch.Tensor:
    """Row indices (K, *shape), uniform within each task's batch (`sizes` (K,) valid rows)."""
    K = len(sizes)
    u = torch.rand((K,) + tuple(shape), generator=generator, device=draw_device(generator)).to(sizes.device)
    return (u * sizes.view((K,) + (1,) * len(shape))).long()


@dataclass
class TaskData:
    obs: torch.Tensor        # (K, N, obs_dim)
    act: torch.Tensor        # (K, N, act_dim) in [-1, 1]
    rew: torch.Tensor        # (K, N)
    next_obs: torch.Tensor   # (K, N, obs_dim)
    terminal: torch.Tensor   # (K, N) 1.0 where the episode ended in a terminal state (not a time limit)
    info: torch.Tensor       # (K, N, n_features) simulator features for the ground-truth reward
    sizes: torch.Tensor      # (K,) valid transitions per task

    @property
    def n_tasks(self) -> int:
        return self.obs.shape[0]

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A (K, B, ·) mini-batch, uniform within each task's own batch."""
        return self.gather(sample_rows(self.sizes, (batch_size,), generator))

    def gather(self, idx: torch.Tensor, fields: tuple[str, ...] = FIELDS) -> dict[str, torch.Tensor]:
        """Rows idx (K, ...) of the named fields."""
        return {f: gather_rows(getattr(self, f), idx) for f in fields}

    def stats(self) -> tuple[torch.Tensor, ...]:
        """Mean and std of the states, and of the rewards, over every task's rows (stds at least 1e-3):
        the fixed input normalisation of every distilled policy."""
        valid = torch.arange(self.obs.shape[1], device=self.obs.device)[None, :] < self.sizes[:, None]
        obs, rew = self.obs[valid], self.rew[valid]
        return obs.mean(0), obs.std(0).clamp_min(1e-3), rew.mean(), rew.std().clamp_min(1e-3)

    def transitions(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows idx (K, ...) of (s, a, r, s′): a context or a mini-batch."""
        return self.gather(idx, CONTEXT_FIELDS)
