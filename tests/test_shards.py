"""The recipe's `shards`: collect and bcq as groups of tasks, run by `mbml run --jobs N` as units.

The smoke recipe (3 training tasks) with `shards: 2` trains tasks 0-1 and task 2 apart. Made one
shard at a time, two at a time in worker processes, or on Ray, the store is the same array for
array; a shard that fails fails the run with one line naming its log; a killed run resumes its
shards from their checkpoints. (`shards: 1`, the default, is every other test's run.)
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ENV, FAST, ROOT, SMOKE, alive, children, cli, runner
from mbml_cli.core import layout
from mbml_cli.views.cli import app
from mbml_cli.recipe.config import Recipe
from mbml_cli.run.pipeline.common import shard_groups
from mbml_cli.run.preflight import estimate
from mbml_cli.recipe.load import load, resolve
from mbml_cli.core.store import Store
from store_equal import arrays, differences

SHARDS = ["--set", "shards=2", "--set", "algos=[mbml,neither]", *FAST]
LOGS = ["bcq-0-1.log", "bcq-2.log", "collect-0-1.log", "collect-2.log", "mbml.log", "neither.log"]


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory):
    """The whole smoke pipeline with shards: 2, one shard at a time in this process (--jobs 1)."""
    path = tmp_path_factory.mktemp("shards") / "smoke.zarr"
    out = runner.invoke(app, ["run", SMOKE, "--store", str(path), *SHARDS])
    assert out.exit_code == 0, out.output
    assert "collect shards" not in out.output
    store = Store.open(path)
    assert store.exists("metrics/collect/train_0-1") and store.exists("metrics/bcq/eval_2")
    assert [store.stage(f"bcq/{i}")["shard"] for i in range(3)] == ["0-1", "0-1", "2"]
    return path


def same_as(reference, path) -> None:
    """Every array of `path` (a run of fewer stages, perhaps) equals the reference's."""
    mine, theirs = arrays(str(path)), arrays(str(reference))
    assert set(mine) <= set(theirs), sorted(set(mine) - set(theirs))
    assert [k for k in mine if not np.array_equal(mine[k], theirs[k], equal_nan=mine[k].dtype.kind == "f")] == []


def test_groups_are_contiguous_in_array_split_order():
    recipe = Recipe(shards=2)
    recipe.env.n_train = 10
    assert shard_groups(recipe) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    recipe.shards = 3
    assert shard_groups(recipe) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_more_shards_than_tasks_is_one_line(tmp_path):
    out = runner.invoke(app, ["run", SMOKE, "--store", str(tmp_path / "s.zarr"), "--set", "shards=4"])
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    line, = out.output.strip().splitlines()
    assert "shards: 4 shards of 3 training tasks" in line and not (tmp_path / "s.zarr").exists()


def test_preflight_times_one_shard_and_its_shards_jobs_at_a_time():
    recipe = resolve(load(SMOKE, ["shards=2", "threads=1"])[0])
    for jobs in (1, 2):
        (e,) = estimate(recipe, torch.device("cpu"), ["collect"], jobs)
        assert e.detail.endswith(f"per shard of 2 tasks; 2 shards, {jobs} at a time")
        assert "× 2 envs" in e.detail and e.seconds > 0


def test_jobs_run_the_shards_as_units_and_the_store_equals_one_at_a_time(one_at_a_time, tmp_path):
    store = tmp_path / "jobs.zarr"
    out = runner.invoke(app, ["run", SMOKE, "--store", str(store), *SHARDS, "--jobs", "2"])
    assert out.exit_code == 0, out.output
    for line in ("2 collect shards, 2 at a time (local)", "collect/2: done", "✓ collect: done in",
                 "2 bcq shards, 2 at a time (local)", "✓ bcq: done in", "2 algorithms, 2 at a time (local)"):
        assert line in out.output, line
    assert differences(str(one_at_a_time), str(store)) == []
    assert sorted(p.name for p in (tmp_path / "jobs.logs").iterdir()) == LOGS
    assert "collect 0-1: 2 tasks × 200 steps" in (tmp_path / "jobs.logs" / "collect-0-1.log").read_text()
    assert Store.open(store).stage("collect")["status"] == "done"


def test_ray_runs_the_shards_and_the_algorithms_and_the_store_equals_one_at_a_time(one_at_a_time, tmp_path):
    pytest.importorskip("ray")
    store = tmp_path / "ray.zarr"
    p = cli("run", SMOKE, "--store", str(store), *SHARDS, "--jobs", "2", "--executor", "ray", timeout=900)
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-3000:]
    for line in ("2 collect shards, 2 at a time (ray)", "2 bcq shards, 2 at a time (ray)",
                 "2 algorithms, 2 at a time (ray)", "✓ probe/neither: done"):
        assert line in p.stdout, line
    assert differences(str(one_at_a_time), str(store)) == []
    assert sorted(p.name for p in (tmp_path / "ray.logs").iterdir()) == LOGS


