"""Evaluation results: what `eval/<algo>/` holds, as scores per test task (the dashboard's
`EvalResult`), and the summary the run's table, the sweep's table and `mbml report` print (best and
last evaluation during training, the eval stage's and the probe's scores).

Per algorithm, each part optional: EVAL_HISTORY, one row per evaluation during training: `epoch`,
`score`, `returns` (T, E), `z_mean` (T, L); EVALUATION test, the final evaluation on the test tasks,
`returns` (T, E), `z_mean` (T, L) and `z_points` (T, n, L), the posterior after every episode;
EVALUATION unseen: its attrs `score`; PROBE: attrs `score`. A task's score is the mean return of the
episodes after the first `skip` (attrs `skip`, else the recipe's `eval.skip`, else 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import layout
from .tables import Table, read_table
from .values import fmt_num, num


@dataclass(eq=False)
class EvalResult:
    """What `eval/<algo>/` holds, reduced to scores per test task."""
    algo: str
    scores: np.ndarray | None = None        # (task,): the final (else latest) score per task
    scores_from: str = ""                   # where the scores come from, for the panel
    history: np.ndarray | None = None       # (eval, task) scores of the evaluations in training
    history_x: np.ndarray | None = None     # (eval,) their epochs
    history_from: str = ""
    z_mean: np.ndarray | None = None        # (task, …, latent)
    z_from: str = ""
    unseen: tuple[int, float] | None = None # (tasks, score) of `mbml eval --unseen`
    probe: float | None = None              # the probe's score
    note: str = ""                          # what could not be read


def read_eval(store, algo: str, default_skip: int, cache: dict[str, Table] | None = None) -> EvalResult:
    cache = {} if cache is None else cache
    res = EvalResult(algo)
    notes = []
    # evaluations during training: (T, E) returns and (T, L) z_mean per row
    where = layout.EVAL_HISTORY(algo)
    if store.exists(where) and "n" in store.root[where].attrs:
        hist = read_table(store.root[where], where, cache)
        returns = hist.columns.get("returns")
        if hist.n and returns is not None and returns.ndim == 3:
            skip = int(store.root[where].attrs.get("skip", default_skip))
            res.history = episode_scores(returns.astype(float), -1, skip)
            res.history_x, res.history_from = hist.x, where
            res.scores = res.history[-1]
            res.scores_from = f"{where}, {hist.x_name} {fmt_num(hist.x[-1])}"
        z = hist.columns.get("z_mean")
        if hist.n and z is not None and z.ndim >= 3:
            res.z_mean = z[-1].astype(float)
            res.z_from = f"{where}, {hist.x_name} {fmt_num(hist.x[-1])}"
    # the eval stage on the test tasks
    where = layout.EVALUATION(algo, "test")
    if store.exists(where):
        node = store.root[where]
        names = set(node.array_keys())
        if "returns" in names:
            values = np.asarray(node["returns"][...], dtype=float)
            if values.ndim == 2:
                res.scores = episode_scores(values, 1, int(node.attrs.get("skip", default_skip)))
                res.scores_from = where
            else:
                notes.append(f"{where}/returns: shape {values.shape}, expected (task, episode)")
        name = "z_points" if "z_points" in names else "z_mean" if "z_mean" in names else None
        if name:
            z = np.asarray(node[name][...], dtype=float)
            if z.ndim >= 2 and z.shape[0] > 0:
                res.z_mean, res.z_from = z, where
            else:
                notes.append(f"{where}/{name}: shape {z.shape}, expected (task, [episode,] latent)")
    unseen = layout.read_attrs(store, layout.EVALUATION(algo, "unseen"))
    if num(unseen.get("score")) is not None:
        n_tasks = store.root[layout.EVALUATION(algo, "unseen")]["returns"].shape[0] \
            if store.exists(f"{layout.EVALUATION(algo, 'unseen')}/returns") else 0
        res.unseen = (n_tasks, num(unseen.get("score")))
    res.probe = num(layout.read_attrs(store, layout.PROBE(algo)).get("score"))
    res.note = "; ".join(notes)
    return res


def episode_scores(values: np.ndarray, axis: int, skip: int) -> np.ndarray:
    """Mean over the episodes after the first `skip` (all of them when there are no more)."""
    if values.shape[axis] > skip:
        values = np.take(values, range(skip, values.shape[axis]), axis=axis)
    with np.errstate(all="ignore"):
        return np.nanmean(values, axis=axis)


# ---- the summary: best and last evaluation during training, eval stage, probe ---------------------
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
