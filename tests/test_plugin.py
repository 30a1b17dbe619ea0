"""A task distribution from outside mbml: docs/plugin_example installed (into a temporary directory,
offline) and found by its entry point, the smoke recipe run on it end to end; the same class by
`module:Class`; and the one-line refusals of names that lead nowhere."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mbml_cli import envs
from mbml_cli.views.cli import app
from mbml_cli.core.store import Store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "plugin_example"
SMOKE = str(ROOT / "recipes" / "smoke.yaml")
MBML = str(Path(sys.executable).with_name("mbml"))
runner = CliRunner()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """docs/plugin_example pip-installed into a fresh directory (no network, no build isolation)."""
    target, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("src") / "plugin_example"
    shutil.copytree(EXAMPLE, source)             # setuptools builds in the source folder: not in the checkout
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
                   check=True, capture_output=True, text=True)
    assert list(target.glob("mbml_goal_reacher-*.dist-info"))
    return target


def mbml(args: list[str], site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([MBML, *args], capture_output=True, text=True, env=env, timeout=600)


def test_installed_plugin_runs_end_to_end(installed, tmp_path):
    listed = mbml(["envs"], installed)
    assert listed.returncode == 0 and "goal_reacher" in listed.stdout, listed.stdout + listed.stderr
    store = tmp_path / "reacher.zarr"
    out = mbml(["run", SMOKE, "--store", str(store), "--set", "env.name=goal_reacher", "--set", "algos=[mbml]",
                "--set", "stages=[collect,bcq,reward,relabel,distill,eval]"], installed)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for key in ("collect", "bcq", "reward", "relabel", "distill/mbml", "eval/mbml"):
        assert f"✓ {key}: done in" in out.stdout, key
    s = Store.open(store)
    assert s.read_rows("data/train/0")["obs"].shape == (200, 4)            # position and velocity
    goals = s.read_array("tasks/train")
    assert goals.shape == (3, 2) and np.all(goals[:, 1] >= 0)             # the plugin's own sampler
    assert s.read_array("eval/mbml/test/returns").shape == (2, 3)
    # the data's rewards are the plugin's reward: −‖xy' − goal‖
    rows = s.read_rows("data/train/1")
    np.testing.assert_allclose(rows["rew"], -np.linalg.norm(rows["next_obs"][:, :2] - goals[1], axis=-1), atol=1e-5)


def test_module_class_name(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    dist = envs.get("goal_reacher:GoalReacher")
    assert dist.name == "goal_reacher" and dist.horizon == 30
    env = dist.make_env(dist.tasks("train", 1, 0)[0])
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4,) and env.step(np.ones(2))[1] < 0
    out = runner.invoke(app, ["collect", SMOKE, "--set", "env.name=goal_reacher:GoalReacher",
                              "--set", f"store={tmp_path / 'r.zarr'}"])
    assert out.exit_code == 0, out.output
    assert Store.open(tmp_path / "r.zarr").rows("data/train/2") == 200


@pytest.mark.parametrize("name, needle", [("mbml_cli.envs.point_goal:Nope", "has no 'Nope'"),
                                          ("no_such_module:X", "cannot import 'no_such_module'"),
                                          ("mbml_cli.envs.base:SPLITS", "lacks")])
def test_bad_plugin_names_refused_in_one_line(name, needle):
    out = runner.invoke(app, ["recipe", SMOKE, "--set", f"env.name={name}"])
    assert out.exit_code == 2 and needle in out.output and len(out.output.strip().splitlines()) == 1, out.output