def poisoned(path) -> None:
    """A store of the recipe with no stage run yet, whose task 2 has a NaN goal: its collect diverges."""
    out = runner.invoke(app, ["run", SMOKE, "--store", str(path), *SHARDS, "--set", "stages=[]"])
    assert out.exit_code == 0, out.output
    store = Store.open(path, mode="r+")
    tasks = layout.read_tasks(store, "train")
    tasks[2] = np.nan
    store.write_array(layout.TASKS("train"), tasks, {"param": "goal"})


def one_failed_shard(code: int, output: str, path) -> None:
    """The run failed with one line naming shard 2's log; shard 0-1 is done, and so are its tasks."""
    log = path.with_suffix(".logs").resolve() / "collect-2.log"
    assert code == 2 and "Traceback" not in output, output
    assert output.strip().splitlines()[-1] == f"error: {path}: collect/2 failed (exit 2, log {log})"
    assert "collect diverged at step 50: rew (task 2) = nan" in log.read_text()
    store = Store.open(path)
    assert [layout.record_status(store.stage(f"collect/{i}")) for i in range(3)] == ["done", "done", "failed"]
    assert store.stage("collect")["status"] == "failed"


def test_a_failed_shard_fails_the_run_naming_its_log_and_the_run_again_resumes(one_at_a_time, tmp_path):
    path = tmp_path / "poisoned.zarr"
    poisoned(path)
    out = runner.invoke(app, ["run", str(path), "--set", "stages=[collect]", "--jobs", "2"])
    one_failed_shard(out.exit_code, out.output, path)
    store = Store.open(path, mode="r+")             # the goal mended: only task 2's shard runs again
    store.write_array(layout.TASKS("train"), Store.open(one_at_a_time).read_array("tasks/train"), {"param": "goal"})
    again = runner.invoke(app, ["run", str(path), "--jobs", "2", "--set", "stages=[collect]"])
    assert again.exit_code == 0, again.output
    assert "collect shards" not in again.output and "collect 2: 1 tasks × 200 steps" in again.output
    assert "collect 0-1" not in again.output
    same_as(one_at_a_time, path)


def test_a_failed_shard_on_ray_fails_the_run_naming_its_log(tmp_path):
    pytest.importorskip("ray")
    path = tmp_path / "poisoned.zarr"
    poisoned(path)
    p = cli("run", str(path), "--set", "stages=[collect]", "--jobs", "2", "--executor", "ray", timeout=600)
    one_failed_shard(p.returncode, p.stderr, path)
    assert "2 collect shards, 2 at a time (ray)" in p.stdout


def test_a_killed_run_resumes_its_shards_from_their_checkpoints(one_at_a_time, tmp_path):
    path = tmp_path / "killed.zarr"
    args = ["run", SMOKE, "--store", str(path), *SHARDS, "--set", "stages=[collect]", "--jobs", "2"]
    p = subprocess.Popen([sys.executable, "-m", "mbml_cli.views.cli", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT, stdin=subprocess.DEVNULL)
    deadline, workers = time.monotonic() + 300, []
    while time.monotonic() < deadline and p.poll() is None:
        try:                                         # shard 0-1 past its first checkpoint (step 100 of 200)
            if Store.open(path).has_weights("models/collect/checkpoint/0-1"):
                workers = children(p.pid)
                break
        except Exception:                           # noqa: BLE001 - not made yet
            pass
        time.sleep(0.05)
    assert p.poll() is None and workers
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 30
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers), "a shard outlived its killed run"
    again = cli(*args)
    assert again.returncode == 0, again.stderr[-3000:] + again.stdout[-3000:]
    said = (path.with_suffix(".logs") / "collect-0-1.log").read_text() + again.stderr   # a unit, or alone here
    summary = [line for line in said.splitlines() if line.startswith("collect 0-1: 2 tasks × 200 steps")]
    assert len(summary) == 1 and "(200 this run)" not in summary[0], summary     # on from its checkpoint
    same_as(one_at_a_time, path)


def test_algorithms_start_longest_first_by_the_preflight(tmp_path, monkeypatch):
    """With the pre-flight's estimates `mbml run --jobs N` starts the longest algorithm first (ties and
    no estimates keep the recipe's order)."""
    from types import SimpleNamespace

    from rich.console import Console

    from mbml_cli.run.parallel import Units
    ctx = SimpleNamespace(store=SimpleNamespace(path=str(tmp_path / "s.zarr")), recipe=SimpleNamespace(threads=1))
    started = []
    monkeypatch.setattr(Units, "run", lambda self, units, what: started.append([u.label for u in units])
                        or {u.label: 0 for u in units})
    steps = [("distill", f"distill/{a}", {"algo": a}) for a in ("mbml", "neither", "contextual_bcq", "batch_pearl")]
    quiet = Console(file=open(os.devnull, "w"))
    estimates = {"distill/mbml": 240, "distill/neither": 180, "distill/contextual_bcq": 720, "distill/batch_pearl": 180}
    keys = [key for _, key, _ in steps]
    Units(ctx, 2, "local", None, quiet, estimates).algos(steps, keys)
    Units(ctx, 2, "local", None, quiet).algos(steps, keys)
    assert started == [["contextual_bcq", "mbml", "neither", "batch_pearl"],
                       ["mbml", "neither", "contextual_bcq", "batch_pearl"]]
