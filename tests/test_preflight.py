"""The pre-flight says what it is timing, stage by stage, before its table (a paper-scale step on a
CPU can take minutes), and projects `eval --unseen N` on the N tasks it will run (issue 34, items 6, 7)."""
from __future__ import annotations

import re
import shutil

from conftest import FAST, SMOKE, cli, runner
from mbml_cli.recipe.load import load, resolve
from mbml_cli.views.cli import app


def test_each_timed_stage_gets_a_line_before_the_table(tmp_path):
    out = cli("run", SMOKE, "--store", str(tmp_path / "run.zarr"), "--set", "stages=[collect,bcq]",
              "--set", "collect.steps=50", "--set", "collect.random_steps=50", "--set", "bcq.iterations=2",
              "--set", "bcq.eval_every=2", "--yes")
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("pre-flight: timing ")]
    assert [lines[i] for i in at] == ["pre-flight: timing collect (1/2)", "pre-flight: timing bcq (2/2)"], out.stderr
    table = next(i for i, line in enumerate(lines) if "pre-flight on cpu" in line)
    assert max(at) < table


def test_eval_unseen_is_projected_on_its_own_tasks(smoke_run, tmp_path):
    recipe = resolve(load(SMOKE)[0])
    path = tmp_path / "unseen.zarr"
    shutil.copytree(smoke_run, path)                 # the session's store stays as the run made it
    out = runner.invoke(app, ["eval", str(path), "--unseen", "5", *FAST])
    assert out.exit_code == 0, out.output
    found = re.search(r"▶ eval/mbml-unseen on .*episodes × (\d+) tasks", out.output.replace("\n", " "))
    assert found and int(found.group(1)) == 5 * recipe.eval.repeats, out.output


def test_a_sweep_projects_each_runs_start_up(tmp_path):
    """Every run of a sweep is a process of its own: its start-up is part of the projection."""
    out = cli("sweep", SMOKE, "--seeds", "0", "--set", "stages=[collect]", "--set", "collect.steps=50",
              "--set", "collect.random_steps=50", "--dir", str(tmp_path / "s"), "--yes")
    assert out.returncode == 0, out.stderr
    found = re.search(r"one\s+run\s+alone:\s+(\d+)\s+s,\s+of\s+which\s+(\d+)\s+s\s+start-up", out.stderr)
    assert found and int(found.group(2)) >= 1 and int(found.group(1)) >= int(found.group(2)), out.stderr


def test_a_projection_made_on_a_busy_machine_says_so(monkeypatch):
    """Timed while other work holds every core, the over-limit warning names the load rather than
    calling a CPU recipe 'sized for a GPU' (a halfcheetah_vel_cpu sweep timed beside three ant_dir runs
    projected 4.4 h)."""
    from mbml_cli.views import cli as views
    monkeypatch.setattr(views.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(views.os, "getloadavg", lambda: (5.7, 3.0, 2.0))
    assert views.busy_note() == "timed while the machine was busy (load 5.7 on 2 cores)"
    monkeypatch.setattr(views.os, "getloadavg", lambda: (1.9, 3.0, 2.0))
    assert views.busy_note() == ""
