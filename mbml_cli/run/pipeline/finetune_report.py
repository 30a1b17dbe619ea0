"""The fine-tuning table `mbml finetune` and `mbml run` print: per task, the interactions each
initialisation needs to reach the threshold, the saving and the returns (`read/finetune.py`)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ...read.finetune import summary_rows

console = Console()


def fmt_steps(v) -> str:
    return "never" if v is None else f"{v:,}"


def print_summary(store, fraction: float, smooth: int = 1) -> Table:
    """Interactions each init needs to reach the threshold, the saving, and the returns: the MBML
    policy's own (its collection episodes after the first `eval.skip`), at the first evaluation
    (after behaviour cloning / at random initialisation) and at the last."""
    table = Table("task", "param", "threshold", "MBML init", "scratch", "saving", "MBML π", "first m / s",
                  "last m / s", title="fine-tuning: interactions to reach the threshold",
                  caption=f"threshold = worst first return + {fraction:g} × (best return − worst first return), "
                          f"on returns averaged over the last {smooth} evaluations")
    for row in summary_rows(store):
        saving = "—" if row.get("saving") is None else \
            (("≥ " if row.get("saving_lower_bound") else "") + f"{row['saving']:.0f}%")
        scratch = fmt_steps(row["scratch"]) + ("" if row["scratch"] is not None else f" (> {row['interactions']:,})")
        table.add_row(row["task"], ", ".join(f"{v:.2f}" for v in row["param"]), f"{row['threshold']:.1f}",
                      fmt_steps(row["mbml"]), scratch, saving,
                      "—" if row.get("mbml_policy_return") is None else f"{row['mbml_policy_return']:.1f}",
                      f"{row['mbml_first']:.1f} / {row['scratch_first']:.1f}",
                      f"{row['mbml_final']:.1f} / {row['scratch_final']:.1f}")
    (console if console.is_terminal else Console(width=120)).print(table)   # a log file gets the whole table
    return table
