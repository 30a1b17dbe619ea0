"""The CLI surface: help, envs, info, lock, and one-line errors with exit code 2."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mbml_cli.views.cli import app
from mbml_cli.core.store import Store
from conftest import ROOT, SMOKE, runner



def mbml(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_every_subcommand():
    result = mbml("--help")
    assert result.exit_code == 0
    for name in ("run", "collect", "bcq", "reward", "relabel", "distill", "eval", "finetune", "dash",
                 "envs", "info", "lock"):
        assert f" {name} " in result.output, name


def test_envs_lists_distributions():
    result = mbml("envs")
    assert result.exit_code == 0
    assert "point_goal" in result.output and "120°" in result.output


@pytest.mark.parametrize("args, message", [
    (["recipe", SMOKE, "--set", "distill.margn=3"], "distill.margn: unknown key (did you mean distill.margin?)"),
    (["recipe", SMOKE, "--set", "bcq.phi=2"], "bcq.phi: 2.0 out of range"),
    (["recipe", SMOKE, "--set", "seed=x"], "seed: expected int"),
    (["run", "missing.yaml"], "missing.yaml: no such recipe file"),
])
def test_recipe_errors_exit_2_with_one_line(args, message):
    result = mbml(*args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_foreign_store_is_one_line_error_in_a_real_process(tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    for args in (["info", str(tmp_path)], ["bcq", str(tmp_path)], ["eval", str(tmp_path / "nope.zarr")]):
        proc = subprocess.run([sys.executable, "-m", "mbml_cli.views.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 2, proc
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert "not an mbml store" in proc.stderr or "no such store" in proc.stderr


def test_run_records_recipe_lock_and_tasks_then_info_and_lock(tmp_path):
    store = tmp_path / "s.zarr"
    result = mbml("run", SMOKE, "--store", store, "--set", "stages=[]")
    assert result.exit_code == 0, result.output
    s = Store.open(store)
    assert s.recipe["name"] == "smoke" and s.recipe["env"]["horizon"] == 20
    assert s.lock["packages"]["zarr"] and s.lock["python"] and s.lock["revision"]
    assert s.read_array("tasks/train").shape == (3, 2) and s.read_array("tasks/test").shape == (2, 2)
    info = mbml("info", store)
    assert info.exit_code == 0 and "smoke" in info.output and "point_goal" in info.output
    locked = mbml("lock", store)
    assert locked.exit_code == 0
    doc = yaml.safe_load(locked.output)
    assert doc["name"] == "smoke" and doc["seed"] == 0 and doc["lock"]["packages"]["torch"]
    # the printed file is itself a recipe that `mbml run` accepts
    path = tmp_path / "again.yaml"
    path.write_text(locked.output)
    again = mbml("run", path, "--store", tmp_path / "again.zarr", "--strict")
    assert again.exit_code == 0, again.output
    assert Store.open(tmp_path / "again.zarr").recipe == s.recipe | {"store": str(tmp_path / "again.zarr")}


def test_lock_mismatch_warns_and_strict_refuses(tmp_path):
    doc = yaml.safe_load(Path(SMOKE).read_text())
    doc.pop("extends")
    base = yaml.safe_load((ROOT / "recipes" / "point_goal.yaml").read_text())
    doc = {**base, **doc, "stages": [], "lock": {"python": "3.0.0", "packages": {"zarr": "0.0.1"}}}
    path = tmp_path / "locked.yaml"
    path.write_text(yaml.safe_dump(doc))
    warned = mbml("run", path, "--store", tmp_path / "w.zarr")
    assert warned.exit_code == 0 and "zarr" in warned.output and "lock has 0.0.1" in warned.output
    refused = mbml("run", path, "--store", tmp_path / "r.zarr", "--strict")
    assert refused.exit_code == 2 and "differ" in refused.output
    assert not (tmp_path / "r.zarr").exists()          # nothing half-written


def test_store_of_other_seed_is_refused(tmp_path):
    store = tmp_path / "s.zarr"
    assert mbml("run", SMOKE, "--store", store, "--set", "stages=[]").exit_code == 0
    result = mbml("run", SMOKE, "--store", store, "--set", "stages=[]", "--set", "seed=3")
    assert result.exit_code == 2 and "tasks of another recipe" in result.output
