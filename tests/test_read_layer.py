"""The read layer (`mbml_cli/read/`): torch-free and apart from `run/`, and one fold of the stage
records: `mbml info`, the dashboard and the API show the same status, `stale` for a done record whose
inputs changed since it ran."""
import re
import subprocess
import sys

import pytest

from conftest import ENV, FAST, ROOT, SMOKE, runner
from mbml_cli.core.store import Store
from mbml_cli.read import records, snapshot
from mbml_cli.views.cli import app
from mbml_cli.views.dash.widgets import STATUS, render_header

TORCH_FREE = ("mbml_cli.read", "mbml_cli.views.report", "mbml_cli.views.dash.app")


@pytest.mark.parametrize("module", TORCH_FREE)
def test_import_is_torch_free(module):
    """In a fresh interpreter: importing the module (for the read layer, every module of it) loads no
    torch, and the read layer nothing of `run/`."""
    code = f"""
import importlib, pkgutil, sys
import {module} as m
for info in pkgutil.walk_packages(getattr(m, "__path__", []), m.__name__ + "."):
    importlib.import_module(info.name)
assert "torch" not in sys.modules, "torch"
if m.__name__ == "mbml_cli.read":
    run = sorted(k for k in sys.modules if k.startswith("mbml_cli.run"))
    assert not run, run
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr


def info_statuses(path) -> dict[str, str]:
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in result.output.splitlines() if line.startswith("│")]
    return {row[0]: row[1] for row in rows if len(row) == 6}


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """A store whose only stage, collect, ran for a handful of steps."""
    path = tmp_path_factory.mktemp("read") / "tiny.zarr"
    out = runner.invoke(app, ["run", SMOKE, "--store", str(path), *FAST, "--set", "stages=[collect]",
                              "--set", "collect.steps=20", "--set", "collect.random_steps=20",
                              "--set", "collect.log_every=10", "--yes"])
    assert out.exit_code == 0, out.output
    return path


def test_a_changed_input_reads_stale_in_info_dash_and_api(collected):
    from mbml_cli.api import open_run
    assert info_statuses(collected) == {"collect": "done"}
    lr = Store.open(collected).recipe["collect"]["lr"]
    # the user changes a key collect reads, and runs nothing: the stored recipe is the new one
    out = runner.invoke(app, ["run", str(collected), "--set", f"collect.lr={lr * 2}", "--set", "stages=[]"])
    assert out.exit_code == 0, out.output
    shown = info_statuses(collected)
    assert shown == {"collect": "stale"}
    # the dashboard: the same status for every key, and the stage list marks it
    snap = snapshot.read_snapshot(Store.open(collected))
    assert {s.key: s.status for s in snap.stages} == shown
    mark = STATUS["stale"][0]
    assert re.search(rf"{re.escape(mark)} collect\b", render_header(snap, now=0.0, interval=2.0).plain)
    # the live view's progress: a stale record is work to do again
    found = records.progress(Store.open(collected), ["collect"])
    assert (found.stage, found.fraction) == ("collect", 0.0)
    # the API judges against its own recipe: the stored one (stale), or one set back (done)
    run = open_run(collected)
    assert [(s.key, s.status) for s in run.stages()] == [("collect", "stale")]
    run.recipe.collect.lr = lr
    assert [(s.key, s.status) for s in run.stages()] == [("collect", "done")]


def test_a_stored_recipe_that_no_longer_parses_keeps_the_records_own_status(collected, tmp_path):
    import shutil
    path = tmp_path / "foreign.zarr"
    shutil.copytree(collected, path)
    store = Store.open(path, mode="r+")
    store.root.attrs["recipe"] = {**store.recipe, "collect": {"no_such_key": 1}}
    assert info_statuses(path) == {"collect": "done"}
    assert [(s.key, s.status, s.tasks_done) for s in records.stage_records(Store.open(path))] == [("collect", "done", 3)]


def test_a_shard_units_progress_reads_its_tasks_records(collected, tmp_path):
    """A collect or bcq shard of `mbml run --jobs N` is tracked by its per-task keys (`collect/3`),
    which the fold counts under `collect` rather than lists: the live view must still read them (it
    said `collect/0 0%` for a whole shard before)."""
    import os
    import shutil
    import socket
    path = tmp_path / "shards.zarr"
    shutil.copytree(collected, path)
    store = Store.open(path, mode="r+")
    store.set_stage("collect", status="running", progress=0.0)
    store.set_stage("collect/0", status="done", progress=1.0)
    store.set_stage("collect/1", status="running", progress=0.4, pid=os.getpid(), host=socket.gethostname())
    store.set_stage("collect/2", status="pending", progress=0.0)
    found = records.progress(Store.open(path), ["collect/0", "collect/1", "collect/2"])
    assert found.stage == "collect/1"
    assert found.fraction == pytest.approx((1.0 + 0.4 + 0.0) / 3)
