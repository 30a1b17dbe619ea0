"""Minari in and out, all on datasets made here (nothing is downloaded): a smoke run's batches
exported and imported back bit for bit and trained on through eval; a dataset written straight
with Minari's own `create_dataset_from_buffers` from our point_goal env (actions in other units);
and the refusals: spaces that disagree, a dataset without task parameters."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mbml_cli import envs
from mbml_cli.views.cli import app
from mbml_cli.core import layout
from mbml_cli.datasets import action_scale, original_units
from mbml_cli.core.store import Store

minari = pytest.importorskip("minari")
from minari.data_collector.episode_buffer import EpisodeBuffer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "recipes" / "smoke.yaml")
ONE_ALGO = ["--set", "algos=[mbml]"]
runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:.*(eval_env|env_spec).*:UserWarning")   # Minari's, on optional fields


@pytest.fixture()
def datasets_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """The smoke recipe's batches (collect only)."""
    path = tmp_path_factory.mktemp("collected") / "smoke.zarr"
    out = runner.invoke(app, ["collect", SMOKE, "--set", f"store={path}"])
    assert out.exit_code == 0, out.output
    return path


def rows(store: Store, i: int) -> dict:
    return store.read_rows(layout.BATCH("train", i))


def test_export_import_round_trip_bit_for_bit_then_train_through_eval(collected, datasets_root, tmp_path):
    out = runner.invoke(app, ["export", str(collected), "--format", "minari"])
    assert out.exit_code == 0, out.output
    meta = json.loads((datasets_root / "mbml/smoke/task-1-v0/data/metadata.json").read_text())
    original = Store.open(collected)
    assert meta["task_params"] == original.read_array("tasks/train")[1].tolist()
    assert meta["card"]["steps"] == 200 and meta["card"]["episodes"] == 10 and "SAC" in meta["description"]
    assert meta["mbml"]["env"] == "point_goal"

    store_path = tmp_path / "imported.zarr"
    out = runner.invoke(app, ["import", "minari", "mbml/smoke", "--store", str(store_path), "--recipe", SMOKE,
                              *ONE_ALGO])
    assert out.exit_code == 0, out.output
    assert "imported 3 tasks, 600 transitions" in out.output
    imported = Store.open(store_path)
    for i in range(3):
        a, b = rows(original, i), rows(imported, i)
        assert sorted(a) == sorted(b) == ["act", "info", "next_obs", "obs", "rew", "terminal", "truncated"]
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert a[k].tobytes() == b[k].tobytes(), k          # bit for bit
    assert rows(original, 0)["truncated"].sum() == 10 and not rows(original, 0)["terminal"].any()
    for split in ("train", "test"):
        assert original.read_array(f"tasks/{split}").tobytes() == imported.read_array(f"tasks/{split}").tobytes()
    assert imported.recipe["data"]["format"] == "minari" and imported.recipe["env"]["n_train"] == 3

    out = runner.invoke(app, ["run", str(store_path)])       # bcq → reward → relabel → distill → eval → probe
    assert out.exit_code == 0, out.output
    assert "✓ collect: skipped" in out.output
    for key in ("bcq", "reward", "relabel", "distill/mbml", "eval/mbml", "probe/mbml"):
        assert f"✓ {key}: done in" in out.output, key
    assert Store.open(store_path).read_array("eval/mbml/test/returns").shape == (2, 3)

    again = runner.invoke(app, ["export", str(collected), "--format", "minari"])
    assert again.exit_code == 2 and "already there" in again.output


def point_goal_dataset(dataset_id: str, goal, episodes=4, scale=2.0, obs_dim=2, seed=0, params=True):
    """A dataset of random-action episodes in our point_goal env, written by Minari itself, with an
    action space of ±`scale` (the env sees action / scale)."""
    import gymnasium as gym
    env = envs.get("point_goal").make_env(np.asarray(goal), 20)
    rng = np.random.default_rng(seed)
    buffers = []
    for e in range(episodes):
        obs, _ = env.reset(seed=e)
        o, a, r, term, trunc = [np.pad(obs, (0, obs_dim - 2))], [], [], [], []
        done = False
        while not done:
            act = rng.uniform(-scale, scale, 2).astype(np.float32)
            obs, rew, te, tr, _ = env.step(act / scale)
            o.append(np.pad(obs, (0, obs_dim - 2)))
            a.append(act), r.append(rew), term.append(te), trunc.append(tr)
            done = te or tr
        buffers.append(EpisodeBuffer(observations=np.asarray(o, np.float32), actions=np.asarray(a),
                                     rewards=np.asarray(r), terminations=np.asarray(term),
                                     truncations=np.asarray(trunc)))
    ds = minari.create_dataset_from_buffers(
        dataset_id, buffers, observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
        action_space=gym.spaces.Box(-scale, scale, (2,), np.float32), algorithm_name="random",
        author="tests", author_email="none", code_permalink="tests", description="random point_goal",
        data_format="hdf5")
    if params:
        ds.storage.update_metadata({"task_params": list(map(float, goal))})
    return ds


