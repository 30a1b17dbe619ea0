"""The table `mbml run` prints at the end: per algorithm, the mean test-task score ± std over tasks
at the best and at the last evaluation during training (the paper reports the best; docs/design.md §4),
the score of the on-demand `eval` stage, and the probe score (the numbers: `read/scores.summarise`)."""
from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from ...read.scores import summarise
from ..context import RunContext


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
