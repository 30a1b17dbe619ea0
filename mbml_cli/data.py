"""The K offline batches as tensors with a leading task dimension, and mini-batch sampling.

`data/<split>/<i>/{obs, act, rew, next_obs, terminal, truncated, info}` in the store become
tensors (K, N, ·) (batches shorter than the longest are padded; sampling never reaches the
padding). `sample` draws (K, B, ·) mini-batches with one gather per field: no loop over tasks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .store import Store

FIELDS = ("obs", "act", "rew", "next_obs", "terminal", "info")


def batch_path(split: str, i: int) -> str:
    return f"data/{split}/{i}"


@dataclass
class TaskData:
    obs: torch.Tensor        # (K, N, obs_dim)
    act: torch.Tensor        # (K, N, act_dim) in [-1, 1]
    rew: torch.Tensor        # (K, N)
    next_obs: torch.Tensor   # (K, N, obs_dim)
    terminal: torch.Tensor   # (K, N) 1.0 where the episode ended in a terminal state (not a time limit)
    info: torch.Tensor       # (K, N, n_features) simulator features for the ground-truth reward
    sizes: torch.Tensor      # (K,) valid transitions per task

    @classmethod
    def load(cls, store: Store, split: str, tasks: list[int], device="cpu") -> "TaskData":
        tables = [store.read_rows(batch_path(split, i)) for i in tasks]
        missing = [i for i, t in zip(tasks, tables) if not t or len(t["rew"]) == 0]
        if missing:
            from .errors import StageError
            raise StageError(f"{store.path}: no {split} data for tasks {missing} (run `mbml collect` first)")
        sizes = [len(t["rew"]) for t in tables]
        n = max(sizes)

        def stack(name):
            cols = [np.asarray(t[name], dtype=np.float32) for t in tables]
            out = np.zeros((len(cols), n) + cols[0].shape[1:], dtype=np.float32)
            for k, c in enumerate(cols):
                out[k, :len(c)] = c
            return torch.from_numpy(out).to(device)

        return cls(**{f: stack(f) for f in FIELDS}, sizes=torch.tensor(sizes, device=device))

    @property
    def n_tasks(self) -> int:
        return self.obs.shape[0]

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A (K, B, ·) mini-batch, uniform within each task's own batch."""
        K = self.n_tasks
        u = torch.rand(K, batch_size, generator=generator).to(self.sizes.device)
        idx = (u * self.sizes[:, None]).long()
        return self.gather(idx)

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows idx (K, B) of every field."""
        out = {}
        for f in FIELDS:
            t = getattr(self, f)
            shape = idx.shape + t.shape[2:]
            out[f] = torch.gather(t, 1, idx.reshape(idx.shape + (1,) * (t.dim() - 2)).expand(shape))
        return out
