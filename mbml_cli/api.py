"""Python API: open a run, load a trained policy, infer a task posterior from numpy transitions,
act given observations and a task embedding z. The CLI's eval and probe stages are built on it.

    import mbml_cli.api as mbml
    run = mbml.open_run("runs/point_goal-s0.zarr")
    policy = run.policy("mbml")                       # or mbml.load_policy(run, "mbml", which="best")
    post = policy.infer(obs, act, rew, next_obs)      # (N, ·) arrays → Posterior(mean (L,), var (L,))
    z = policy.sample(post)                           # or post.mean
    action = policy.act(obs_now, z)                   # (obs_dim,) → (act_dim,); batches work too

Everything takes and returns numpy; a leading batch dimension (several tasks at once) is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import envs
from .core import layout
from .algos.mbml import DistilledPolicy
from .algos.registry import ALGOS
from .recipe.config import Recipe
from .errors import StageError
from .algos.nets import device_of
from .read.records import StageRecord, stage_records
from .read.scores import summarise
from .read.tables import read_table
from .recipe.load import from_dict, to_dict
from .core.store import Store
from .core.guard import loading

WHICH = ("final", "best")


@dataclass
class Posterior:
    """A diagonal Gaussian over task embeddings: mean and variance, (..., latent_dim)."""
    mean: np.ndarray
    var: np.ndarray


class Policy:
    """A distilled multi-task policy: the encoder q_φ and the BCQ-style actor (Q_D, G_D, ξ_D)."""

    def __init__(self, module: DistilledPolicy, algo: str = "", which: str = "", meta: dict | None = None):
        self.module = module.eval()
        self.algo, self.which, self.meta = algo, which, dict(meta or {})
        self.device = next(module.parameters()).device

    @property
    def latent_dim(self) -> int:
        return self.module.latent_dim

    def _t(self, x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device)

    def prior(self, n: int | None = None) -> Posterior:
        shape = (self.latent_dim,) if n is None else (n, self.latent_dim)
        return Posterior(np.zeros(shape, np.float32), np.ones(shape, np.float32))

    @torch.no_grad()
    def infer(self, obs, act, rew, next_obs, mask=None) -> Posterior:
        """q_φ(c) for a context of transitions: obs (..., N, obs_dim), act (..., N, act_dim), rew (..., N),
        next_obs (..., N, obs_dim), optional mask (..., N) (0 = padding). An empty context gives the prior."""
        m = None if mask is None else self._t(mask)
        mu, var = self.module.encoder(self._t(obs), self._t(act), self._t(rew), self._t(next_obs), m)
        return Posterior(mu.cpu().numpy(), var.cpu().numpy())

    def sample(self, posterior: Posterior, generator: torch.Generator | None = None) -> np.ndarray:
        """z ~ posterior (the evaluation protocol samples z rather than taking the mean)."""
        eps = torch.randn(np.shape(posterior.mean), generator=generator).numpy()
        return (posterior.mean + np.sqrt(posterior.var) * eps).astype(np.float32)

    @torch.no_grad()
    def act(self, obs, z, generator: torch.Generator | None = None) -> np.ndarray:
        """Actions in [−1, 1] for observations (..., obs_dim) and embeddings z (..., latent_dim)."""
        o, zz = self._t(obs), self._t(z)
        lead = o.shape[:-1]
        z2 = torch.broadcast_to(zz, lead + (zz.shape[-1],)).reshape(-1, zz.shape[-1])
        a = self.module.act(o.reshape(-1, o.shape[-1]), z2, generator)
        return a.reshape(lead + (a.shape[-1],)).cpu().numpy()


class Run:
    """An experiment store with its recipe: tasks, data, metrics, trained policies."""

    def __init__(self, store: Store):
        self.store = store
        self.recipe: Recipe = from_dict(store.recipe, source=f"{store.path} (stored recipe)")

    @property
    def path(self) -> str:
        return self.store.path

    @property
    def dist(self) -> envs.TaskDistribution:
        return envs.of(self.recipe.env)

    def tasks(self, split: str = "test") -> np.ndarray:
        return layout.read_tasks(self.store, split)

    def policy(self, algo: str = "mbml", which: str = "final", device: str = "cpu") -> Policy:
        return load_policy(self, algo, which, device)

    def metrics(self, stage: str, name: str) -> dict[str, np.ndarray]:
        """A metric table's columns; a per-task metric (one 2-D column in the store) as a column per
        task, `<metric>_<task>` (`read/tables.py`)."""
        return read_table(self.store.root[layout.METRICS(stage, name)], f"{stage}/{name}", {}).columns

    def stages(self) -> list[StageRecord]:
        """Every stage record with its status as `mbml info` shows it (`read/records.py`), judged against
        this run's recipe (`stale`: done, but its inputs differ from `self.recipe`'s)."""
        return stage_records(self.store, to_dict(self.recipe))

    def scores(self, algos: list[str] | None = None) -> list[dict]:
        """Per algorithm, the test-task scores `mbml run` prints at the end (`read/scores.summarise`)."""
        return summarise(self.store, list(self.recipe.algos if algos is None else algos), self.recipe.eval.skip)

    def history(self, algo: str = "mbml") -> dict[str, np.ndarray]:
        """Evaluations during training: epoch, score, returns (T, episodes), z_mean (T, latent)."""
        return self.store.read_rows(layout.EVAL_HISTORY(algo))

    def make_env(self, task, horizon: int | None = None):
        return self.dist.make_env(np.asarray(task), horizon or self.recipe.env.horizon or None)


def open_run(path: str | Path) -> Run:
    return Run(Store.open(str(path), mode="r"))


def policy_class(meta: dict):
    """The module class a stored policy was saved from: a baseline's meta names its algorithm
    (`meta["kind"]`); MBML and its ablations have none and share MBML's."""
    return ALGOS[meta.get("kind") or "mbml"].policy_class()


def load_policy(run: Run | str | Path, algo: str = "mbml", which: str = "final", device: str = "cpu") -> Policy:
    """The distilled policy `algo` of a run: `which` = "final" (last epoch) or "best" (best evaluation)."""
    run = run if isinstance(run, Run) else open_run(run)
    if which not in WHICH:
        raise StageError(f"which: {which!r} is not one of {', '.join(WHICH)}")
    path = layout.DISTILL(algo, which)
    if not run.store.has_weights(path):
        raise StageError(f"{run.path}: no trained {algo!r} policy (run `mbml distill {run.path} --algo {algo}`)")
    tensors, meta = run.store.load_weights(path)
    with loading(run.path, path, meta):         # weights and meta from a store made elsewhere: one line if they don't fit
        module = policy_class(meta).from_meta(meta)
        state = {k: torch.as_tensor(v) for k, v in tensors.items()}
        defaults = module.state_dict()
        for name in ("q_mean", "q_std"):     # stores from before Q_D had an output scale: scale 1, shift 0
            if name in defaults and name not in state:
                state[name] = defaults[name]
        module.load_state_dict(state)
    return Policy(module.to(device_of(device)), algo, which, meta)
