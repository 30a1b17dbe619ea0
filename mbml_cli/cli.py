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

from . import envs, lock as lockmod
from .errors import USER_ERRORS, StageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Multi-task Batch RL with Metric Learning: learn one policy from many offline "
                       "datasets and run it on unseen tasks.")
out = Console()
err = Console(stderr=True)

SET = typer.Option(None, "--set", help="override a recipe value: section.key=value (repeatable)")
FORCE = typer.Option(False, "--force", help="run again even if finished with the same inputs")
TASKS = typer.Option(None, "--tasks", help="only these training tasks, e.g. 0,3,5 (a shard)")
ALGO = typer.Option("mbml", "--algo", help="distill algorithm: mbml, an ablation or a baseline")


def user_errors(fn):
    """Bad input → one line on stderr and exit 2, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            err.print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err.print("interrupted: run the same command again to resume")
            raise typer.Exit(130)
    return wrapper


def parse_tasks(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise StageError(f"--tasks: expected comma-separated task indices, got {text!r}") from None


def _stage(name: str, target: str, overrides, force: bool, key: str | None = None, **options):
    from .stages import open_run, run_stage
    ctx = open_run(target, overrides)
    ran = run_stage(ctx, name, force=force, key=key, **options)
    if not ran:
        out.print(f"{key or name}: already done with these inputs (use --force to run it again)")
    return ctx


def _newest(run: str | None) -> str:
    from .store import newest_store
    return run or str(newest_store())


# ---- pipeline ----------------------------------------------------------------------------------
@app.command()
@user_errors
def run(recipe: Path = typer.Argument(..., help="recipe YAML (or a file written by `mbml lock`), or a store"),
        set_: Optional[List[str]] = SET,
        store: Optional[str] = typer.Option(None, "--store", help="store path or URL (default from recipe)"),
        strict: bool = typer.Option(False, "--strict", help="refuse to run when installed versions differ from the file's lock")):
    """Run the recipe's whole pipeline; finished stages are skipped, interrupted ones resume."""
    from .recipe import load
    from .stages import open_run, run_pipeline
    _, wanted = load(recipe, set_) if not recipe.is_dir() else (None, {})    # a store: its own recipe
    diffs = lockmod.differences(wanted) if wanted else []
    for line in diffs:
        err.print(f"[yellow]warning:[/yellow] {line}")
    if diffs and strict:
        raise StageError(f"{recipe}: installed versions differ from its lock (--strict)")
    ctx = open_run(str(recipe), set_, store_path=store)
    out.print(f"run [bold]{ctx.recipe.name}[/bold] → {ctx.store.path}")
    run_pipeline(ctx, out)


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
    _stage("distill", target, set_, force, key=f"distill/{algo}", algo=algo)


@app.command("eval")
@user_errors
def eval_(target: Optional[str] = typer.Argument(None, help="store (default: newest under runs/)"),
          algo: str = ALGO, unseen: int = typer.Option(0, "--unseen", help="evaluate on N fresh tasks instead of the test tasks"),
          set_: Optional[List[str]] = SET):
    """Evaluate a distilled policy on unseen tasks (PEARL protocol)."""
    _stage("eval", _newest(target), set_, True, key=f"eval/{algo}", algo=algo, unseen=unseen)


@app.command()
@user_errors
def probe(target: Optional[str] = typer.Argument(None, help="store (default: newest under runs/)"),
          algo: str = ALGO, set_: Optional[List[str]] = SET):
    """Does the encoder read rewards? Fraction of relabelled contexts assigned to the reward's task."""
    _stage("probe", _newest(target), set_, True, key=f"probe/{algo}", algo=algo)


@app.command()
@user_errors
def finetune(target: str = typer.Argument(..., help="store"),
             task: Optional[int] = typer.Option(None, "--task", help="test task index"),
             unseen: bool = typer.Option(False, "--unseen", help="a fresh task instead of a test task"),
             set_: Optional[List[str]] = SET, force: bool = FORCE):
    """SAC on an unseen task initialised from the MBML policy, against SAC from scratch."""
    key = "finetune/unseen" if unseen else ("finetune" if task is None else f"finetune/{task}")
    _stage("finetune", target, set_, force, key=key, task=task, unseen=unseen)


