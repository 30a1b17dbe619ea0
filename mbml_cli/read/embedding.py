"""Task embeddings: posterior means (task, …, latent) projected to 2-D by PCA, and how well the
tasks' clusters separate."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class Embedding:
    points: np.ndarray          # (N, 2) PCA projection
    labels: np.ndarray          # (N,) task index of each point
    explained: np.ndarray       # (2,) fraction of variance along each axis
    latent: int
    separation: float | None    # mean distance between task centres / mean spread within a task


def embedding(z_mean: np.ndarray) -> Embedding | None:
    """Project posterior means (task, …, latent) to 2-D by PCA (an SVD of the centred points)."""
    z = np.asarray(z_mean, dtype=float)
    if z.ndim < 2 or z.shape[0] == 0:
        return None
    labels = np.repeat(np.arange(z.shape[0]), int(np.prod(z.shape[1:-1], dtype=int)))
    x = z.reshape(-1, z.shape[-1])
    ok = np.isfinite(x).all(axis=1)
    x, labels = x[ok], labels[ok]
    if len(x) == 0:
        return None
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    k = min(2, vt.shape[0])
    pts = np.zeros((len(x), 2))
    pts[:, :k] = xc @ vt[:k].T
    for i in range(k):              # a deterministic sign: the largest |loading| is positive
        if vt[i, np.argmax(np.abs(vt[i]))] < 0:
            pts[:, i] = -pts[:, i]
    var = s ** 2
    explained = np.zeros(2)
    if var.sum() > 0:
        explained[:k] = var[:k] / var.sum()
    return Embedding(pts, labels, explained, x.shape[1], _separation(x, labels))


def _separation(x: np.ndarray, labels: np.ndarray) -> float | None:
    tasks = np.unique(labels)
    if len(tasks) < 2:
        return None
    centres = np.stack([x[labels == t].mean(axis=0) for t in tasks])
    within = np.mean([np.linalg.norm(x[labels == t] - c, axis=1).mean() for t, c in zip(tasks, centres)])
    d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    between = d[np.triu_indices(len(tasks), 1)].mean()
    return float(between / within) if within > 1e-12 else None
