"""Fig. 8's measure for one fine-tuned task: from the two curves (MBML init and scratch) the
interactions each needs to reach the threshold and the saving (`algos.finetune`), written as the
task's `layout.FINETUNE_SUMMARY` record."""
from __future__ import annotations

import numpy as np

from ...core import layout
from ...algos import finetune as ft
from ...read.finetune import INITS, curve
from ...recipe.config import FinetuneConfig


def write_summary(store, cfg: FinetuneConfig, skip: int, name: str, param: np.ndarray,
                  mbml_episodes: list[float], bc_loss: float) -> dict:
    """`mbml_episodes`: returns of the MBML policy's own collection episodes (the first `skip` are
    left out of its mean, as in the evaluation protocol)."""
    curves = {}
    for init in INITS:
        rows = curve(store, init, name)
        curves[init] = (rows["interactions"], rows["return"])
    total = cfg.init_steps + cfg.steps
    res = ft.interactions_to_threshold(curves, cfg.threshold, cfg.smooth)
    saved, lower = ft.saving(res["reached"]["mbml"], res["reached"]["scratch"], total)
    skip = min(skip, max(len(mbml_episodes) - 1, 0))
    attrs = {"task": name, "param": [float(v) for v in np.atleast_1d(param)], "fraction": cfg.threshold,
             "smooth": cfg.smooth,
             "threshold": res["threshold"], "best": res["best"], "worst_initial": res["worst_initial"],
             "mbml": res["reached"]["mbml"], "scratch": res["reached"]["scratch"], "saving": saved,
             "saving_lower_bound": lower, "interactions": total, "init_steps": cfg.init_steps,
             "mbml_policy_return": float(np.mean(mbml_episodes[skip:])) if mbml_episodes else None,
             "bc_loss": bc_loss,
             **{f"{init}_first": float(curves[init][1][0]) for init in INITS},
             **{f"{init}_final": float(curves[init][1][-1]) for init in INITS}}
    layout.write_attrs(store, layout.FINETUNE_SUMMARY(name), attrs)
    return attrs
