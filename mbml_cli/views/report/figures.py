"""The paper's figures as PNGs (matplotlib, headless: the Agg canvas, no display), from the dict of
`gather.py` — and, for the embeddings, the first seed's stored posterior means.

- `fig4-comparison.png`, `fig6-ablations.png`: test-task score vs distillation epoch per algorithm,
  mean ± 1 std over seeds (MBML against the baselines; the full model against its ablations);
- `fig5-metagenrl.png`: the same, MetaGenRL against MBML (the paper's Fig. 5), when a store has both;
- `losses.png` (one per comparison of `report["losses"]`): the same, the full model with each
  task-inference loss (`no_relabel`, `mbml_dml`, `mbml_infonce`, `neither`, `mbml (<loss>)`);
- `fig7-reward-error.png`: held-out MSE of reward model i on task j's data, K × K, mean over seeds;
- `fig8-finetune.png`: fine-tuning return vs interactions, MBML init against scratch, mean ± 1 std
  over the fine-tuned tasks (and seeds);
- `embeddings.png`: per algorithm, the posterior means of z on the test tasks (PCA to 2-D), by task.

Each PNG carries a text chunk `mbml` (JSON: the figure, its curves with their colours, its cells)
that the tests check against the pixels.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from ...core import layout
from ...algos.registry import SPECS
from ...core.store import Store
from .tables import ABLATIONS, COMPARISON, METAGENRL

COLOURS = {s.name: s.colour for s in SPECS}                                 # one colour per algorithm, always
# `mbml (<loss>)` (the full model with `distill.inference_loss`) takes its loss's algorithm's colour, dashed
LOSS_COLOURS = {"triplet": COLOURS["mbml"], "hardest": COLOURS["no_relabel"], "dml": COLOURS["mbml_dml"],
                "infonce": COLOURS["mbml_infonce"], "none": COLOURS["neither"]}
INIT_COLOURS = {"mbml": COLOURS["mbml"], "scratch": "#7f7f7f"}
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.grid": True, "grid.alpha": 0.3}
DPI = 150


def _figure(size=(6.4, 4.2)):
    from matplotlib.figure import Figure
    return Figure(figsize=size, layout="constrained")


def _heading(label: str, what: str, fig) -> str:
    """`label: what`, wrapped to the figure's width (a multi-condition label would run off its edges)."""
    return textwrap.fill(f"{label}: {what}", width=max(30, int(8.5 * fig.get_figwidth())), break_on_hyphens=False)


def _save(fig, path: Path, info: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"mbml": json.dumps(info)})
    return path


def learning_curves(c: dict, algos: tuple[str, ...], title: str, path: Path) -> Path | None:
    """Score vs epoch, one line per algorithm with a ±1 std band over seeds."""
    present = [a for a in algos if a in c["algos"] and c["algos"][a]["curve"]]
    if len(present) < 2:
        return None
    import matplotlib
    from matplotlib.ticker import MaxNLocator
    with matplotlib.rc_context(STYLE):
        fig = _figure((6.4 + 1.6 * (len(present) > 3), 4.2))
        ax = fig.subplots()
        curves = []
        for a in present:
            cv = c["algos"][a]["curve"]
            colour = COLOURS.get(a) or LOSS_COLOURS[c["algos"][a]["loss"]]
            x, m, s = (np.asarray(cv[k], dtype=float) for k in ("epoch", "mean", "std"))
            ax.fill_between(x, m - s, m + s, color=colour, alpha=0.15, linewidth=0)
            ax.plot(x, m, color=colour, linewidth=2, marker="o", markersize=4, label=a,
                    linestyle="-" if a in COLOURS else "--")
            curves.append({"label": a, "color": colour, "points": len(x)})
            agents = c["algos"][a].get("agents_curve")
            if agents:                                  # MetaGenRL's agents on their own training tasks
                x, m = (np.asarray(agents[k], dtype=float) for k in ("epoch", "mean"))
                label = f"{a}: training agents, own tasks"
                ax.plot(x, m, color=colour, linewidth=1.5, linestyle=":", marker="s", markersize=3, label=label)
                curves.append({"label": label, "color": colour, "points": len(x)})
        n = len(c["runs"])
        ax.set(xlabel="distillation epoch", ylabel="test-task score (mean return)",
               title=_heading(c["label"], title, fig) + f"\nmean ± 1 std over {n} seed{'s' * (n > 1)}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(present) > 3:                            # many bands: the legend beside the axes, not on them
            ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=True)
        else:
            ax.legend(loc="best", frameon=True)
        return _save(fig, path, {"figure": path.stem, "curves": curves})


