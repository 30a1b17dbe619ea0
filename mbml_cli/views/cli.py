"""The `mbml` command line: thin Typer subcommands over `stages` and the store."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table


from .. import envs
from ..core import layout, lock as lockmod
from ..errors import USER_ERRORS, StageError
from ..recipe.inputs import clean
from ..run.worker import Terminated, handle_signals

UNSEEN_MAX = 10_000          # fresh tasks of `mbml eval --unseen N`
LIMIT_HOURS = 2.0           # `mbml run` asks before a run projected longer than this on a CPU

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Multi-task Batch RL with Metric Learning: learn one policy from many offline "
                       "datasets and run it on unseen tasks.")
out = Console()
err = Console(stderr=True)

SET = typer.Option(None, "--set", help="override a recipe value: section.key=value (repeatable)")
FORCE = typer.Option(False, "--force", help="run again even if finished with the same inputs")
TASKS = typer.Option(None, "--tasks", help="only these training tasks, e.g. 0,3,5 (a shard)")
ALGO = typer.Option("mbml", "--algo", help="distill algorithm: mbml, an ablation or a baseline")
JOBS = typer.Option(1, "--jobs", "-j", min=1, max=1024, help="units of work at once (worker processes or Ray tasks)")
EXECUTOR = typer.Option("local", "--executor", help="where units run: local (worker processes) or ray")
ADDRESS = typer.Option(None, "--address", help="an existing Ray cluster (with --executor ray); default: a local instance")


def user_errors(fn):
    """Bad input → one line on stderr and exit 2, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            err.print(f"[red]error:[/red] {clean(e)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt as e:      # Ctrl-C, or SIGTERM (see main): the record says `interrupted`
            err.print(f"{str(e) or 'interrupted'}: run the same command again to resume")
            raise typer.Exit(143 if isinstance(e, Terminated) else 130)
    return wrapper


def parse_tasks(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise StageError(f"--tasks: expected comma-separated task indices, got {text!r}") from None


def _stage(name: str, target: str, overrides, force: bool, key: str | None = None, announce: bool = False,
           **options):
    """Run one stage on `target`; a refusal is its one line, printed before anything else (`announce`:
    name the store first, for the commands whose store may be the newest under runs/)."""
    from ..algos.nets import device_of
    from ..run.preflight import estimate
    from ..run.progress import fmt_duration
    from ..run.pipeline.common import check_algo
    from ..run.stages import check_ready, device_name, open_run, pending, release, run_stage, unit_of
    if "algo" in options:
        check_algo(None, **options)         # a typo is refused before the store is locked
    ctx = open_run(target, overrides, unit=unit_of(name, options))
    try:
        key = check_ready(ctx, name, key, **options)
        if announce:
            out.print(f"store: {clean(target)}", highlight=False)
        line = f"▶ {key} on {device_name(ctx.recipe)}"
        if force or key in pending(ctx.recipe, ctx.store):
            found = estimate(ctx.recipe, device_of(ctx.recipe.device), [key],
                             **{k: v for k, v in options.items() if k == "unseen"})
            line += f": projected {fmt_duration(found[0].seconds)} ({found[0].detail})" if found else ""
        err.print(clean(line), highlight=False)
        ran = run_stage(ctx, name, force=force, key=key, **options)
    finally:
        release(ctx)
    if not ran:
        out.print(f"{clean(key or name)}: already done with these inputs (use --force to run it again)")
    return ctx


def _newest(run: str | None) -> str:
    from ..core.store import newest_store
    return run or str(newest_store())


# ---- pipeline ----------------------------------------------------------------------------------
@app.command()
@user_errors
def run(recipe: Path = typer.Argument(..., help="recipe YAML (or a file written by `mbml lock`), or a store"),
        set_: Optional[List[str]] = SET,
        store: Optional[str] = typer.Option(None, "--store", help="store path or URL (default from recipe)"),
        strict: bool = typer.Option(False, "--strict", help="refuse to run when installed versions differ from the file's lock"),
        yes: bool = typer.Option(False, "--yes", "-y", help=f"run even when projected over {LIMIT_HOURS:g} h on a CPU"),
        jobs: int = JOBS, executor: str = EXECUTOR, address: Optional[str] = ADDRESS):
    """Run the recipe's whole pipeline; finished stages are skipped, interrupted ones resume. With
    --jobs N the recipe's shards of collect and bcq, and the algorithms' distill → eval → probe, run N
    at a time."""
    from ..run.executors import check
    from ..recipe.load import check_memory, load, resolve
    from ..core.store import Store
    from ..core.writer import release as release_lock
    from ..run.stages import check_device, create_run, open_run, pending, release, take_lock
    check(executor, address)
    if recipe.is_dir():                       # a store (e.g. made by `mbml import`): its own recipe
        ctx = open_run(str(recipe), set_, store_path=store)
        try:
            run_and_report(ctx, preflight_check(recipe, ctx.recipe, pending(ctx.recipe, ctx.store), yes, jobs),
                           jobs, executor, address)
        finally:
            release(ctx)
        return
    r, wanted = load(recipe, set_)
    diffs = lockmod.differences(wanted) if isinstance(wanted, dict) and wanted else []
    for line in diffs:
        err.print(f"[yellow]warning:[/yellow] {clean(line)}")
    if diffs and strict:
        raise StageError(f"{recipe}: installed versions differ from its lock (--strict)")
    r = resolve(r)
    if store:
        r.store = store
    check_device(r, str(recipe))
    check_memory(r, str(recipe))
    existing = Store.open(r.store) if Path(r.store).exists() else None
    if wanted and existing is not None and not store and existing.stages():
        raise StageError(f"{r.store}: already holds the run {recipe} was locked from; to repeat it, give a new "
                         f"store: mbml run {recipe} --store runs/{r.name}-s{r.seed}-repeat.zarr")
    timed = envs.has_environment(envs.get(r.env.name))        # the estimate steps an env; none: not timed
    if existing is not None:
        take_lock(r.store)                  # a second writer is refused before the pre-flight, not after
    try:
        estimates = preflight_check(recipe, r, pending(r, existing), yes, jobs) if timed else {}
        ctx = create_run(r)                 # takes the lock too (re-entrant)
    finally:
        if existing is not None:
            release_lock(r.store)
    try:
        run_and_report(ctx, estimates, jobs, executor, address)
    finally:
        release(ctx)


def run_and_report(ctx, estimates: dict[str, float], jobs: int = 1, executor: str = "local",
                   address: str | None = None) -> None:
    """The pipeline, then the commands a user runs next."""
    from ..run.parallel import Units
    from ..run.stages import run_pipeline
    out.print(f"run [bold]{clean(ctx.recipe.name)}[/bold] → {clean(ctx.store.path)}")
    units = Units(ctx, jobs, executor, address, out, dict(estimates)) if jobs > 1 else None
    try:
        run_pipeline(ctx, out, estimates, units)
    finally:
        if units:
            units.close()
    algo = ctx.recipe.algos[0] if ctx.recipe.algos else "mbml"
    path = clean(ctx.store.path)
    check = (f"[bold]mbml eval {path} --algo {algo} --unseen 10[/bold] (10 fresh tasks)"
             if envs.has_environment(ctx.dist) else
             f"[bold]mbml eval {path} --algo {algo}[/bold] (the offline check on held-out episodes)")
    out.print(f"\nnext: [bold]mbml dash {path}[/bold] (the run's curves and embeddings)   {check}   "
              f"[bold]mbml info {path}[/bold]", highlight=False)


def busy_note() -> str:
    """'timed while the machine was busy (load L on N cores)' when other work held every core, else ''
    (a projection made then is for the busy machine, not the recipe's size)."""
    try:
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
    except (OSError, AttributeError):
        return ""
    return f"timed while the machine was busy (load {load:.1f} on {cores} cores)" if load > cores else ""


def preflight_check(path: Path, r, keys: list[str], yes: bool, jobs: int = 1) -> dict[str, float]:
    """Time each pending stage (`preflight.py`; units `jobs` at a time), print the table, and on a CPU
    refuse a run projected over LIMIT_HOURS unless the user agrees at a terminal or gave --yes.
    Returns key → seconds."""
    from ..algos.nets import device_of
    from ..run.preflight import estimate, table
    from ..run.progress import fmt_duration
    if not keys:
        return {}
    device = device_of(r.device)
    try:
        found = estimate(r, device, keys, jobs, say=lambda line: err.print(line, highlight=False))
    except Exception as e:                   # noqa: BLE001 - e.g. imported data without an environment
        err.print(f"pre-flight skipped: {clean(str(e) or type(e).__name__)}", highlight=False)
        return {}
    err.print(table(found, device))
    total = sum(e.seconds for e in found)
    if device.type == "cpu" and total > LIMIT_HOURS * 3600:
        smaller = path.with_name(f"{path.stem}_cpu{path.suffix}")
        hint = f"use {smaller} instead, sized for a CPU" if smaller.is_file() else "use a smaller recipe"
        busy = busy_note()           # then the projection says more about the other work than the recipe
        hint = f"{busy}: try again when it is quiet, or {hint}" if busy else hint
        err.print(f"[bold yellow]{clean(str(path))}{' is sized for a GPU' if not busy else ''}:[/bold yellow] projected "
                  f"{fmt_duration(total)} on this CPU; {clean(hint)}.")
        if not yes:
            if not sys.stdin.isatty() or not typer.confirm("Run it here anyway?", default=False):
                raise StageError(f"{path}: projected {fmt_duration(total)} on this CPU (over {LIMIT_HOURS:g} h); "
                                 f"{hint}, or pass --yes to run it anyway")
    return {e.stage: e.seconds for e in found}


@app.command()
@user_errors
def sweep(recipe: Path = typer.Argument(..., help="recipe YAML, or a sweep file (runs/<sweep>/sweep.yaml) to repeat"),
          seeds: Optional[str] = typer.Option(None, "--seeds", help="seeds, e.g. 0,1,2 or 0-4 (default: the recipe's)"),
          grid: Optional[List[str]] = typer.Option(None, "--grid", help="key=v1,v2: one run per combination of the "
                                                                        "grids' values and seed (repeatable)"),
          set_: Optional[List[str]] = SET,
          jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, max=1024,
                                             help="runs at once (default: 1 locally, as many as Ray fits)"),
          executor: str = EXECUTOR, address: Optional[str] = ADDRESS,
          name: Optional[str] = typer.Option(None, "--name", help="the sweep's name (default: the recipe's)"),
          directory: Optional[Path] = typer.Option(None, "--dir", help="where its runs go (default runs/<name>)"),
          yes: bool = typer.Option(False, "--yes", "-y", help=f"run even when a run is projected over {LIMIT_HOURS:g} h on a CPU")):
    """Many runs as one experiment: seeds × grid, one store each under runs/<name>/; resumable."""
    from ..run import sweep as sweeps
    from ..run.executors import check
    from ..run.preflight import startup_seconds
    from ..run.progress import fmt_duration
    from ..run.stages import pending
    check(executor, address)
    if sweeps.is_sweep_file(recipe):
        if seeds or grid or set_ or name:
            raise StageError(f"{recipe}: a sweep file fixes its recipe, seeds and grid (no --seeds, --grid, --set or --name)")
        plan = sweeps.from_file(recipe)
        for line in lockmod.differences(plan.lock):
            err.print(f"[yellow]warning:[/yellow] {clean(line)}")
        directory = directory or (recipe.parent if recipe.name == sweeps.SWEEP_FILE else Path("runs") / plan.name)
    else:
        plan = sweeps.from_recipe(recipe, seeds, grid, set_, name)
        directory = directory or Path("runs") / plan.name
    jobs = jobs or (1024 if executor == "ray" else 1)
    runs = sweeps.prepare(plan, directory, jobs)
    todo = [r for r in runs if not sweeps.finished(r)]
    weights = {}
    if todo and envs.has_environment(envs.get(todo[0].recipe.env.name)):
        weights = preflight_check(recipe, todo[0].recipe, pending(todo[0].recipe, None), yes)
        startup = startup_seconds()                                 # each run is a process of its own
        per_run = sum(weights.values()) + startup
        total = per_run * len(todo) / min(jobs, len(todo))
        err.print(f"sweep: {len(todo)} runs to do, {min(jobs, len(todo))} at a time: projected "
                  f"{fmt_duration(total)} (one run alone: {fmt_duration(per_run)}, of which "
                  f"{fmt_duration(startup)} start-up)", highlight=False)
    status = sweeps.execute(plan, runs, directory, jobs, executor, address, out, weights)
    (out if out.is_terminal else Console(width=200)).print(sweeps.final_table(plan, runs, status, directory))
    failed = [label for label, s in status.items() if s not in ("done", "skipped")]
    if failed:
        err.print(f"{len(failed)} of {len(runs)} runs did not finish: "
                  + ", ".join(f"{clean(label)} ({status[label]}, log {clean(str(sweeps.log_of(directory, label)))})"
                              for label in failed) + "; run the same command again to resume them",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
@user_errors
def report(runs: List[str] = typer.Argument(..., help="stores, sweep directories (runs/<sweep>) or directories of stores"),
           out_dir: Optional[Path] = typer.Option(None, "--out", help="where report.md and the figures go "
                                                                    "(default: <sweep>/report, else report/)"),
           json_file: Optional[Path] = typer.Option(None, "--json", help="the numbers as JSON (default: <out>/report.json)"),
           summary: bool = typer.Option(False, "--summary", help="RUNS are report JSONs: print one summary table "
                                                                 "(a row per condition), write nothing")):
    """Tables (Markdown), the paper's figures (PNG) and the same numbers as JSON, over seeds."""
    from .report import make_report, summarise_reports
    if summary:
        sys.stdout.write(summarise_reports(list(runs)) + "\n")
        return
    from ..run.sweep import SWEEP_FILE
    if out_dir is None:
        sweep_dirs = [Path(r) for r in runs if (Path(r) / SWEEP_FILE).is_file()]
        out_dir = sweep_dirs[0] / "report" if len(runs) == 1 and sweep_dirs else Path("report")
    result, figures, text = make_report(list(runs), out_dir, json_file)
    sys.stdout.write(text)
    n = sum(len(c["runs"]) for c in result["conditions"])
    err.print(f"report of {n} runs in {len(result['conditions'])} condition(s) → {clean(str(out_dir / 'report.md'))}, "
              f"{len(figures)} figures, JSON {clean(str(json_file or out_dir / 'report.json'))}", highlight=False,
              soft_wrap=True)


@app.command()
@user_errors
def collect(target: str = typer.Argument(..., help="recipe YAML or store"), tasks: Optional[str] = TASKS,
            set_: Optional[List[str]] = SET, force: bool = FORCE):
    """SAC on every training task at once; its replay buffers become the offline batches."""
    _stage("collect", target, set_, force, tasks=parse_tasks(tasks))


@app.command()
@user_errors
def bcq(target: str = typer.Argument(..., help="store"), tasks: Optional[str] = TASKS,
        set_: Optional[List[str]] = SET, force: bool = FORCE):
    """One BCQ policy per training task, trained as one batched network."""
    _stage("bcq", target, set_, force, tasks=parse_tasks(tasks))


@app.command()
@user_errors
def reward(target: str = typer.Argument(..., help="store"), set_: Optional[List[str]] = SET,
           force: bool = FORCE):
    """Per-task reward-model ensembles (and next-state ensembles where dynamics differ)."""
    _stage("reward", target, set_, force)


@app.command()
@user_errors
def relabel(target: str = typer.Argument(..., help="store"), set_: Optional[List[str]] = SET,
            force: bool = FORCE):
    """Relabel every task's transitions with every other task's reward model (Eq. 7)."""
    _stage("relabel", target, set_, force)


@app.command()
@user_errors
def distill(target: str = typer.Argument(..., help="store"), algo: str = ALGO,
            set_: Optional[List[str]] = SET, force: bool = FORCE):
    """Distil the teachers into one task-conditioned policy (MBML, ablations, baselines)."""
    _stage("distill", target, set_, force, key=layout.stage_key("distill", algo), algo=algo)


@app.command("eval")
@user_errors
def eval_(target: Optional[str] = typer.Argument(None, help="store (default: newest under runs/)"),
          algo: str = ALGO, unseen: int = typer.Option(0, "--unseen", help="evaluate on N fresh tasks instead of the test tasks"),
          set_: Optional[List[str]] = SET):
    """Evaluate a distilled policy on unseen tasks (PEARL protocol)."""
    if not 0 <= unseen <= UNSEEN_MAX:
        raise StageError(f"--unseen {unseen}: expected a number of fresh tasks from 0 to {UNSEEN_MAX:,}")
    key = layout.stage_key("eval", f"{algo}-unseen" if unseen else algo)     # --unseen keeps its own record
    _stage("eval", _newest(target), set_, True, key=key, announce=True, algo=algo, unseen=unseen)


@app.command()
@user_errors
def probe(target: Optional[str] = typer.Argument(None, help="store (default: newest under runs/)"),
          algo: str = ALGO, set_: Optional[List[str]] = SET):
    """Does the encoder read rewards? Fraction of relabelled contexts assigned to the reward's task."""
    _stage("probe", _newest(target), set_, True, key=layout.stage_key("probe", algo), announce=True, algo=algo)


@app.command()
@user_errors
def finetune(target: str = typer.Argument(..., help="store"),
             task: Optional[int] = typer.Option(None, "--task", help="test task index"),
             unseen: bool = typer.Option(False, "--unseen", help="a fresh task instead of a test task"),
             set_: Optional[List[str]] = SET, force: bool = FORCE):
    """SAC on an unseen task initialised from the MBML policy, against SAC from scratch."""
    key = layout.stage_key("finetune", "unseen" if unseen else None if task is None else str(task))
    if key == "finetune":             # the run's own fine-tuning: its recipe says so, and `mbml lock` repeats it
        set_ = [*(set_ or []), "finetune.enabled=true"]
    _stage("finetune", target, set_, force, key=key, task=task, unseen=unseen)


@app.command()
@user_errors
def dash(run: Optional[str] = typer.Argument(None, help="store (default: newest under runs/)"),
         wait: bool = typer.Option(False, "--wait", help="wait for a store that does not exist yet (a run about to start)")):
    """Live dashboard: losses, per-task returns, embedding clusters; of a sweep's directory, a row per
    run (Enter opens one)."""
    from ..core.store import Store
    from ..run.sweep import SWEEP_FILE
    target = _newest(run)
    if (Path(target) / SWEEP_FILE).is_file():
        from .dash.sweep import main as sweep_dash
        sweep_dash(target)
        return
    if not wait:
        Store.open(target)                   # not a store: one line and exit 2, before the screen opens
    from .dash.app import main
    main(target)


# ---- users' data ----------------------------------------------------------------------------------
import_app = typer.Typer(no_args_is_help=True, help="Bring your own batches into a new store (one dataset per task).")
app.add_typer(import_app, name="import")
IMPORT_STORE = typer.Option(None, "--store", help="new store path (default runs/<name>-s<seed>.zarr)")
IMPORT_TASKS = typer.Option(None, "--tasks", help="YAML or CSV of task parameters (else the datasets' own)")
IMPORT_ENV = typer.Option(None, "--env", help="task distribution of the data: a name, module:Class or none "
                                              "(default: the one the datasets name, else none)")
IMPORT_RECIPE = typer.Option(None, "--recipe", help="recipe for the training stages (default: the paper's settings)")


def _import(fmt: str, sources, store, tasks, env, recipe, set_) -> None:
    from ..datasets.importing import import_recipe
    from ..run.stages import create_run, release, run_stage
    r, imported = import_recipe(fmt, list(sources), tasks and str(tasks), env, recipe and str(recipe), set_, store)
    ctx = create_run(r)
    try:
        run_stage(ctx, "collect", force=True, loaded=imported)
    finally:
        release(ctx)                        # a finished import leaves no pid behind in the lock file
    nxt = "bcq → reward → relabel → distill → eval" if envs.has_environment(envs.get(r.env.name)) else \
        "bcq → reward → relabel → distill (no environment: eval needs --env)"
    out.print(f"→ {ctx.store.path} (env {r.env.name}); continue with `mbml run {ctx.store.path}` ({nxt})",
              highlight=False, soft_wrap=True)


def _import_command(fmt: str, sources_help: str, doc: str) -> None:
    """Register `mbml import <fmt>` (the formats share every option)."""
    def command(sources: List[str] = typer.Argument(..., help=sources_help),
                store: Optional[str] = IMPORT_STORE, tasks: Optional[Path] = IMPORT_TASKS,
                env: Optional[str] = IMPORT_ENV, recipe: Optional[Path] = IMPORT_RECIPE,
                set_: Optional[List[str]] = SET):
        _import(fmt, sources, store, tasks, env, recipe, set_)
    command.__doc__ = doc
    import_app.command(fmt)(user_errors(command))


_import_command("minari", "dataset ids, dataset directories or a namespace",
                "Minari datasets, one per training task (task parameters from metadata `task_params` or --tasks).")
_import_command("arrays", ".npz file(s) or directories of them",
                "NumPy arrays: one .npz per task, or one with a `task` column (layout: mbml_cli/datasets/arrays.py).")


@app.command()
@user_errors
def export(run: str = typer.Argument(..., help="store"),
           format: str = typer.Option("minari", "--format", help="minari (the only format so far)"),
           out_dir: Optional[str] = typer.Option(None, "--out", help="datasets root (default $MINARI_DATASETS_PATH "
                                                                       "or ~/.minari/datasets)")):
    """Each training task's batch as a Minari dataset mbml/<run>/task-<i>-v0, task parameters in its metadata."""
    if format != "minari":
        raise StageError(f"--format {format}: unknown (minari)")
    from ..datasets.export import export_minari
    for ident, where, card in export_minari(run, out_dir):
        ret = f", return mean {card['return_mean']:.2f}" if card["episodes"] else ""
        rel = os.path.relpath(where)
        where = where if rel.startswith("..") else rel
        out.print(f"{ident}: {card['steps']} steps, {card['episodes']} episodes{ret} → {where}",
                  highlight=False, soft_wrap=True)


# ---- inspection --------------------------------------------------------------------------------
@app.command("envs")
def envs_():
    """List the task distributions."""
    table = Table("name", "obs", "act", "H", "train/test", "task parameter")
    installed = {name: envs.get(name) for name in sorted(envs.plugins.entry_points())}   # plugins
    for name, dist in {**envs.REGISTRY, **installed}.items():
        sizes = []
        for kind in getattr(dist, "observations", ("full",)):
            obs, act = envs.widths(envs.seeing(dist, kind))
            sizes.append(str(obs) + ("" if kind == "full" else f" ({kind})"))
        table.add_row(name, ", ".join(sizes), str(act),
                      str(dist.horizon), f"{dist.n_train}/{dist.n_test}", dist.task_param)
    out.print(table)


@app.command()
@user_errors
def info(run: str = typer.Argument(..., help="store"),
         check: bool = typer.Option(False, "--check", help="read every chunk of every array and verify its checksum")):
    """Summarise a store: recipe, stages (in pipeline order) and their status (`stale`: done, but its
    inputs changed since), data sizes."""
    from ..core.store import Store
    from ..read.records import stage_records
    from ..read.values import disk_bytes, fmt_bytes, num
    store = Store.open(run)
    r = store.recipe
    env = r.get("env") if isinstance(r.get("env"), dict) else {}
    out.print(f"[bold]{clean(r.get('name'))}[/bold]  env={clean(env.get('name'))}  seed={clean(r.get('seed'))}  "
              f"store={clean(store.path)}  revision={clean(store.lock.get('revision', '?'))}")
    table = Table("stage", "status", "progress", "tasks", "hash", "wall s")
    for rec in stage_records(store):
        table.add_row(clean(rec.key), clean(rec.status), f"{100 * rec.progress:.0f}%",
                      f"{rec.tasks_done}/{rec.tasks_seen}" if rec.tasks_seen else "", clean(rec.hash),
                      f"{rec.ended - (rec.started or 0):.1f}" if rec.ended else "")
    out.print(table)
    data = Table("split", "tasks", "transitions")
    for split in ("train", "test"):
        groups = layout.children(store, layout.parent(layout.BATCH, split))
        if groups:
            data.add_row(split, str(len(groups)), f"{sum(int(num(store.rows(layout.BATCH(split, g)), 0)) for g in groups):,}")
    out.print(data)
    if Path(store.path).is_dir():            # a local store: its bytes on disk (a URL's are the server's)
        sizes = Table("part", "size on disk")
        for name, where in (("data", Path(store.path) / "data"), ("models", Path(store.path) / "models"),
                            ("total", Path(store.path))):
            sizes.add_row(name, fmt_bytes(disk_bytes(where)))
        out.print(sizes)
    if check:
        from ..core.guard import verify
        checked, bad = verify(store)
        for path, reason in bad:
            err.print(f"[red]damaged:[/red] {clean(path)}: {clean(reason)}", highlight=False, soft_wrap=True)
        if bad:
            raise StageError(f"{run}: {len(bad)} of {checked} arrays damaged (first: {bad[0][0]})")
        out.print(f"checked {checked} arrays: every chunk's checksum matches")


@app.command()
@user_errors
def lock(run: str = typer.Argument(..., help="store")):
    """Print the run as one YAML file (recipe + seeds + versions + revision) that `mbml run` repeats."""
    from ..core.store import Store
    store = Store.open(run)
    doc = {**store.recipe, "lock": store.lock}
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))


@app.command()
@user_errors
def recipe(path: Path = typer.Argument(..., help="recipe YAML"), set_: Optional[List[str]] = SET):
    """Check a recipe and print it fully resolved (extends, --set and defaults applied)."""
    from ..recipe.load import load, resolve, to_dict
    r, _ = load(path, set_)
    sys.stdout.write(yaml.safe_dump(to_dict(resolve(r)), sort_keys=False))


def main() -> None:
    handle_signals()
    app()


if __name__ == "__main__":
    main()
