"""The training batches and the BCQ teachers trained on them: each batch's episode returns, whether
its collector learned (`batch_progress`), and the teachers' report, which the bcq stage writes into
each task's record `bcq/<i>` (and its final weights' meta): per task a random policy's return, the
final BCQ policy's return, and the fraction of the way from random to the batch's top that BCQ covers.

The teacher bar: a teacher is at the bar at a fraction ≥ 0.8, and a run meets it with ≥ 8 of 10 tasks
there (`BAR`, `bar_tasks`). Its scale's top end is the mean return of the batch's best 10 % of
finished episodes (`fraction_top10`). The earlier top end, the one best episode (`fraction`), made a
teacher's fraction largely a draw among hundreds of noisy episodes; both are kept while reports from
before the change are compared."""
from __future__ import annotations

import numpy as np

from ..core import layout
from ..datasets.batches import episode_returns


def batch_returns(store, task: int) -> list[float]:
    """The returns of the finished episodes of task `task`'s batch, in the order they were collected."""
    rows = store.read_rows(layout.BATCH("train", task), columns=("rew", "terminal", "truncated"))
    return episode_returns(rows["rew"].astype(np.float64), rows["terminal"] | rows["truncated"])


def batch_tops(store, task: int, share: float = 0.1) -> tuple[float, float]:
    """The tops of task `task`'s batch, read once: its best finished episode's return, and the mean
    return of its best `share` of finished episodes (at least one). nan, nan without one."""
    returns = np.sort(batch_returns(store, task))[::-1]
    if not len(returns):
        return float("nan"), float("nan")
    return float(returns[0]), float(returns[:max(1, int(round(share * len(returns))))].mean())


BAR = 0.8                          # a teacher at ≥ BAR of the way from random to the batch's top


def bar_tasks(n_tasks: int) -> int:
    """How many of `n_tasks` teachers must be at the bar for a run to meet it (8 of 10)."""
    return int(np.ceil(BAR * n_tasks - 1e-9))


def fraction(value: float, low: float, high: float) -> float:
    """The fraction of the way from `low` to `high` that `value` covers (nan when they are equal)."""
    return (value - low) / (high - low) if high != low else float("nan")


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
    """Per training task, its teacher's report as its record `bcq/<i>` holds it (`{}` where none), with
    the top-10 % scale (`top10_batch_return`, `fraction_top10`) added where a record from before the
    change lacks it."""
    out = []
    for i in range(n_train):
        rec = dict(store.stage(layout.stage_key("bcq", i)))
        if "bcq_return" in rec and "fraction_top10" not in rec:
            rec["top10_batch_return"] = batch_tops(store, i)[1]
            rec["fraction_top10"] = fraction(rec["bcq_return"], rec["random_return"], rec["top10_batch_return"])
        out.append(rec)
    return out