def reward_heatmap(c: dict, path: Path) -> Path | None:
    r = c.get("reward_error")
    if not r:
        return None
    import matplotlib
    from matplotlib.colors import LogNorm
    m = np.asarray([[np.nan if v is None else v for v in row] for row in r["matrix"]], dtype=float)
    k = m.shape[0]
    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        fig = _figure((1.2 + 0.55 * k + 1.6, 1.2 + 0.55 * k))
        ax = fig.subplots()
        positive = m[np.isfinite(m) & (m > 0)]
        norm = LogNorm(positive.min(), positive.max()) if positive.size and positive.min() < positive.max() else None
        im = ax.imshow(m, cmap="viridis", norm=norm)
        if k <= 12:
            mid = np.sqrt(positive.min() * positive.max()) if positive.size else 0
            for i in range(k):
                for j in range(k):
                    if np.isfinite(m[i, j]):
                        ax.text(j, i, f"{m[i, j]:.2g}", ha="center", va="center", fontsize=7,
                                color="white" if m[i, j] < mid else "black")
        ax.set(xticks=range(k), yticks=range(k), xlabel="data of task j", ylabel="reward model of task i",
               title=_heading(c["label"], "reward model error", fig)
               + f"\nheld-out MSE, mean over {r['seeds']} seed{'s' * (r['seeds'] > 1)}")
        fig.colorbar(im, ax=ax, label="MSE (log scale)" if norm else "MSE")
        return _save(fig, path, {"figure": path.stem, "cells": [k, k]})


def finetune_curves(c: dict, path: Path) -> Path | None:
    f = c.get("finetune")
    if not f:
        return None
    import matplotlib
    with matplotlib.rc_context(STYLE):
        fig = _figure()
        ax = fig.subplots()
        x = np.asarray(f["interactions"], dtype=float)
        curves = []
        for init, name in (("mbml", "MBML init"), ("scratch", "scratch")):
            m, s = (np.asarray(f[init][k], dtype=float) for k in ("mean", "std"))
            ax.fill_between(x, m - s, m + s, color=INIT_COLOURS[init], alpha=0.15, linewidth=0)
            ax.plot(x, m, color=INIT_COLOURS[init], linewidth=2, label=name)
            curves.append({"label": name, "color": INIT_COLOURS[init], "points": len(x)})
        ax.set(xlabel="environment interactions", ylabel="return (one deterministic episode)",
               title=_heading(c["label"], "fine-tuning SAC on test tasks", fig)
               + f"\nmean ± 1 std over {f['runs']} tasks × seeds")
        ax.legend(loc="best")
        return _save(fig, path, {"figure": path.stem, "curves": curves})


def embeddings(c: dict, path: Path) -> Path | None:
    """Per algorithm, the first seed's posterior means of z on the test tasks (eval's z_points), PCA to 2-D;
    none where that store is gone (a condition joined from an earlier report JSON)."""
    from ...read.embedding import embedding
    if not Path(c["runs"][0]["store"]).exists():
        return None
    store = Store.open(c["runs"][0]["store"])
    found = {}
    for a in c["algos"]:
        where = layout.EVALUATION(a, "test")
        for name in ("z_points", "z_mean"):
            if store.exists(f"{where}/{name}"):
                emb = embedding(store.read_array(f"{where}/{name}"))
                if emb is not None:
                    found[a] = emb
                break
    if not found:
        return None
    import matplotlib
    from matplotlib import colormaps
    cols = min(4, len(found))
    rows = (len(found) + cols - 1) // cols
    cmap = colormaps["tab10" if max(int(e.labels.max()) for e in found.values()) < 10 else "tab20"]
    with matplotlib.rc_context(STYLE):
        fig = _figure((3.2 * cols + 1.4, 3.0 * rows + 0.6))
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        for ax, (a, emb) in zip(axes, found.items()):
            for t in np.unique(emb.labels):
                pts = emb.points[emb.labels == t]
                ax.scatter(pts[:, 0], pts[:, 1], s=14, color=cmap(int(t) % cmap.N), label=f"task {t}", alpha=0.8)
            sep = f", separation {emb.separation:.1f}" if emb.separation is not None else ""
            ax.set(title=f"{a}{sep}", xlabel=f"PC1 ({100 * emb.explained[0]:.0f}%)",
                   ylabel=f"PC2 ({100 * emb.explained[1]:.0f}%)")
        for ax in axes[len(found):]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", title="test task")
        fig.suptitle(_heading(c["label"], f"task embeddings (posterior means of z), seed {c['runs'][0]['seed']}", fig))
        return _save(fig, path, {"figure": path.stem, "panels": list(found)})


def draw(c: dict, directory: Path) -> dict[str, Path]:
    """Every figure of one condition that its data allows; name → path."""
    made = {
        "Fig. 4: MBML against the baselines": learning_curves(c, COMPARISON, "MBML against the baselines",
                                                              directory / "fig4-comparison.png"),
        "Fig. 6: full model against the ablations": learning_curves(c, ABLATIONS, "full model against the ablations",
                                                                    directory / "fig6-ablations.png"),
        "Fig. 5: MetaGenRL against MBML": learning_curves(c, METAGENRL, "return over training, MetaGenRL against MBML",
                                                          directory / "fig5-metagenrl.png"),
        "Fig. 7: reward model error": reward_heatmap(c, directory / "fig7-reward-error.png"),
        "Fig. 8: fine-tuning": finetune_curves(c, directory / "fig8-finetune.png"),
        "task embeddings": embeddings(c, directory / "embeddings.png"),
    }
    return {k: v for k, v in made.items() if v is not None}


def loss_curves(comparison: dict, path: Path) -> Path | None:
    """One comparison of `report["losses"]`: score vs epoch per task-inference loss, ±1 std over seeds."""
    return learning_curves(comparison, tuple(comparison["algos"]), "task-inference losses", path)
