"""A deterministic store shaped like a run caught during distillation, for the dashboard's tests
and screenshots — and to try `mbml dash` without training anything:

    python -m mbml_cli.views.dash.demo runs/demo.zarr && mbml dash runs/demo.zarr

It writes what the stages write (the layout in the docstrings of mbml_cli/read/, as pipeline/collect.py,
bcq.py, reward.py, distill.py and evaluate.py do): stage records with per-task records, metrics
tables with per-task (rows, K) columns (`critic_loss`, `return`), `eval/mbml/history` (a row table
of evaluations during training) and `eval/mbml/test`, task parameters. The run is caught with
collect…eval/mbml done and distill/neither at 50%; with `NOW` as the clock, the header's elapsed
time and ETA are fixed.
"""
from __future__ import annotations

import sys

import numpy as np

from ...core import layout
from ...recipe import graph
from ...recipe.graph import DEFAULT
from ...recipe.load import from_dict
from ...run.evaluate import ProtocolResult
from ...core.store import Store

T0 = 1_700_000_000.0            # the run's start (unix s)
NOW = T0 + 240.0                # the clock for a fixed header: distill/neither half done, ETA 20s


def recipe(n_train: int, n_test: int, latent: int, name: str) -> dict:
    return {"name": name, "seed": 0, "store": "", "device": "cpu", "threads": 0,
            "stages": list(DEFAULT),
            "algos": ["mbml", "neither"],
            "env": {"name": "point_goal", "horizon": 20, "n_train": n_train, "n_test": n_test},
            "collect": {"steps": 200, "random_steps": 100, "log_every": 50},
            "bcq": {"iterations": 60, "eval_every": 30},
            "reward": {"ensemble_size": 3, "steps": 50},
            "distill": {"epochs": 2, "steps_per_epoch": 5, "latent_dim": latent, "eval_every": 1},
            "eval": {"episodes": 3, "skip": 2}}


def _arc(n: int, rng) -> np.ndarray:
    angle = np.sort(rng.uniform(0.0, 2 * np.pi / 3, size=n))
    return np.stack([np.cos(angle), np.sin(angle)], axis=-1)


