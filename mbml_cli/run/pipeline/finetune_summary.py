"""Fig. 8's measure for one fine-tuned task: from the two curves (MBML init and scratch) the
interactions each needs to reach the threshold and the saving (`algos.finetune`), written as the
task's `layout.FINETUNE_SUMMARY` record."""
from __future__ import annotations

import numpy as np

from ...core import layout
from ...algos import finetune as ft
from ...recipe.config import FinetuneConfig

INITS = ("mbml", "scratch")


def write_summary(store, cfg: FinetuneConfig, skip: int, name: str, param: np.ndarray,
                  mbml_episodes: list[float], bc_loss: float) -> dict:
    """`mbml_episodes`: returns of the MBML policy's own collection episodes (the first `skip` are
    left out of its mean, as in the evaluation protocol)."""
    curves = {}
    for init in INITS:
        rows = store.read_rows(layout.FINETUNE_CURVE(init, name))
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


def summary_rows(store) -> list[dict]:
    """Every fine-tuned task's summary, test tasks in index order, then the others (`unseen`)."""
    names = layout.children(store, layout.parent(layout.FINETUNE_SUMMARY))
    names.sort(key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    return [layout.read_attrs(store, layout.FINETUNE_SUMMARY(k)) for k in names]
