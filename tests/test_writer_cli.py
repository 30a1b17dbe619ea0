"""The writer lock seen from the CLI (issue 34, item 5): a second writer is refused before the
pre-flight prints anything, a typo in --algo before the store is locked, and a finished import
leaves no pid for the next command to 'take over'."""
from __future__ import annotations

import numpy as np

from conftest import SMOKE, cli, runner
from mbml_cli.core import layout, writer
from mbml_cli.core.store import Store
from mbml_cli.views.cli import app


def small_store(path):
    out = runner.invoke(app, ["collect", SMOKE, "--set", f"store={path}", "--set", "collect.steps=50",
                              "--set", "collect.random_steps=50"])
    assert out.exit_code == 0, out.output
    return path


def test_the_loser_of_the_lock_is_refused_before_the_preflight(tmp_path):
    path = small_store(tmp_path / "run.zarr")
    writer.acquire(str(path), command="mbml run (the test's)")
    try:
        out = cli("run", SMOKE, "--store", str(path), "--set", "collect.steps=50", "--set", "collect.random_steps=50")
    finally:
        writer.release(str(path))
    assert out.returncode == 2, out.stderr
    assert "another mbml is writing to this store" in out.stderr and "the test's" in out.stderr, out.stderr
    assert "projected" not in out.stdout + out.stderr and "total" not in out.stdout, out.stdout


def test_an_unknown_algorithm_is_refused_before_the_store_is_locked(tmp_path):
    path = small_store(tmp_path / "run.zarr")
    out = runner.invoke(app, ["distill", str(path), "--algo", "mbm"])
    assert out.exit_code == 2 and "did you mean 'mbml'" in out.output, out.output
    assert not (path / writer.unit_file("algo/mbm")).exists()
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(writer.LOCK_FILE)) == [writer.LOCK_FILE]


def test_a_finished_import_leaves_no_lock_to_take_over(tmp_path):
    source = Store.open(small_store(tmp_path / "source.zarr"))
    batches = [source.read_rows(layout.BATCH("train", i)) for i in range(3)]
    for i, b in enumerate(batches):
        np.savez(tmp_path / f"task-{i}.npz", task_params=source.read_array("tasks/train")[i],
                 **{k: b[k] for k in ("obs", "act", "rew", "next_obs", "terminal")})
    path = tmp_path / "imported.zarr"
    out = runner.invoke(app, ["import", "arrays", str(tmp_path), "--env", "point_goal", "--store", str(path),
                              "--recipe", SMOKE])
    assert out.exit_code == 0, out.output
    again = cli("info", str(path))
    later = cli("bcq", str(path), "--set", "bcq.iterations=2", "--set", "bcq.eval_every=2")
    assert again.returncode == 0 and later.returncode == 0, later.stderr
    assert "took over" not in later.stderr + later.stdout, later.stderr
