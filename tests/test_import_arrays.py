"""`mbml import arrays`: one .npz with a task column, or a directory of one .npz per task; data
without an environment (`env.name: none`) trained through distill, with eval's offline check in the
place of the protocol; and the refusals (unpicklable content, missing arrays, sizes that disagree)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mbml_cli.views.cli import app
from mbml_cli.core import layout
from mbml_cli.core.store import Store

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "recipes" / "smoke.yaml")
FIELDS = ("obs", "act", "rew", "next_obs", "terminal", "truncated", "info")
runner = CliRunner()


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    path = tmp_path_factory.mktemp("collected") / "smoke.zarr"
    out = runner.invoke(app, ["collect", SMOKE, "--set", f"store={path}"])
    assert out.exit_code == 0, out.output
    store = Store.open(path)
    return store, [store.read_rows(layout.BATCH("train", i)) for i in range(3)], store.read_array("tasks/train")


def test_one_file_with_task_column_bit_for_bit(collected, tmp_path):
    store, batches, goals = collected
    task = np.random.default_rng(0).permutation(np.repeat(np.arange(3), 200))   # tasks interleaved,
    cat = {}                                                                    # each in its own order
    for k in FIELDS[:-1]:
        cat[k] = np.zeros((600,) + batches[0][k].shape[1:], batches[0][k].dtype)
        for i, b in enumerate(batches):
            cat[k][task == i] = b[k]
    np.savez(tmp_path / "all.npz", task=task, task_params=goals, **cat)
    path = tmp_path / "arrays.zarr"
    out = runner.invoke(app, ["import", "arrays", str(tmp_path / "all.npz"), "--env", "point_goal",
                              "--store", str(path), "--recipe", SMOKE])
    assert out.exit_code == 0, out.output
    got = Store.open(path)
    assert got.read_array("tasks/train").tobytes() == goals.tobytes()
    assert got.read_array("tasks/test").tobytes() == store.read_array("tasks/test").tobytes()
    for i, b in enumerate(batches):
        rows = got.read_rows(layout.BATCH("train", i))
        for k in FIELDS:
            assert rows[k].dtype == b[k].dtype and rows[k].tobytes() == b[k].tobytes(), (i, k)


def test_directory_without_environment_trains_and_checks_offline(collected, tmp_path):
    _, batches, goals = collected
    folder = tmp_path / "lab"
    folder.mkdir()
    for i, b in enumerate(batches):          # task-10 sorts after task-2: natural order
        name = ["task-2", "task-10", "task-11"][i]
        np.savez(folder / f"{name}.npz", obs=b["obs"].astype(np.float64), act=b["act"], rew=b["rew"],
                 next_obs=b["next_obs"], terminal=b["terminal"], task_params=goals[i])
    path = tmp_path / "none.zarr"
    out = runner.invoke(app, ["import", "arrays", str(folder), "--store", str(path), "--recipe", SMOKE,
                              "--set", "algos=[mbml]"])
    assert out.exit_code == 0, out.output
    assert "env none" in out.output and "eval needs --env" in out.output
    assert "60 held out for eval's offline check" in out.output        # 1 of each task's 10 episodes
    store = Store.open(path)
    assert store.recipe["env"]["name"] == "none" and store.read_array("tasks/test").shape[0] == 0
    assert store.read_array("tasks/train").tobytes() == goals.tobytes()
    rows, held = store.read_rows(layout.BATCH("train", 1)), store.read_rows(layout.BATCH("heldout", 1))
    assert rows["obs"].dtype == np.float32 and not rows["truncated"].any()
    np.testing.assert_array_equal(np.concatenate([rows["act"], held["act"]]), batches[1]["act"])
    assert len(held["rew"]) == 20 and held["obs"][0].tobytes() == batches[1]["obs"][180].tobytes()

    out = runner.invoke(app, ["run", str(path)])
    assert out.exit_code == 0, out.output
    for key in ("bcq", "reward", "relabel", "distill/mbml", "eval/mbml", "probe/mbml"):
        assert f"✓ {key}: done in" in out.output, key
    assert "has no environment" in out.output and "offline check" in out.output
    td, err = store.read_array("eval/mbml/offline/td_error"), store.read_array("eval/mbml/offline/action_error")
    assert td.shape == err.shape == (3,) and np.all(np.isfinite(td)) and np.all((err >= 0) & (err <= 8))
    assert store.group("eval/mbml/offline").attrs["in_sample"] is False and "held-out" in out.output
    assert layout.find("data/heldout/2") is layout.HELDOUT_BATCH and layout.find("eval/mbml/offline") is layout.OFFLINE_CHECK
    reward_error = store.read_array("models/reward/error")
    assert np.all(np.isfinite(np.diag(reward_error))) and np.isnan(reward_error[0, 1])   # no true reward of others
    one_line = runner.invoke(app, ["finetune", str(path)])
    assert one_line.exit_code == 2 and "no environment" in one_line.output


def test_refusals(collected, tmp_path):
    _, batches, _ = collected
    b = {k: batches[0][k] for k in ("obs", "act", "rew", "next_obs", "terminal")}
    np.savez(tmp_path / "pickled.npz", **b, task_params=np.array([{"goal": 1}], dtype=object))
    np.savez(tmp_path / "short.npz", **{k: v for k, v in b.items() if k != "rew"})
    np.savez(tmp_path / "ok.npz", **b, task_params=[1.0, 0.0])
    np.savez(tmp_path / "wide.npz", **{**b, "obs": np.pad(b["obs"], ((0, 0), (0, 1))),
                                       "next_obs": np.pad(b["next_obs"], ((0, 0), (0, 1)))}, task_params=[0.0, 1.0])
    (tmp_path / "bad.yaml").write_text("- [1, 0]\n- [0, 1]\n- [1, 1]\n")      # 3 rows for 2 datasets
    store = str(tmp_path / "x.zarr")
    for args, needle in ((["pickled.npz"], "without unpickling"), (["short.npz"], "missing array(s) rew"),
                         (["ok.npz", "wide.npz"], "wide.npz: observation size (3,) differs"),
                         (["ok.npz", "ok.npz"], "3 rows of task parameters for 2 datasets"), (["nothing"], "no such file")):
        out = runner.invoke(app, ["import", "arrays", *[str(tmp_path / a) for a in args], "--store", store,
                                  "--env", "point_goal" if args == ["ok.npz", "ok.npz"] else "none",
                                  *(["--tasks", str(tmp_path / "bad.yaml")] if args == ["ok.npz", "ok.npz"] else [])])
        assert out.exit_code == 2, (args, out.output)
        assert needle in out.output and len(out.output.strip().splitlines()) == 1, (args, out.output)
    assert not Path(store).exists()


def test_observation_width_must_be_the_environments(collected, tmp_path):
    """Data whose observations are not the env's are refused before any store exists; where the
    other `env.observation` fits, the message says so."""
    _, batches, _ = collected
    b = {k: batches[0][k] for k in ("obs", "act", "rew", "next_obs", "terminal")}
    np.savez(tmp_path / "wide.npz", **{**b, "obs": np.pad(b["obs"], ((0, 0), (0, 1))),
                                       "next_obs": np.pad(b["next_obs"], ((0, 0), (0, 1)))}, task_params=[0.0, 1.0])
    rng, n = np.random.default_rng(0), 50
    np.savez(tmp_path / "ant.npz", obs=rng.normal(size=(n, 27)), next_obs=rng.normal(size=(n, 27)),
             act=rng.uniform(-1, 1, (n, 8)), rew=rng.normal(size=n), terminal=np.zeros(n, bool),
             info=rng.normal(size=(n, 3)), task_params=[0.5])
    store = tmp_path / "x.zarr"
    for name, env, needle in (("wide", "point_goal", "observations 3, actions 2; point_goal with env.observation "
                                                     "full has 2 and 2"),
                              ("ant", "ant_dir", "observations 27, actions 8; ant_dir with env.observation full has "
                                                 "105 and 8 (env.observation: compact has 27)")):
        out = runner.invoke(app, ["import", "arrays", str(tmp_path / f"{name}.npz"), "--env", env,
                                  "--store", str(store)])
        assert out.exit_code == 2 and needle in out.output, out.output
        assert len(out.output.strip().splitlines()) == 1 and not store.exists()
    out = runner.invoke(app, ["import", "arrays", str(tmp_path / "ant.npz"), "--env", "ant_dir", "--store", str(store),
                              "--set", "env.observation=compact"])
    assert out.exit_code == 0, out.output
    assert Store.open(store).recipe["env"]["observation"] == "compact"
