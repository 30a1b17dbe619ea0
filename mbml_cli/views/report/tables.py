"""Markdown tables of a report, from the dict of `gather.py` (and nothing else: every number shown is
in the JSON)."""
from __future__ import annotations

from ...algos.registry import SPECS, in_group

COMPARISON = in_group("mbml", "baseline")          # the paper's Fig. 4: MBML against the baselines
ABLATIONS = in_group("mbml", "ablation")           # Fig. 6: the full model against its ablations
METAGENRL = ("mbml", "metagenrl")                   # Fig. 5: MetaGenRL against MBML on the same stores
DESCRIBED = {s.name: f"{s.name} ({s.doc})" for s in SPECS if s.group in ("ablation", "loss")}


def pm(s: dict | None, digits: int = 2) -> str:
    """mean ± std, or — ."""
    if not s or s.get("mean") is None:
        return "—"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def ci(s: dict | None, digits: int = 2) -> str:
    if not s or not s.get("ci95"):
        return "—"
    lo, hi = s["ci95"]
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def num(v, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def seeds(c: dict) -> str:
    return ", ".join(str(r["seed"]) for r in c["runs"])


def scores_table(c: dict, algos: list[str] | None = None, described: bool = False) -> str:
    """Per algorithm, best and last test-task score (mean ± std over seeds, bootstrap 95% CI) and probe."""
    names = [a for a in (algos or c["algos"]) if a in c["algos"]]
    ranked = sorted(names, key=lambda a: -(c["algos"][a]["best"]["mean"] if c["algos"][a]["best"]["mean"] is not None
                                           else float("inf")))
    rows = [[DESCRIBED.get(a, a) if described else a, pm(c["algos"][a]["best"]), ci(c["algos"][a]["best"]),
             pm(c["algos"][a]["last"]), ci(c["algos"][a]["last"]), pm(c["algos"][a]["probe"])] for a in ranked]
    return md(["algo", "best", "95% CI", "last", "95% CI", "probe"], rows)


def losses_table(comparison: dict) -> str:
    """The task-inference losses side by side (`gather.loss_comparisons`): per entry its loss, best and
    last test-task score and probe, mean ± std over seeds with the bootstrap 95% CI."""
    a = comparison["algos"]
    ranked = sorted(a, key=lambda n: -(a[n]["best"]["mean"] if a[n]["best"]["mean"] is not None else float("inf")))
    rows = [[n, a[n]["loss"], pm(a[n]["best"]), ci(a[n]["best"]), pm(a[n]["last"]), ci(a[n]["last"]),
             pm(a[n]["probe"]), ci(a[n]["probe"])] for n in ranked]
    return md(["algo", "loss", "best", "95% CI", "last", "95% CI", "probe", "95% CI"], rows)


def per_seed_table(c: dict) -> str:
    rows = []
    for a, s in c["algos"].items():
        best, probe = s["best"]["per_seed"], s["probe"]["per_seed"]
        rows.append([a] + [f"{num(b)}; {num(p)}" for b, p in zip(best, probe)])
    return md(["algo (best; probe)"] + [f"seed {r['seed']}" for r in c["runs"]], rows)


def teachers_table(c: dict) -> str | None:
    """Per seed: random, the batch's best episode and best-10 % mean, BCQ, the fraction of the way from
    random to each, and the tasks at the bar (≥ 0.8) on each scale; the bar is the best-10 % one."""
    t = c.get("teachers")
    if not t:
        return None
    fields = ("random_return", "best_batch_return", "top10_batch_return", "bcq_return", "fraction", "fraction_top10")
    rows = []
    for i, r in enumerate(c["runs"]):
        span = _known(t["fraction_top10_per_task"][i])
        rows.append([f"seed {r['seed']}", *(num(t[f]["per_seed"][i]) for f in fields),
                     f"{num(min(span))}–{num(max(span))}" if span else "—",
                     f"{t['at_bar'][i]} / {num(t['at_bar_top10'][i], 0)} of {len(t['fraction_per_task'][i])}"])
    met = t["bar_met_top10"]
    rows.append(["mean ± std", *(pm(t[f]) for f in fields), "",
                 "—" if met is None else "bar met" if met else f"bar not met (needs {t['bar_tasks'][0]} on every seed)"])
    return md(["teachers", "random", "best episode", "best 10 % mean", "BCQ", "fraction (best)",
               "fraction (best 10 %)", "fraction (best 10 %), tasks min–max", "tasks ≥ 0.8 (best / best 10 %)"], rows)


def batches_table(c: dict) -> str | None:
    """Per training task and seed: mean return of the batch's first → last 10 % of episodes, and
    whether it rose clearly (by more than twice the standard error of the difference)."""
    b = c.get("batches")
    if not b:
        return None
    def cell(r):
        return "—" if not r or r["first"] is None else f"{num(r['first'])} → {num(r['last'])} {'✓' if r['clear'] else '✗'}"
    rows = [[f"task {k}"] + [cell(seed[k]) if k < len(seed) else "—" for seed in b["per_task"]]
            for k in range(max(b["tasks"]))]
    rows.append(["risen clearly"] + [f"{num(v, 0)} / {n}" for v, n in zip(b["clear"]["per_seed"], b["tasks"])])
    return md(["batch: first → last 10 % of episodes"] + [f"seed {r['seed']}" for r in c["runs"]], rows)


def _known(values: list) -> list[float]:
    return [v for v in values if v is not None]


def reward_table(c: dict) -> str | None:
    r = c.get("reward_error")
    if not r:
        return None
    return md(["reward models: held-out MSE", "own task", "other tasks"],
              [["mean ± std over seeds", pm(r["own"], 4), pm(r["other"], 4)]])


def finetune_table(c: dict) -> str | None:
    f = c.get("finetune")
    if not f:
        return None
    x = f["interactions"]
    picks = sorted({0, len(x) // 4, len(x) // 2, 3 * len(x) // 4, len(x) - 1})
    rows = [[init] + [f"{f[init]['mean'][i]:.1f} ± {f[init]['std'][i]:.1f}" for i in picks] for init in ("mbml", "scratch")]
    return md(["fine-tuning return (mean ± std over tasks)"] + [f"{x[i]:,}" for i in picks], rows) + \
        f"\n\nSaving in interactions to reach the threshold (MBML init vs scratch): {pm(f['saving'], 1)} % " \
        f"over {f['saving']['n']} tasks."


def wall_table(c: dict) -> str:
    rows = [[key] + [num(v, 0) for v in s["per_seed"]] + [pm(s, 0)] for key, s in c["wall"].items()]
    return md(["stage wall time (s)"] + [f"seed {r['seed']}" for r in c["runs"]] + ["mean ± std"], rows)


SUMMARY = COMPARISON + ("neither",)            # the summary table's columns


def ordering(c: dict) -> str:
    """Does the paper's ordering hold: MBML's best score (mean over seeds) above each of the others'?
    "within noise" when the margin over the nearest is less than the larger of the two stds."""
    best = {a: c["algos"][a]["best"] for a in SUMMARY if a in c["algos"] and c["algos"][a]["best"]["mean"] is not None}
    if "mbml" not in best or len(best) < 2:
        return "—"
    ahead = [a for a in best if a != "mbml" and best[a]["mean"] >= best["mbml"]["mean"]]
    if ahead:
        return "no: " + ", ".join(ahead) + " ≥ mbml"
    near = max((a for a in best if a != "mbml"), key=lambda a: best[a]["mean"])
    margin = best["mbml"]["mean"] - best[near]["mean"]
    return "yes" if margin >= max(best["mbml"]["std"], best[near]["std"]) else f"yes, within noise of {near}"


def bar_cell(c: dict) -> str:
    """Tasks at the teacher bar per seed on the best-10 % scale, e.g. "8 / 6 / 9 of 10" (— for a report
    from before that scale)."""
    t = c.get("teachers") or {}
    if t.get("bar_met_top10") is None:
        return "—"
    n = len(t["fraction_top10_per_task"][0])
    return " / ".join(map(str, t["at_bar_top10"])) + f" of {n}" + (" ✓" if t["bar_met_top10"] else "")


def summary_table(reports: list[dict]) -> str:
    """One row per condition of every report: best and last (mean ± std over seeds) of MBML, the baselines
    and `neither` (those some report has), MBML's probe, and whether the paper's ordering holds."""
    conditions = [c for r in reports for c in r["conditions"]]
    shown = [a for a in SUMMARY if any(a in c["algos"] for c in conditions)]     # a column only where some report has it
    header = ["distribution", "seeds"] + [f"{a} best / last" for a in shown] + \
        ["mbml probe", "teachers ≥ 0.8 (best 10 %), per seed", "paper's ordering"]
    rows = []
    for r in reports:
        for c in r["conditions"]:
            cells = [f"{pm(c['algos'][a]['best'])} / {pm(c['algos'][a]['last'])}" if a in c["algos"] else "—"
                     for a in shown]
            probe = pm(c["algos"]["mbml"]["probe"]) if "mbml" in c["algos"] else "—"
            rows.append([c["label"], str(len(c["runs"]))] + cells + [probe, bar_cell(c), ordering(c)])
    return md(header, rows)


def markdown(report: dict, figures: dict[str, dict[str, str]] | None = None,
             loss_figures: dict[str, str] | None = None) -> str:
    """The whole report: per condition, every table, and its figures (name → relative path); then the
    task-inference losses side by side, a table and a figure (relative path) per comparison."""
    out = ["# mbml report", "",
           "Scores: test-task score = mean over the test tasks of the mean return of the episodes after "
           "`eval.skip` (PEARL protocol); *best* = the best evaluation during training, *last* = the final "
           "one; mean ± std (ddof 0) over seeds and a percentile-bootstrap 95% CI of the mean over seeds. "
           "Probe = fraction of relabelled contexts nearer their reward's task (`mbml probe`)."]
    for c in report["conditions"]:
        out += ["", f"## {c['label']} (seeds {seeds(c)})", "", scores_table(c)]
        for title, algos in (("MBML against the baselines (the paper's Fig. 4)", COMPARISON),
                             ("Full model against the ablations (the paper's Fig. 6)", ABLATIONS),
                             ("MetaGenRL against MBML (the paper's Fig. 5)", METAGENRL)):
            if sum(a in c["algos"] and c["algos"][a]["best"]["mean"] is not None for a in algos) > 1:
                out += ["", f"### {title}", "", scores_table(c, list(algos), described=True)]
        out += ["", "### Per seed", "", per_seed_table(c)]
        for title, table in (("Batches: did the collector learn? Mean return of the first → last 10 % of each "
                              "task's episodes (✓: risen by more than twice its standard error)", batches_table(c)),
                             ("BCQ teachers: fraction of the way from a random policy to the batch's best episode "
                              "and to the mean of its best 10 % of episodes (the teacher bar's scale; mean over "
                              "training tasks)", teachers_table(c)),
                             ("Reward models", reward_table(c)), ("Fine-tuning (the paper's Fig. 8)", finetune_table(c))):
            if table:
                out += ["", f"### {title}", "", table]
        out += ["", "### Stage wall times", "", wall_table(c)]
        for name, path in (figures or {}).get(c["label"], {}).items():
            out += ["", f"![{name}]({path})"]
    if report.get("losses"):
        out += ["", "## Task-inference losses side by side", "",
                "The full model with each task-inference loss on the same batches, teachers and relabelled "
                "transitions: `mbml` (relabelled triplet, Eq. 8-9, or `mbml (<loss>)` for `distill.inference_loss`), "
                "`no_relabel` (hardest triplet, Eq. 11), `mbml_dml` (FOCAL), `mbml_infonce` (CORRO) and `neither` "
                "(no loss: the floor)."]
        for comp in report["losses"]:
            out += ["", f"### {comp['label']} (seeds {seeds(comp)})", "", losses_table(comp)]
            if (loss_figures or {}).get(comp["label"]):
                out += ["", f"![task-inference losses]({loss_figures[comp['label']]})"]
    return "\n".join(out) + "\n"
