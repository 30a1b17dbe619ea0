"""The table `mbml run` prints at the end: per algorithm, the mean test-task score ± std over tasks
at the best and at the last evaluation during training (the paper reports the best; docs/design.md §4),
the score of the on-demand `eval` stage, and the probe score."""
from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from ...core import layout
from ..context import RunContext


def history_scores(store, algo: str, skip: int):
    """(epochs, per-task scores (rows, T)) of the algorithm's `layout.EVAL_HISTORY`, or None."""
    hist = store.read_rows(layout.EVAL_HISTORY(algo))
    if not hist or len(hist["epoch"]) == 0:
        return None
    return hist["epoch"].astype(int), hist["returns"][:, :, skip:].mean(-1)


def summarise(store, algos: list[str], skip: int) -> list[dict]:
    """One dict per algo: best/last epoch, mean and std over tasks, eval and probe scores (NaN if absent)."""
    out = []
    for algo in algos:
        row = {"algo": algo, "best_epoch": -1, "best": np.nan, "best_std": np.nan, "last_epoch": -1,
               "last": np.nan, "last_std": np.nan, "eval": np.nan, "probe": np.nan}
        h = history_scores(store, algo, skip)
        if h is not None:
            epochs, per_task = h
            means = per_task.mean(1)
            b = int(np.argmax(means))
            row.update(best_epoch=int(epochs[b]), best=float(means[b]), best_std=float(per_task[b].std()),
                       last_epoch=int(epochs[-1]), last=float(means[-1]), last_std=float(per_task[-1].std()))
        row["eval"] = float(layout.read_attrs(store, layout.EVALUATION(algo, "test")).get("score", np.nan))
        row["probe"] = float(layout.read_attrs(store, layout.PROBE(algo)).get("score", np.nan))
        out.append(row)
    return out


def fmt(mean: float, std: float) -> str:
    return "—" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def summary(ctx: RunContext, console: Console | None = None) -> None:
    console = console or Console()
    rows = summarise(ctx.store, ctx.recipe.algos, ctx.recipe.eval.skip)
    table = Table("algo", "best @epoch", "last @epoch", "eval stage", "probe",
                  title=f"{ctx.recipe.name}: test-task score, mean ± std over tasks")
    for row in rows:
        table.add_row(row["algo"], f"{fmt(row['best'], row['best_std'])} @{row['best_epoch']}",
                      f"{fmt(row['last'], row['last_std'])} @{row['last_epoch']}",
                      "—" if np.isnan(row["eval"]) else f"{row['eval']:.2f}",
                      "—" if np.isnan(row["probe"]) else f"{100 * row['probe']:.0f}%")
    console.print(table)
