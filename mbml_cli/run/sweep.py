"""`mbml sweep`: many runs as one experiment.

A sweep is a recipe (with `--set` applied), seeds and a grid of recipe values; it expands into one
run per grid combination and seed, each with its own store under the sweep's directory
(`runs/<name>/` by default):

    runs/<name>/sweep.yaml            the sweep as one file: recipe, seeds, grid, lock
    runs/<name>/<run>.yaml            each run as one file (resolved recipe + lock: `mbml run` repeats it)
    runs/<name>/<run>.zarr            each run's store
    runs/<name>/logs/<run>.log        each run's output

`<run>` is `<recipe name>[-<key>=<value>...]-s<seed>`. `mbml sweep runs/<name>/sweep.yaml` repeats
the experiment (in place it resumes it; with `--dir` elsewhere it makes it anew). Runs go to an
executor (`executors.py`: local worker processes or Ray tasks), `jobs` at a time; a run that
fails does not stop the others; a run whose store has every planned stage done is skipped, an
interrupted one resumes where it stopped (`mbml run`'s rules), so a killed sweep run again goes on.
"""
from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from ..core import lock as lockmod
from ..recipe import graph
from ..recipe.config import Recipe
from ..errors import StageError, RecipeError
from .executors import make, run_units, share
from ..recipe.inputs import InputError, clean, load_yaml
from ..recipe.load import build, check_memory, load, merge, read_yaml, resolve, to_dict, validate
from .stages import pending, plan
from .unit import Unit

SWEEP_FILE = "sweep.yaml"
ESTIMATES = "estimates.yaml"        # the pre-flight's seconds per stage key, so `mbml dash` weighs progress alike
LOGS = "logs"


@dataclass
class SweepRun:
    label: str
    seed: int
    values: dict            # grid key → value
    recipe: Recipe          # resolved, its store set

    @property
    def store(self) -> str:
        return self.recipe.store


@dataclass
class Sweep:
    name: str
    recipe: dict                                   # every run's recipe before its grid values and seed
    seeds: list[int]
    grid: dict[str, list] = field(default_factory=dict)
    lock: dict = field(default_factory=dict)

    def document(self) -> dict:
        return {"sweep": {"name": self.name, "seeds": self.seeds, "grid": self.grid}, "recipe": self.recipe,
                "lock": self.lock}

    def same_experiment(self, other: "Sweep") -> list[str]:
        """What differs from `other` (the lock aside; recipe keys added since either was written count
        only where they are off their default)."""
        recipes = [graph.without_added(r, Recipe) for r in (self.recipe, other.recipe)]
        return [what for what, a, b in (("recipe", *recipes), ("seeds", self.seeds, other.seeds),
                                        ("grid", self.grid, other.grid)) if a != b]

    def runs(self, directory: Path, jobs: int = 1) -> list[SweepRun]:
        """One run per grid combination (in the order given) and seed."""
        out = []
        keys = list(self.grid)
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            values = dict(zip(keys, combo))
            for seed in self.seeds:
                label = "-".join([self.recipe.get("name", "run"), *(f"{k}={slug(v)}" for k, v in values.items()),
                                  f"s{seed}"])
                data = self.recipe
                for k, v in values.items():
                    data = merge(data, nest(k, v))
                data = merge(data, {"seed": seed, "store": str(directory / f"{label}.zarr")})
                source = "--grid " + ", ".join(f"{k}={v}" for k, v in values.items()) if values else "sweep recipe"
                recipe = build(Recipe, data, source)
                validate(recipe, source)
                check_memory(recipe, source)
                recipe = resolve(recipe)
                if not recipe.threads and jobs > 1:
                    recipe.threads = share(0, jobs)       # its share of the cores
                out.append(SweepRun(label, seed, values, recipe))
        return out


# ---- input ----------------------------------------------------------------------------------------
def slug(value) -> str:
    """A grid value as part of a file name."""
    text = "+".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9._+]", "_", text)[:40]


