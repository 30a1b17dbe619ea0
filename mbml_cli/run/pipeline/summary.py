"""The table `mbml run` prints at the end: per algorithm, the mean test-task score ± std over tasks
at the best and at the last evaluation during training (the paper reports the best; docs/design.md §4),
the score of the on-demand `eval` stage, and the probe score (the numbers: `read/scores.summarise`).
Without an environment there is no test-task score: the table shows eval's offline check instead."""
from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from ... import envs
from ...core import layout
from ...read.scores import summarise
from ..context import RunContext


def fmt(mean: float, std: float) -> str:
    return "—" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def summary(ctx: RunContext, console: Console | None = None) -> None:
    console = console or Console()
    if not envs.has_environment(ctx.dist):
        return console.print(offline_table(ctx))
    rows = summarise(ctx.store, ctx.recipe.algos, ctx.recipe.eval.skip)
    table = Table("algo", "best @epoch", "last @epoch", "eval stage", "probe",
                  title=f"{ctx.recipe.name}: test-task score, mean ± std over tasks")
    for row in rows:
        table.add_row(row["algo"], f"{fmt(row['best'], row['best_std'])} @{row['best_epoch']}",
                      f"{fmt(row['last'], row['last_std'])} @{row['last_epoch']}",
                      "—" if np.isnan(row["eval"]) else f"{row['eval']:.2f}",
                      "—" if np.isnan(row["probe"]) else f"{100 * row['probe']:.0f}%")
    console.print(table)


def offline_table(ctx: RunContext) -> Table:
    """Per algorithm, eval's offline check on held-out episodes (`pipeline/offline.py`)."""
    table = Table("algo", "TD error", "action error", "transitions",
                  title=f"{ctx.recipe.name}: offline check (no environment), mean over training tasks")
    for algo in ctx.recipe.algos:
        a = layout.read_attrs(ctx.store, layout.OFFLINE_CHECK(algo))
        where = "—" if not a else f"{a['rows']} {'in-sample' if a['in_sample'] else 'held-out'}"
        table.add_row(algo, *(f"{a[k]:.4g}" if k in a else "—" for k in ("td_error", "action_error")), where)
    return table
