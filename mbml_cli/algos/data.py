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


BCQ_FIELDS = ("obs", "act", "rew", "next_obs", "terminal")     # what a teacher's update reads


@dataclass
class RelabelledPool:
    """For each teacher i, the other tasks' transitions relabelled with R̂_i where Eq. 7 allows
    (`bcq.relabelled`): rows (K, M) are flat indices j·N + n into every task's batch, eligible ones
    first; counts (K,) how many are eligible. rew (K, K·N) is R̂_i(s_{j,n}, a_{j,n}), next_obs
    (K, K·N, obs_dim) the predicted s′ where dynamics differ (None: the stored s′). A task with no
    eligible row draws its own batch, with its true rewards."""
    rows: torch.Tensor
    counts: torch.Tensor
    rew: torch.Tensor
    next_obs: torch.Tensor | None = None

    @classmethod
    def build(cls, everyone: TaskData, teachers: list[int], mean: torch.Tensor, mask: torch.Tensor,
              next_obs: torch.Tensor | None = None) -> "RelabelledPool":
        """From the relabel stage's mean and mask (K, K, N) (and next_obs (K, K, N, d)), for `teachers`."""
        K, N = everyone.n_tasks, everyone.obs.shape[1]
        t = torch.as_tensor(teachers, device=mean.device)
        own = torch.arange(N, device=mean.device)[None, :] < everyone.sizes[t][:, None]            # (k, N)
        flat_mask = mask[t].reshape(len(t), K * N).clone()
        counts = flat_mask.sum(1)
        none = counts == 0
        if none.any():                           # no eligible row: the task's own rows (true rewards below)
            at = (t[none] * N)[:, None] + torch.arange(N, device=mean.device)[None, :]
            flat_mask[none] = flat_mask[none].scatter(1, at, own[none])
            counts = flat_mask.sum(1)
        rows = torch.sort((~flat_mask).to(torch.uint8), dim=1, stable=True).indices[:, :int(counts.max())]
        rew = mean[t].clone()
        rew[torch.arange(len(t)), t] = everyone.rew[t]             # a task's own rows keep their true reward
        nxt = None if next_obs is None else next_obs[t].reshape(len(t), K * N, -1)
        return cls(rows, counts, rew.reshape(len(t), K * N), nxt)

    def sample(self, everyone: TaskData, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """n rows per teacher (k, n, ·), uniform over its eligible relabelled transitions."""
        flat = torch.gather(self.rows, 1, sample_rows(self.counts, (n,), generator))              # (k, n)
        K, N = everyone.n_tasks, everyone.obs.shape[1]
        out = {f: getattr(everyone, f).reshape(K * N, *getattr(everyone, f).shape[2:])[flat]
               for f in ("obs", "act", "next_obs", "terminal")}
        out["rew"] = torch.gather(self.rew, 1, flat)
        if self.next_obs is not None:
            out["next_obs"] = gather_rows(self.next_obs, flat)
        return out


@dataclass
class MixedBatches:
    """Teacher mini-batches from two sources: round(share·B) rows of the relabelled pool, the rest of the
    task's own batch. A fixed share keeps a task's own data, the only rows with its true reward and
    dynamics, at (1 − share) of every update however many other tasks' rows are eligible (uniform
    pooling would leave it 1/K). `sample` is what `TaskData.sample` is to a teacher's update."""
    own: TaskData
    everyone: TaskData
    pool: RelabelledPool
    share: float
    generator_own: bool = False      # G (BCQ's VAE) learns from the own rows only: `generator_rows` in the batch

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        n_rel = int(round(self.share * batch_size))
        own = self.own.sample(batch_size - n_rel, generator)
        rel = self.pool.sample(self.everyone, n_rel, generator)
        out = {f: torch.cat([own[f], rel[f]], 1) for f in BCQ_FIELDS}
        return {**out, "generator_rows": batch_size - n_rel} if self.generator_own else out