def nest(key: str, value) -> dict:
    """`("distill.margin", 1.0)` → `{"distill": {"margin": 1.0}}`."""
    *parents, leaf = key.split(".")
    out = node = {}
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return out


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` or `0-4`."""
    seeds = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, sep, hi = part.partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(part)]
    except ValueError:
        raise StageError(f"--seeds {text}: expected seeds like 0,1,2 or 0-4") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise StageError(f"--seeds {text}: expected distinct non-negative seeds like 0,1,2 or 0-4")
    return seeds


def split_values(text: str) -> list[str]:
    """Split at the commas outside brackets: `[mbml],[mbml,neither]` → two values."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p.strip() for p in parts + [current]]


def parse_grid(items: list[str] | None) -> dict[str, list]:
    grid: dict[str, list] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise StageError(f"--grid {item}: expected key=value1,value2")
        if key == "seed":
            raise StageError("--grid seed=...: give seeds with --seeds")
        if key in grid:
            raise StageError(f"--grid {key}: given twice")
        values = []
        for v in split_values(text):
            try:
                values.append(load_yaml(v))
            except InputError:
                values.append(v)
        if len(values) != len({repr(v) for v in values}) or any(v in ("", None) for v in values):
            raise StageError(f"--grid {key}: values must be distinct and not empty")
        grid[key] = values
    return grid


def from_recipe(path: Path, seeds: str | None, grid: list[str] | None, overrides: list[str] | None,
                name: str | None) -> Sweep:
    recipe, _ = load(path, overrides)
    data = to_dict(recipe)
    data["store"] = ""                                 # each run's own, under the sweep's directory
    return Sweep(name or recipe.name, data, parse_seeds(seeds) if seeds else [recipe.seed], parse_grid(grid),
                 lockmod.current())


def from_file(path: Path) -> Sweep:
    """A sweep file (`runs/<name>/sweep.yaml`)."""
    doc = read_yaml(path)
    head, recipe = doc.get("sweep"), doc.get("recipe")
    if not isinstance(head, dict) or not isinstance(recipe, dict):
        raise RecipeError(str(path), "sweep", "a sweep file holds `sweep` (name, seeds, grid) and `recipe` mappings")
    seeds, grid = head.get("seeds"), head.get("grid") or {}
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise RecipeError(str(path), "sweep.seeds", "a list of non-negative integers")
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise RecipeError(str(path), "sweep.grid", "a mapping of recipe keys to lists of values")
    name = str(head.get("name") or recipe.get("name") or "sweep")
    return Sweep(name, recipe, seeds, grid, doc.get("lock") or {})


def is_sweep_file(path: Path) -> bool:
    return path.is_file() and path.suffix in (".yaml", ".yml") and "sweep" in (read_yaml(path) or {})


def prepare(sweep: Sweep, directory: Path, jobs: int) -> list[SweepRun]:
    """Check the directory (new, or this very sweep's — given more seeds, the sweep grows by their runs),
    expand the runs, and write the sweep file and each run's file."""
    own = directory / SWEEP_FILE
    before, grown = from_file(own) if own.is_file() else None, False
    if before is not None:
        differs = sweep.same_experiment(before)
        if differs == ["seeds"] and set(before.seeds) <= set(sweep.seeds):    # more seeds: the sweep grows
            grown = set(before.seeds) != set(sweep.seeds)
            sweep.seeds = before.seeds + [s for s in sweep.seeds if s not in before.seeds]
        elif differs:
            hint = " (a sweep takes more seeds, never fewer)" if differs == ["seeds"] else ""
            raise StageError(f"{directory}: holds another sweep ({', '.join(differs)} differ){hint}; "
                             f"give a new --dir or --name")
    runs = sweep.runs(directory, jobs)
    if before is None and directory.exists() and any(directory.iterdir()):
        raise StageError(f"{directory}: not empty and no sweep's directory (no {SWEEP_FILE}); give a new --dir")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOGS).mkdir(exist_ok=True)
    if before is None:
        sweep.lock = lockmod.current()
        write_yaml(own, sweep.document())
    elif grown:
        before.seeds = sweep.seeds
        write_yaml(own, before.document())          # its own lock kept, every seed listed
    for run in runs:
        write_yaml(directory / f"{run.label}.yaml", {**to_dict(run.recipe), "lock": sweep.lock})
    return runs


def write_yaml(path: Path, doc: dict) -> None:
    """Whole or not at all (a temporary file renamed over it)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)


def finished(run: SweepRun) -> bool:
    """Every stage `mbml run` would do is done in the run's store with these inputs."""
    from ..core.store import Store
    if not Path(run.store).exists():
        return False
    try:
        return not pending(run.recipe, Store.open(run.store))
    except Exception:                                  # noqa: BLE001 - half made: the run starts it again
        return False


# ---- running ----------------------------------------------------------------------------------------
def execute(sweep: Sweep, runs: list[SweepRun], directory: Path, jobs: int, executor: str, address: str | None,
            console: Console, weights: dict[str, float] | None = None) -> dict[str, str]:
    """Run every unfinished run; label → status (done, skipped, failed, interrupted)."""
    from .live import LiveView, Tracked
    done = {r.label for r in runs if finished(r)}
    todo = [r for r in runs if r.label not in done]
    units = [Unit("run", r.label, str(Path(r.store).resolve()), str(log_of(directory, r.label).resolve()),
                  recipe=str((directory / f"{r.label}.yaml").resolve()), threads=max(1, r.recipe.threads or 1),
                  gpus=1.0 if r.recipe.device == "cuda" else 0.0) for r in todo]
    keys = {r.label: [key for _, key, _ in plan(r.recipe)] for r in runs}
    columns = ("seed", *sweep.grid)
    tracked = [Tracked(r.label, str(Path(r.store).resolve()), keys[r.label],
                       status="skipped" if r.label in done else "waiting", progress=1.0 if r.label in done else 0.0,
                       extra={"seed": str(r.seed), **{k: str(v) for k, v in r.values.items()}}) for r in runs]
    console.print(f"sweep [bold]{clean(sweep.name)}[/bold]: {len(runs)} runs ({len(done)} finished before), "
                  f"{min(jobs, max(1, len(units)))} at a time ({executor}) → {clean(str(directory))}/", highlight=False)
    codes: dict[str, int] = {}
    if weights:
        write_yaml(directory / ESTIMATES, {key: float(seconds) for key, seconds in weights.items()})
    if units:
        runner = make(executor, address)
        try:
            with LiveView(f"sweep {sweep.name}", tracked, console, weights, columns) as view:
                codes = run_units(units, runner, jobs, view.tick)
        finally:
            runner.close()
    return {r.label: "skipped" if r.label in done else
            {0: "done", 130: "interrupted", 143: "interrupted"}.get(codes.get(r.label, 1), "failed") for r in runs}


def read_estimates(directory: Path) -> dict[str, float]:
    """The pre-flight's seconds per stage key that `execute` wrote; {} when absent or unreadable."""
    try:
        doc = read_yaml(directory / ESTIMATES)
    except Exception:                                  # noqa: BLE001 - only weights: equal ones will do
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): float(v) for k, v in doc.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")}


def log_of(directory: Path, label: str) -> Path:
    return directory / LOGS / f"{label}.log"


def final_table(sweep: Sweep, runs: list[SweepRun], status: dict[str, str], directory: Path) -> Table:
    """Per run: its status and each algorithm's best test-task score (mean over tasks)."""
    from ..read.scores import summarise
    from ..core.store import Store
    algos = list(sweep.recipe.get("algos") or [])
    table = Table("run", "seed", *sweep.grid, "status", *algos,
                  title=f"sweep {clean(sweep.name)}: best test-task score per algorithm (mean over test tasks)",
                  caption=f"mbml report {clean(str(directory))} — tables, figures and JSON over the seeds")
    for run in runs:
        cells = [""] * len(algos)
        if status[run.label] in ("done", "skipped"):
            rows = summarise(Store.open(run.store), algos, run.recipe.eval.skip)
            cells = ["—" if row["best"] != row["best"] else f"{row['best']:.2f}" for row in rows]
        state = status[run.label]
        state = f"[red]{state}[/red]" if state not in ("done", "skipped") else state
        table.add_row(clean(run.label), str(run.seed), *(clean(str(v)) for v in run.values.values()), state, *cells)
    return table
