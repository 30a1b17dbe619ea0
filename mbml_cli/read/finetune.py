"""Fine-tuning (Fig. 8): per fine-tuned task the curves of both initialisations (`FINETUNE_CURVE`:
interactions, return) and the summary the finetune stage wrote (`FINETUNE_SUMMARY`: interactions
each init needs to reach the threshold, the saving, the returns)."""
from __future__ import annotations

import numpy as np

from ..core import layout

INITS = ("mbml", "scratch")


def summary_rows(store) -> list[dict]:
    """Every fine-tuned task's summary, test tasks in index order, then the others (`unseen`)."""
    names = layout.children(store, layout.parent(layout.FINETUNE_SUMMARY))
    names.sort(key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    return [layout.read_attrs(store, layout.FINETUNE_SUMMARY(k)) for k in names]


def curve(store, init: str, task) -> dict[str, np.ndarray]:
    """The fine-tuning curve of one init on one task: columns `interactions`, `return` ({} if none)."""
    return store.read_rows(layout.FINETUNE_CURVE(init, task))
