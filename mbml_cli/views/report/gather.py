"""The numbers of a report, read from stores (through `mbml_cli.read` and `layout.py`), as one JSON-able dict.

Stores are grouped into *conditions*: the runs of one recipe that differ only in their seed (a
sweep's grid combination, or stores given by hand whose recipes agree apart from seed, store,
threads and device). Per condition and algorithm, every statistic is over the seeds: `per_seed`
(in the order of `runs`), `mean`, `std` (population, ddof 0) and `ci95` (a percentile bootstrap of the
mean over seeds, `BOOTSTRAP` resamples from a fixed seed: the same stores give the same interval).
A value a store lacks is null. The schema is documented in the README ("Report JSON").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core import layout
from ...read import finetune as ft
from ...read.batches import BAR, bar_tasks, batch_progress, teacher_report
from ...read.scores import history_scores, summarise
from ...read.values import num
from ...recipe import graph
from ...recipe.config import ALGOS
from ...algos.registry import ALGOS as SPECS, LOSS_NAMES, in_group
from ...errors import RecipeError, StoreError
from ...recipe.load import from_dict, to_dict
from ...core.store import Store

SCHEMA = 1
BOOTSTRAP = 10_000
RUNTIME_KEYS = ("seed", "store", "threads", "device")     # differ between runs of one condition


# ---- statistics ------------------------------------------------------------------------------------
def number(v) -> float | None:
    """A finite float, else None (JSON has no NaN)."""
    return num(v)


def stat(values: list) -> dict:
    """per_seed, mean, std (ddof 0) and the 95% bootstrap interval of the mean, over the known values."""
    per_seed = [number(v) for v in values]
    known = np.array([v for v in per_seed if v is not None], dtype=np.float64)
    if known.size == 0:
        return {"per_seed": per_seed, "n": 0, "mean": None, "std": None, "ci95": None}
    rng = np.random.default_rng(0)
    means = known[rng.integers(0, known.size, (BOOTSTRAP, known.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"per_seed": per_seed, "n": int(known.size), "mean": float(known.mean()), "std": float(known.std()),
            "ci95": [float(lo), float(hi)]}


def band(rows: list[np.ndarray]) -> dict:
    """Mean and std (ddof 0) of equally long rows, point by point."""
    a = np.asarray(rows, dtype=np.float64)
    return {"mean": [number(v) for v in a.mean(axis=0)], "std": [number(v) for v in a.std(axis=0)]}


# ---- finding and grouping stores -------------------------------------------------------------------
def find_stores(inputs: list[str]) -> list[tuple[str, dict]]:
    """(store path, grid values) of every input: a store, a sweep's directory (its runs, in its
    order) or a directory of stores."""
    from ...run.sweep import SWEEP_FILE, from_file
    out = []
    for item in inputs:
        path = Path(item)
        if (path / SWEEP_FILE).is_file():
            sweep = from_file(path / SWEEP_FILE)
            for run in sweep.runs(path):
                if Path(run.store).exists():
                    out.append((run.store, run.values))
        elif path.is_dir() and not (path / "zarr.json").exists():
            stores = sorted(p for p in path.glob("*.zarr") if p.is_dir())
            if not stores:
                raise StoreError(f"{item}: no stores in this directory (give stores, or a sweep's directory)")
            out += [(str(p), {}) for p in stores]
        else:
            Store.open(item)                           # not a store: one line naming it
            out.append((item, {}))
    return out


def normalised(recipe: dict) -> dict:
    """A store's recipe as this version resolves it, keys added since then at their defaults: a store
    made before a key existed groups with one made after it, when the value is the default."""
    try:
        return to_dict(from_dict(recipe))
    except RecipeError:
        return recipe


def flat(d: dict, prefix: str = "") -> dict:
    """Nested sections as dotted keys: {"distill": {"lr": 1}} → {"distill.lr": 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def condition_key(recipe: dict, resolved: bool = False) -> str:
    """What runs of one condition share: the recipe (normalised unless `resolved`) less RUNTIME_KEYS."""
    import json
    recipe = recipe if resolved else normalised(recipe)
    return json.dumps({k: v for k, v in recipe.items() if k not in RUNTIME_KEYS}, sort_keys=True, default=str)


def group(found: list[tuple[str, dict]]) -> list[dict]:
    """Conditions in the order first seen: {recipe (normalised), values, stores}."""
    groups: dict[str, dict] = {}
    for path, values in found:
        store = Store.open(path)
        recipe = normalised(store.recipe)
        g = groups.setdefault(condition_key(recipe, resolved=True), {"recipe": recipe, "values": values, "stores": []})
        g["stores"].append(store)
    for g in groups.values():
        g["stores"].sort(key=lambda s: int(s.recipe.get("seed", 0)))
    return list(groups.values())


def label(condition: dict, others: list[dict]) -> str:
    """The recipe name, with the grid values (or the recipe keys, as section.key) that tell it from
    the other conditions: at most three of them."""
    name = str(condition["recipe"].get("name", "run"))
    if condition["values"]:
        return name + " " + ", ".join(f"{k}={v}" for k, v in condition["values"].items())
    if len(others) > 1:
        mine = flat(condition["recipe"])
        differing = sorted({k for o in others for k, v in flat(o["recipe"]).items()
                            if k.split(".")[0] not in RUNTIME_KEYS and v != mine.get(k)} - {"name"})
        if differing:
            return name + " " + ", ".join(f"{k}={mine.get(k)}" for k in differing[:3])
    return name


# ---- per condition -----------------------------------------------------------------------------------
def algos_of(stores: list[Store]) -> list[str]:
    found = []
    for s in stores:
        for a in list(s.recipe.get("algos") or []) + layout.children(s, layout.parent(layout.EVALUATION)):
            if a in ALGOS and a not in found:
                found.append(a)
    return found


def skip_of(store: Store) -> int:
    return int((store.recipe.get("eval") or {}).get("skip", 2))


def aligned(found: list[tuple[np.ndarray, np.ndarray]]) -> dict | None:
    """Per-seed (epochs, values) on the epochs every seed has: per seed and mean ± std over seeds."""
    if not found:
        return None
    common = sorted(set.intersection(*(set(e.tolist()) for e, _ in found)))
    if not common:
        return None
    rows = [np.array([dict(zip(e.tolist(), values))[c] for c in common]) for e, values in found]
    return {"epoch": [int(c) for c in common], **band(rows), "per_seed": [[number(v) for v in r] for r in rows]}


def curve(stores: list[Store], algo: str) -> dict | None:
    """Test-task score per evaluation during training: the epochs every seed evaluated, per seed and
    mean ± std over seeds."""
    found = [history_scores(s, algo, skip_of(s)) for s in stores]
    return aligned([(e, per_task.mean(axis=1)) for e, per_task in (h for h in found if h is not None)])


def agents_curve(stores: list[Store], algo: str) -> dict | None:
    """Per-task agents (MetaGenRL): the mean over the training agents of each one's return on its own
    task, per evaluation (`layout.AGENT_HISTORY`), as `curve`."""
    rows = [s.read_rows(layout.AGENT_HISTORY(algo)) for s in stores if s.exists(layout.AGENT_HISTORY(algo))]
    return aligned([(r["epoch"], r["returns"].mean(axis=1)) for r in rows if len(r["epoch"])])


def loss_of(recipe: dict, algo: str) -> str | None:
    """The task-inference loss `algo` trains q_φ with (registry.LOSS_NAMES): the full model's is the
    recipe's `distill.inference_loss`; None for a baseline."""
    variant = SPECS[algo].variant
    if variant is None:
        return None
    if variant.loss_from_recipe:
        return (recipe.get("distill") or {}).get("inference_loss", "triplet")
    return LOSS_NAMES.get(variant.loss, variant.loss)


def algorithm(stores: list[Store], algo: str) -> dict:
    rows = [summarise(s, [algo], skip_of(s))[0] for s in stores]
    out = {"loss": loss_of(normalised(stores[0].recipe), algo)}
    out.update({k: stat([r[k] for r in rows]) for k in ("best", "last", "eval", "probe")})
    out["best_epoch"] = [r["best_epoch"] if r["best_epoch"] >= 0 else None for r in rows]
    out["last_epoch"] = [r["last_epoch"] if r["last_epoch"] >= 0 else None for r in rows]
    out["curve"] = curve(stores, algo)
    agents = agents_curve(stores, algo)
    if agents:
        out["agents_curve"] = agents
    return out


def n_train(store: Store) -> int:
    return int((store.recipe.get("env") or {}).get("n_train") or len(layout.read_tasks(store, "train")))


def teachers(stores: list[Store]) -> dict | None:
    """BCQ teachers: per seed the mean over training tasks of random, best-in-batch, best-10 % and BCQ
    returns and of the fractions of the way from random to each top that BCQ covers, and how many
    tasks are at the teacher bar on each scale (`read/batches.py`)."""
    fields = ("fraction", "fraction_top10", "random_return", "best_batch_return", "top10_batch_return", "bcq_return")
    per_seed = {f: [] for f in fields}
    per_task = {"fraction": [], "fraction_top10": []}
    for s in stores:
        recs = teacher_report(s, n_train(s))
        for f in per_task:
            per_task[f].append([number(r.get(f)) for r in recs])
        for f in fields:
            vals = [number(r.get(f)) for r in recs]
            vals = [v for v in vals if v is not None]
            per_seed[f].append(float(np.mean(vals)) if vals else None)
    if all(v is None for v in per_seed["fraction"]):
        return None
    at_bar = {f"at_bar{suffix}": [sum(v is not None and v >= BAR for v in tasks) for tasks in per_task[f]]
              for f, suffix in (("fraction", ""), ("fraction_top10", "_top10"))}
    need = [bar_tasks(len(tasks)) for tasks in per_task["fraction"]]
    return {**{f: stat(per_seed[f]) for f in fields}, "fraction_per_task": per_task["fraction"],
            "fraction_top10_per_task": per_task["fraction_top10"], **at_bar, "bar_tasks": need,
            "bar_met_top10": all(a >= n for a, n in zip(at_bar["at_bar_top10"], need))}


def batches(stores: list[Store]) -> dict | None:
    """Did each batch's collector learn (`read/batches.batch_progress`)? Per seed the mean over training
    tasks of the first and last 10 % of episodes' mean return, how many tasks rose clearly, and per task."""
    per_task, first, last, clear = [], [], [], []
    for s in stores:
        n = n_train(s)
        rows = [batch_progress(s, i) if s.exists(layout.BATCH("train", i)) else None for i in range(n)]
        known = [r for r in rows if r and r["first"] is not None]
        per_task.append(rows)
        first.append(float(np.mean([r["first"] for r in known])) if known else None)
        last.append(float(np.mean([r["last"] for r in known])) if known else None)
        clear.append(sum(r["clear"] for r in known) if known else None)
    if all(v is None for v in first):
        return None
    return {"first": stat(first), "last": stat(last), "clear": stat(clear), "tasks": [len(r) for r in per_task],
            "per_task": per_task}


def reward_error(stores: list[Store]) -> dict | None:
    """Held-out MSE of reward model i on task j's data (K, K): per seed the mean of the diagonal (own
    task) and off it (other tasks), and the matrix averaged over seeds."""
    mats = [s.read_array(layout.REWARD_ERROR("error")) for s in stores if s.exists(layout.REWARD_ERROR("error"))]
    if not mats or len({m.shape for m in mats}) != 1:
        return None
    own = [float(np.nanmean(np.diag(m))) for m in mats]
    off = ~np.eye(mats[0].shape[0], dtype=bool)
    other = [float(np.nanmean(m[off])) if off.any() else None for m in mats]
    return {"own": stat(own), "other": stat(other),
            "matrix": [[number(v) for v in row] for row in np.mean(mats, axis=0)], "seeds": len(mats)}


def finetune(stores: list[Store]) -> dict | None:
    """Fine-tuning curves (return vs interactions), MBML init and scratch: mean ± std over every
    fine-tuned (seed, task), on the interactions all of them evaluated; and the summaries' savings."""
    curves = {init: [] for init in ft.INITS}
    savings, reached = [], {init: [] for init in ft.INITS}
    for s in stores:
        for row in ft.summary_rows(s):
            task = row.get("task")
            for init in ft.INITS:
                t = ft.curve(s, init, task)
                if t:
                    curves[init].append(dict(zip(t["interactions"].astype(int).tolist(), t["return"].tolist())))
                reached[init].append(row.get(init))
            savings.append(number(row.get("saving")))
    if not curves["mbml"] or not curves["scratch"]:
        return None
    common = sorted(set.intersection(*(set(c) for init in ft.INITS for c in curves[init])))
    out = {"interactions": common, "runs": len(curves["mbml"]),
           "saving": stat(savings), "reached": reached}
    for init in ft.INITS:
        out[init] = band([[c[x] for x in common] for c in curves[init]])
    return out


def wall_times(stores: list[Store]) -> dict:
    """Seconds from start to end of every stage record of the pipeline (its last attempt), per seed."""
    keys = []
    for s in stores:
        try:
            keys += [k for k in graph.plan(from_dict(s.recipe)) if k not in keys]
        except Exception:                               # noqa: BLE001 - a foreign recipe: its records as found
            keys += [k for k in s.stages() if k not in keys]
    out = {}
    for key in keys:
        values = []
        for s in stores:
            rec = s.stage(key)
            start, end = number(rec.get("started")), number(rec.get("ended"))
            values.append(end - start if start is not None and end is not None and rec.get("status") == "done" else None)
        if any(v is not None for v in values):
            out[key] = stat(values)
    return out


def condition(g: dict, all_groups: list[dict]) -> dict:
    stores = g["stores"]
    algos = algos_of(stores)
    return {"label": label(g, all_groups), "name": g["recipe"].get("name"), "env": (g["recipe"].get("env") or {}).get("name"),
            "values": g["values"],
            "runs": [{"store": s.path, "seed": s.recipe.get("seed"), "revision": s.lock.get("revision")} for s in stores],
            "algos": {a: algorithm(stores, a) for a in algos},
            "batches": batches(stores), "teachers": teachers(stores), "reward_error": reward_error(stores), "finetune": finetune(stores),
            "wall": wall_times(stores)}


# ---- task-inference losses side by side (issue 38) ------------------------------------------------------
LOSS_ALGOS = ("mbml", "no_relabel", *in_group("loss"), "neither")     # the losses' table and figure


def loss_comparisons(groups: list[dict], conditions: list[dict]) -> list[dict]:
    """The task-inference losses side by side, one comparison per *family*: the conditions whose recipes
    agree apart from `distill.inference_loss` (a sweep's grid over it; or one condition alone). Its
    entries are the LOSS_ALGOS each condition trained: `mbml` named by its loss when that is not the
    default (`mbml (dml)`), a named algorithm (`mbml_dml`, `no_relabel`, ...) taken from the first
    condition that has it (its numbers do not depend on `distill.inference_loss`). Each entry is the
    condition's `algos` entry with `algo` and `condition` added, so a comparison reads like a condition."""
    families: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        rest = {**g["recipe"], "distill": {k: v for k, v in (g["recipe"].get("distill") or {}).items()
                                           if k != "inference_loss"}}
        families.setdefault(condition_key(rest, resolved=True), []).append(i)
    out = []
    for members in families.values():
        entries = {}
        for i in members:
            c = conditions[i]
            for a in LOSS_ALGOS:
                if a not in c["algos"]:
                    continue
                entry = c["algos"][a]
                name = a if a != "mbml" or entry["loss"] == "triplet" else f"mbml ({entry['loss']})"
                entries.setdefault(name, {**entry, "algo": a, "condition": c["label"]})
        if len(entries) < 2:
            continue
        first = conditions[members[0]]
        losses = [str((groups[i]["recipe"].get("distill") or {}).get("inference_loss", "triplet")) for i in members]
        title = first["label"] if len(members) == 1 else f"{first['name']} (distill.inference_loss = {', '.join(losses)})"
        out.append({"label": title, "conditions": [conditions[i]["label"] for i in members],
                    "runs": first["runs"], "algos": entries})
    return out


def read_report(path: str) -> dict:
    """A report JSON written by `mbml report`, or one error line naming the file."""
    import json
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: not a readable report JSON ({e.__class__.__name__})") from None
    if not isinstance(r, dict) or r.get("mbml_report") != SCHEMA or not isinstance(r.get("conditions"), list) \
            or not isinstance(r.get("losses", []), list):
        raise StoreError(f"{path}: not a report JSON written by `mbml report` (no \"mbml_report\": {SCHEMA})")
    for c in r["conditions"]:
        upgrade_teachers(c)
    return r


def upgrade_teachers(c: dict) -> None:
    """A condition reported before the best-10 % scale: its teachers get that scale's fields, unknown
    (None), and the tasks at the bar on the old scale counted from its per-task fractions."""
    t = c.get("teachers")
    if not t or "fraction_top10" in t:
        return
    n = len(t["fraction_per_task"])
    unknown = stat([None] * n)
    t.update(fraction_top10=unknown, top10_batch_return=unknown,
             fraction_top10_per_task=[[None] * len(f) for f in t["fraction_per_task"]],
             at_bar=[sum(v is not None and v >= BAR for v in f) for f in t["fraction_per_task"]],
             at_bar_top10=[None] * n, bar_tasks=[bar_tasks(len(f)) for f in t["fraction_per_task"]],
             bar_met_top10=None)


def gather(inputs: list[str]) -> dict:
    """The report of `inputs`: stores and sweeps are read; report JSONs (`*.json`, an earlier `mbml report`
    whose stores may be gone) join with their conditions and loss comparisons as they are."""
    from ... import __version__
    from ...core import lock
    earlier = [read_report(i) for i in inputs if i.endswith(".json")]
    groups = group(find_stores([i for i in inputs if not i.endswith(".json")]))
    conditions = [condition(g, groups) for g in groups]
    losses = loss_comparisons(groups, conditions)
    for r in earlier:
        conditions += r["conditions"]
        losses += r.get("losses", [])
    return {"mbml_report": SCHEMA, "mbml": __version__, "revision": lock.revision(),
            "conditions": conditions, "losses": losses}
