"""`mbml report`: stores → the paper's tables and figures, and the same numbers as JSON.

`gather.py` gathers the numbers (read through `mbml_cli.read`), `tables.py` writes Markdown from them and
`figures.py` the PNGs; the JSON is what `gather` returns (schema: README, "Report JSON").
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .gather import gather
from .tables import markdown, summary_table


def make_report(inputs: list[str], out: Path, json_path: Path | None = None) -> tuple[dict, dict[str, Path], str]:
    """Write `out/report.md`, the figures and the JSON (`json_path`, default `out/report.json`).
    Returns (the report, figure paths by name, the Markdown)."""
    from .figures import draw
    report = gather(inputs)
    out.mkdir(parents=True, exist_ok=True)
    figures, links = {}, {}
    for c in report["conditions"]:
        where = out if len(report["conditions"]) == 1 else out / re.sub(r"[^A-Za-z0-9._=-]+", "_", c["label"])[:100]
        made = draw(c, where)
        figures.update({f"{c['label']}: {k}": p for k, p in made.items()})
        links[c["label"]] = {k: str(p.relative_to(out)) for k, p in made.items()}
    from .figures import loss_curves
    loss_links = {}
    for i, comp in enumerate(report["losses"]):
        made = loss_curves(comp, out / ("losses.png" if len(report["losses"]) == 1 else f"losses-{i + 1}.png"))
        if made is not None:
            figures[f"{comp['label']}: task-inference losses"] = made
            loss_links[comp["label"]] = str(made.relative_to(out))
    text = markdown(report, links, loss_links)
    (out / "report.md").write_text(text)
    json_path = json_path or out / "report.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    return report, figures, text


def summarise_reports(paths: list[str]) -> str:
    """The summary table (`tables.summary_table`) of report JSONs written by `mbml report`."""
    from .gather import read_report
    return summary_table([read_report(p) for p in paths])