def build(path, n_train: int = 3, n_test: int = 2, rows: int = 40, latent: int = 4, seed: int = 0,
          name: str = "smoke") -> Store:
    """Write the demo run into a new store at `path` and return it."""
    rng = np.random.default_rng(seed)
    store = Store.create(path, {"recipe": recipe(n_train, n_test, latent, name),
                                "lock": {"revision": "0123456789abcdef0123456789abcdef01234567"}})
    param = "goal (x, y) on a 120° arc of radius 1"
    store.write_array(layout.TASKS("train"), _arc(n_train, rng), {"param": param})
    store.write_array(layout.TASKS("test"), _arc(n_test, rng), {"param": param})

    def noise(*shape, scale=1.0):
        return scale * rng.standard_normal(shape)

    def per_task(name, curve, scale):       # one (rows, K) column: the curve, shifted per task, noisy
        return {name: np.stack([curve * (1 + 0.15 * i) + noise(len(curve), scale=scale) for i in range(n_train)], 1)}

    # collect: one row every log_every steps
    t = np.linspace(0.0, 1.0, rows)
    final = -2.0 - 2.0 * np.arange(n_train) / max(1, n_train - 1)
    returns = np.stack([-16.0 + (16.0 + final[i]) * (1 - np.exp(-4 * t)) + noise(rows, scale=0.6)
                        for i in range(n_train)], 1)
    tasks = list(range(n_train))
    store.append_rows(layout.METRICS("collect", "train"), {
        "step": (np.arange(rows) + 1) * 50.0, "env_steps_per_s": 900 + noise(rows, scale=30), "return": returns,
        **per_task("critic_loss", 40.0 * np.exp(-6 * t) + 0.3, 0.05),
        **per_task("actor_loss", -(8.0 * t + 2.0), 0.3),
        **per_task("alpha", 0.05 + 0.95 * np.exp(-4 * t), 0.0)}, tasks)
    # bcq: losses per task, and an evaluation every eval_every iterations
    b = rows * 3 // 4
    tb = np.linspace(0.0, 1.0, b)
    store.append_rows(layout.METRICS("bcq", "train"), {
        "iteration": (np.arange(b) + 1) * 2.0,
        **per_task("vae_loss", 2.0 * np.exp(-3 * tb) + 0.05, 0.01),
        **per_task("critic_loss", 5.0 * np.exp(-2 * tb) + 0.2, 0.03),
        **per_task("actor_loss", -(3.0 * tb + 1.0), 0.1)}, tasks)
    evals = np.stack([final[i] - 1.5 + np.arange(2.0) + noise(2, scale=0.2) for i in range(n_train)], 1)
    store.append_rows(layout.METRICS("bcq", "eval"), {"iteration": np.array([30.0, 60.0]), "return": evals}, tasks)
    store.append_rows(layout.METRICS("reward", "train"), {"step": (np.arange(10) + 1) * 5.0,
                                               "loss": 0.5 * np.exp(-np.arange(10) / 2.5) + 0.002})

    # distill: one row per epoch; mbml finished, neither half-way
    def distill_rows(n: int) -> dict:
        td = np.linspace(0.0, 1.0, n)
        return {"step": (np.arange(n) + 1) * 5.0, "epoch": np.arange(n) + 1.0,
                "loss_q": 30.0 * np.exp(-5 * td) + 0.4 + np.abs(noise(n, scale=0.05)),
                "loss_g": 0.8 * np.exp(-3 * td) + 0.05, "loss_xi": 0.3 * np.exp(-3 * td) + 0.02,
                "loss_triplet": np.maximum(0.0, 2.0 - 2.2 * td) + np.abs(noise(n, scale=0.02)),
                "kl": 0.5 + 2.0 * td, "valid_pairs": np.full(n, float(n_train * (n_train - 1))),
                "wall": 0.5 + np.abs(noise(n, scale=0.05))}

    store.append_rows(layout.METRICS("distill", "mbml"), distill_rows(rows // 2))
    store.append_rows(layout.METRICS("distill", "neither"), distill_rows(rows // 4))
    # evaluations on the test tasks during distill (EVAL_HISTORY) and at the end (EVALUATION test)
    episodes, skip = 3, 2
    best = -3.0 - np.arange(n_test) * 0.5
    centres = 3.0 * noise(n_test, latent)
    epochs = np.array([5.0, 10.0, 20.0])
    hist_returns = np.stack([best[:, None] - 6.0 / (k + 1) + noise(n_test, episodes, scale=0.3)
                             for k in range(len(epochs))])
    hist_returns[:, :, 0] -= 4.0                    # the prior's episode is the worst
    hist_z = np.stack([centres * (k + 1) / len(epochs) + noise(n_test, latent, scale=0.3)
                       for k in range(len(epochs))])
    store.append_rows(layout.EVAL_HISTORY("mbml"), {
        "epoch": epochs, "score": hist_returns[:, :, skip:].mean(axis=(1, 2)),
        "returns": hist_returns.astype(np.float32), "z_mean": hist_z.astype(np.float32)})
    final_returns = hist_returns[-1] + noise(n_test, episodes, scale=0.2)
    final = ProtocolResult(final_returns.astype(np.float32), (centres + noise(n_test, latent, scale=0.2)), None, skip)
    layout.write_evaluation(store, "mbml", "test", final, layout.read_tasks(store, "test"))

    done = [("collect", 0, 60), ("bcq", 60, 100), ("reward", 100, 110), ("relabel", 110, 112),
            (layout.stage_key("distill", "mbml"), 112, 190), (layout.stage_key("eval", "mbml"), 190, 200)]
    r = from_dict(store.recipe)
    for key, start, end in done:                    # today's digests: the records read done, not stale
        digest = graph.digest(r, key)
        store.set_stage(key, status="done", hash=digest, started=T0 + start, ended=T0 + end,
                        updated=T0 + end, progress=1.0, message="", run=f"demo-{key}",
                        inputs={need: f"demo-{need}" for need in graph.needs(r, key)})
        if key in ("collect", "bcq"):
            for i in range(n_train):
                store.set_stage(layout.stage_key(key, i), status="done", hash=digest, started=T0 + start, ended=T0 + end)
    store.set_stage(layout.stage_key("distill", "neither"), status="running", hash=graph.digest(r, "distill/neither"),
                    started=T0 + 200, ended=None,
                    updated=T0 + 230, progress=0.5, message="")
    return store


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mbml_cli.views.dash.demo STORE_PATH")
    build(sys.argv[1], n_train=10, n_test=8, rows=120, latent=20, name="demo")
    print(f"wrote {sys.argv[1]}; view it with: mbml dash {sys.argv[1]}")
