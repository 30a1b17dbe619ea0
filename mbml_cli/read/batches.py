"""The training batches and the BCQ teachers trained on them: each batch's episode returns, whether
its collector learned (`batch_progress`), and the teachers' report (per task a random policy's
return, the best episode return in the batch, the final BCQ policy's return and the fraction of the
way from the first to the second that BCQ covers), which the bcq stage writes into each task's
record `bcq/<i>` (and its final weights' meta)."""
from __future__ import annotations

import numpy as np

from ..core import layout
from ..datasets.batches import episode_returns


def batch_returns(store, task: int) -> list[float]:
    """The returns of the finished episodes of task `task`'s batch, in the order they were collected."""
    rows = store.read_rows(layout.BATCH("train", task), columns=("rew", "terminal", "truncated"))
    return episode_returns(rows["rew"].astype(np.float64), rows["terminal"] | rows["truncated"])


def best_batch_return(store, task: int) -> float:
    """The best finished episode's return in task `task`'s batch."""
    returns = batch_returns(store, task)
    return max(returns) if returns else float("nan")


def batch_progress(store, task: int, share: float = 0.1) -> dict:
    """Did the batch's collector learn? The mean return of the first and of the last `share` of the
    finished episodes of task `task`'s batch (at least two each), the standard error of their
    difference, and `clear`: the last above the first by more than twice that error."""
    returns = np.asarray(batch_returns(store, task))
    m = max(2, int(round(share * len(returns))))
    if len(returns) < 2 * m:
        return {"first": None, "last": None, "se": None, "episodes": len(returns), "clear": False}
    first, last = returns[:m], returns[-m:]
    se = float(np.sqrt(first.var(ddof=1) / m + last.var(ddof=1) / m))
    return {"first": float(first.mean()), "last": float(last.mean()), "se": se, "episodes": len(returns),
            "clear": bool(last.mean() - first.mean() > 2 * se)}


def teacher_report(store, n_train: int) -> list[dict]:
    """Per training task, its teacher's report as its record `bcq/<i>` holds it (`{}` where none)."""
    return [store.stage(layout.stage_key("bcq", i)) for i in range(n_train)]