def test_minari_native_dataset_actions_rescaled_and_scale_recorded(datasets_root, tmp_path):
    goals = [[1.0, 0.0], [0.0, 1.0]]
    made = [point_goal_dataset(f"lab/reach/goal-{k}-v0", g, seed=k) for k, g in enumerate(goals)]
    path = tmp_path / "lab.zarr"
    out = runner.invoke(app, ["import", "minari", "lab/reach", "--env", "point_goal", "--store", str(path),
                              "--recipe", SMOKE])
    assert out.exit_code == 0, out.output
    store = Store.open(path)
    np.testing.assert_array_equal(store.read_array("tasks/train"), goals)
    low, high = action_scale(store)
    np.testing.assert_array_equal(low, [-2, -2]) and np.testing.assert_array_equal(high, [2, 2])
    for k, ds in enumerate(made):
        ep = next(iter(ds.iterate_episodes()))
        got = rows(store, k)
        n = len(ep.rewards)
        np.testing.assert_allclose(got["act"][:n], ep.actions / 2.0, rtol=0, atol=1e-7)      # in [-1, 1]
        np.testing.assert_allclose(original_units(got["act"][:n], low, high), ep.actions, atol=1e-6)
        np.testing.assert_array_equal(got["obs"][:n], ep.observations[:-1])
        np.testing.assert_array_equal(got["next_obs"][:n], ep.observations[1:])
        np.testing.assert_array_equal(got["truncated"][:n], ep.truncations)
        # the stored reward is point_goal's reward of the stored transition
        want = envs.get("point_goal").reward(got["obs"], got["act"], got["next_obs"], got["info"], goals[k])
        np.testing.assert_allclose(got["rew"], want, atol=1e-6)


def one_line_exit_2(out, *needles):
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_refusals_name_the_dataset(datasets_root, tmp_path):
    point_goal_dataset("lab/a-v0", [1.0, 0.0], scale=1.0)
    point_goal_dataset("lab/wide-v0", [0.0, 1.0], scale=1.0, obs_dim=3)
    point_goal_dataset("lab/bare-v0", [0.0, 1.0], scale=1.0, params=False)
    store = str(tmp_path / "x.zarr")
    one_line_exit_2(runner.invoke(app, ["import", "minari", "lab/a-v0", "lab/wide-v0", "--store", store]),
                    "lab/wide-v0", "observation size")
    one_line_exit_2(runner.invoke(app, ["import", "minari", "lab/a-v0", "lab/bare-v0", "--store", store]),
                    "lab/bare-v0", "no task parameters", "--tasks")
    one_line_exit_2(runner.invoke(app, ["import", "minari", "lab/nothing-v0", "--store", store]),
                    "lab/nothing-v0", "never downloads")
    one_line_exit_2(runner.invoke(app, ["import", "minari", "lab/a-v0", "--env", "half_cheetah", "--store", store]),
                    "unknown distribution")
    assert not Path(store).exists()                       # refused before anything is written

    tasks = tmp_path / "tasks.csv"                        # the missing parameters from a file
    tasks.write_text("lab/a-v0,1.0,0.0\nbare-v0,0.5,0.5\n")
    out = runner.invoke(app, ["import", "minari", "lab/a-v0", "lab/bare-v0", "--env", "point_goal",
                              "--tasks", str(tasks), "--store", store])
    assert out.exit_code == 0, out.output
    np.testing.assert_array_equal(Store.open(store).read_array("tasks/train"), [[1.0, 0.0], [0.5, 0.5]])
    bad = tmp_path / "tasks.yaml"
    bad.write_text("- [1.0, 0.0, 3.0]\n- [0.5, 0.5, 3.0]\n")
    one_line_exit_2(runner.invoke(app, ["import", "minari", "lab/a-v0", "lab/bare-v0", "--env", "point_goal",
                                        "--tasks", str(bad), "--store", str(tmp_path / "y.zarr")]),
                    "3 task parameters", "point_goal takes 2")