@app.command()
@user_errors
def dash(run: Optional[str] = typer.Argument(None, help="store (default: newest under runs/)")):
    """Live dashboard: losses, per-task returns, embedding clusters."""
    try:
        from .dash.app import main
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("mbml_cli.dash"):
            raise StageError("mbml dash: not built yet") from None
        raise
    main(_newest(run))


# ---- users' data ----------------------------------------------------------------------------------
import_app = typer.Typer(no_args_is_help=True, help="Bring your own batches into a new store (one dataset per task).")
app.add_typer(import_app, name="import")
IMPORT_STORE = typer.Option(None, "--store", help="new store path (default runs/<name>-s<seed>.zarr)")
IMPORT_TASKS = typer.Option(None, "--tasks", help="YAML or CSV of task parameters (else the datasets' own)")
IMPORT_ENV = typer.Option(None, "--env", help="task distribution of the data: a name, module:Class or none "
                                              "(default: the one the datasets name, else none)")
IMPORT_RECIPE = typer.Option(None, "--recipe", help="recipe for the training stages (default: the paper's settings)")


def _import(fmt: str, sources, store, tasks, env, recipe, set_) -> None:
    from .datasets.importing import import_recipe
    from .stages import create_run, run_stage
    r, imported = import_recipe(fmt, list(sources), tasks and str(tasks), env, recipe and str(recipe), set_, store)
    ctx = create_run(r)
    run_stage(ctx, "collect", force=True, loaded=imported)
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
    from .datasets.export import export_minari
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
        env = dist.make_env(dist.tasks("train", 1, 0)[0])
        table.add_row(name, str(env.observation_space.shape[0]), str(env.action_space.shape[0]),
                      str(dist.horizon), f"{dist.n_train}/{dist.n_test}", dist.task_param)
        env.close()
    out.print(table)


@app.command()
@user_errors
def info(run: str = typer.Argument(..., help="store")):
    """Summarise a store: recipe, stages and their status, data sizes."""
    from .store import Store
    store = Store.open(run)
    r = store.recipe
    out.print(f"[bold]{r.get('name')}[/bold]  env={r.get('env', {}).get('name')}  seed={r.get('seed')}  "
              f"store={store.path}  revision={store.lock.get('revision', '?')}")
    table = Table("stage", "status", "progress", "hash", "wall s")
    for key, rec in store.stages().items():
        for sub, rec2 in ([(key, rec)] if rec else []) + [
                (f"{key}/{k}", v) for k, v in sorted(_sub_stages(store, key).items())]:
            wall = (rec2.get("ended") or 0) - (rec2.get("started") or 0)
            table.add_row(sub, str(rec2.get("status", "")), f"{100 * float(rec2.get('progress') or 0):.0f}%",
                          str(rec2.get("hash", "")), f"{wall:.1f}" if rec2.get("ended") else "")
    out.print(table)
    data = Table("split", "tasks", "transitions")
    for split in ("train", "test"):
        if store.exists(f"data/{split}"):
            groups = list(store.root[f"data/{split}"].group_keys())
            data.add_row(split, str(len(groups)), str(sum(store.rows(f"data/{split}/{g}") for g in groups)))
    out.print(data)


def _sub_stages(store, key: str) -> dict:
    group = store.root[f"stages/{key}"]
    return {k: dict(group[k].attrs) for k in group.group_keys()}


@app.command()
@user_errors
def lock(run: str = typer.Argument(..., help="store")):
    """Print the run as one YAML file (recipe + seeds + versions + revision) that `mbml run` repeats."""
    from .store import Store
    store = Store.open(run)
    doc = {**store.recipe, "lock": store.lock}
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))


@app.command()
@user_errors
def recipe(path: Path = typer.Argument(..., help="recipe YAML"), set_: Optional[List[str]] = SET):
    """Check a recipe and print it fully resolved (extends, --set and defaults applied)."""
    from .recipe import load, resolve, to_dict
    r, _ = load(path, set_)
    sys.stdout.write(yaml.safe_dump(to_dict(resolve(r)), sort_keys=False))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
