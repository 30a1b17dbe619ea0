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

    out = runner.invoke(app, ["export", str(path), "--format", "minari", "--out", str(tmp_path / "out")])
    assert out.exit_code == 0, out.output          # exported back: its recovered env takes actions in ±2 too
    ds = minari_dataset(tmp_path / "out", f"mbml/{store.recipe['name']}/task-1-v0")
    env = ds.recover_environment()
    assert env.action_space == ds.action_space and float(env.action_space.high[0]) == 2.0
    np.testing.assert_array_equal(env.get_wrapper_attr("task"), goals[1])
    env.close()


def one_line_exit_2(out, *needles):
    """`out` (a result, or the text after a stage's header line) is one error line; exit code 2."""
    if not isinstance(out, str):
        assert out.exit_code == 2, out.output
    text = out if isinstance(out, str) else out.output
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), text
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


def random_dataset(dataset_id: str, obs_dim: int, act_dim: int, params, episodes=3, steps=10, features=None,
                   seed=0, poison=None):
    """A dataset of random episodes written by Minari itself (no environment): `features` (n or None)
    per-step infos['features'] (row 0: the reset); `poison` (column, episode, step, value) plants one
    value."""
    import gymnasium as gym
    rng = np.random.default_rng(seed)
    buffers = []
    for e in range(episodes):
        cols = {"observations": rng.normal(size=(steps + 1, obs_dim)).astype(np.float32),
                "actions": rng.uniform(-1, 1, (steps, act_dim)).astype(np.float32),
                "rewards": rng.normal(size=steps), "terminations": np.zeros(steps, bool),
                "truncations": np.eye(steps, dtype=bool)[-1]}
        if poison is not None and poison[1] == e:
            cols[poison[0]][poison[2]] = poison[3]
        infos = None if features is None else {"features": rng.normal(size=(steps + 1, features))}
        buffers.append(EpisodeBuffer(**cols, infos=infos))
    ds = minari.create_dataset_from_buffers(
        dataset_id, buffers, observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
        action_space=gym.spaces.Box(-1, 1, (act_dim,), np.float32), algorithm_name="random", author="tests",
        author_email="none", code_permalink="tests", description="random", data_format="hdf5")
    ds.storage.update_metadata({"task_params": list(map(float, params))})
    return ds


def test_non_finite_minari_values_are_refused(datasets_root, tmp_path):
    """NaN or ±inf in a Minari dataset (issue 34, item 3): one line naming the dataset, the column
    and the first bad row of its transition stream; no store."""
    store = tmp_path / "x.zarr"
    for k, (column, name, episode, step, value, row) in enumerate((
            ("rewards", "rew", 1, 4, np.nan, 14), ("observations", "obs", 0, 3, np.inf, 3),
            ("observations", "next_obs", 2, 10, -np.inf, 29), ("actions", "act", 0, 0, np.nan, 0))):
        random_dataset(f"lab/bad-{k}-v0", 2, 2, [1.0, 0.0], poison=(column, episode, step, value))
        out = runner.invoke(app, ["import", "minari", f"lab/bad-{k}-v0", "--env", "point_goal", "--store", str(store)])
        one_line_exit_2(out, f"lab/bad-{k}-v0: {name} has a non-finite value", f"at row {row}")
    random_dataset("lab/nan-params-v0", 2, 2, [1.0, np.nan])
    out = runner.invoke(app, ["import", "minari", "lab/nan-params-v0", "--env", "point_goal", "--store", str(store)])
    one_line_exit_2(out, "lab/nan-params-v0: task_params has a non-finite value (nan) at row 1")
    assert not store.exists()


def test_missing_features_name_what_to_record(datasets_root, tmp_path):
    """Minari data for a built-in distribution without infos['features'] (issue 34, item 10): the
    refusal names the features to record and points at the README's recipe."""
    random_dataset("lab/cheetah-v0", 17, 6, [0.7])
    out = runner.invoke(app, ["import", "minari", "lab/cheetah-v0", "--env", "halfcheetah_vel",
                              "--store", str(tmp_path / "x.zarr")])
    one_line_exit_2(out, "lab/cheetah-v0: episodes without infos['features']", "[x_velocity]", "README")
    random_dataset("lab/ant-v0", 27, 8, [0.5])
    out = runner.invoke(app, ["import", "minari", "lab/ant-v0", "--env", "ant_dir", "--set", "env.observation=compact",
                              "--store", str(tmp_path / "x.zarr")])
    one_line_exit_2(out, "[x_velocity, y_velocity, contact_sq]")
    random_dataset("lab/cheetah-v1", 17, 6, [0.7], features=1)        # recorded: imported
    out = runner.invoke(app, ["import", "minari", "lab/cheetah-v1", "--env", "halfcheetah_vel",
                              "--store", str(tmp_path / "x.zarr")])
    assert out.exit_code == 0, out.output


def test_imported_store_is_self_contained(datasets_root, tmp_path):
    """A changed env.* key re-runs the import stage (issue 34, item 11): it keeps the batches the
    store holds and never needs the source datasets again; a change that no longer fits the stored
    widths is refused in one line and the batches stay."""
    for k, goal in enumerate([[1.0, 0.0], [0.0, 1.0]]):
        point_goal_dataset(f"lab/reach/goal-{k}-v0", goal, seed=k)
    path = tmp_path / "lab.zarr"
    out = runner.invoke(app, ["import", "minari", "lab/reach", "--env", "point_goal", "--store", str(path),
                              "--recipe", SMOKE])
    assert out.exit_code == 0, out.output
    before = [rows(Store.open(path), k) for k in range(2)]
    datasets_root.rename(tmp_path / "moved")                   # the sources are gone

    out = runner.invoke(app, ["collect", str(path), "--set", "env.n_test=3"])      # only the test tasks change
    assert out.exit_code == 0 and "collect: already done with these inputs" in out.output, out.output
    out = runner.invoke(app, ["collect", str(path), "--set", "env.horizon=25"])     # an input of the import
    assert out.exit_code == 0, out.output
    assert "kept the 2 imported tasks' batches" in out.output
    store = Store.open(path)
    assert store.recipe["env"]["n_test"] == 3 and store.stage("collect")["status"] == "done"
    for k in range(2):
        after = rows(store, k)
        assert all(after[c].tobytes() == before[k][c].tobytes() for c in after)

    out = runner.invoke(app, ["collect", str(path), "--set", "env.name=umaze_goal_m"])
    assert out.exit_code == 2 and out.output.startswith("▶ collect"), out.output     # the stage's header, then
    one_line_exit_2(out.output.split("\n", 1)[1],
                    "observations 2, actions 2; umaze_goal_m with env.observation full has 4 and 2")
    for k in range(2):
        after = rows(Store.open(path), k)
        assert all(after[c].tobytes() == before[k][c].tobytes() for c in after)


def test_export_keeps_the_stored_dtype_and_records_the_environment(datasets_root, tmp_path):
    """Export (issue 34, item 12) writes the stored dtypes (float64 observations stay float64) and an
    env spec from which Minari recovers the task's environment: the distribution's env for that
    dataset's task parameters (entry point `mbml_cli.datasets.minari_io:task_env`)."""
    rng, n = np.random.default_rng(0), 40
    obs = rng.normal(size=(n + 1, 17))
    np.savez(tmp_path / "cheetah.npz", obs=obs[:-1], next_obs=obs[1:], act=rng.uniform(-1, 1, (n, 6)),
             rew=rng.normal(size=n), terminal=np.zeros(n, bool), truncated=np.eye(n, dtype=bool)[-1],
             info=rng.normal(size=(n, 1)), task_params=[0.7])
    path = tmp_path / "cheetah.zarr"
    out = runner.invoke(app, ["import", "arrays", str(tmp_path / "cheetah.npz"), "--env", "halfcheetah_vel",
                              "--store", str(path), "--set", "name=cheetah"])
    assert out.exit_code == 0, out.output
    store = Store.open(path, mode="r+")
    stored = rows(store, 0)
    out = runner.invoke(app, ["export", str(path), "--format", "minari"])
    assert out.exit_code == 0, out.output
    ds = minari.load_dataset("mbml/cheetah/task-0-v0")
    ep = next(iter(ds.iterate_episodes()))
    assert ep.observations.dtype == stored["obs"].dtype == ds.observation_space.dtype
    assert ep.actions.dtype == stored["act"].dtype
    spec = json.loads(json.loads((datasets_root / "mbml/cheetah/task-0-v0/data/metadata.json").read_text())["env_spec"])
    assert spec["entry_point"] == "mbml_cli.datasets.minari_io:task_env"
    assert spec["kwargs"] == {"env": "halfcheetah_vel", "task": [0.7], "horizon": 1000, "observation": "full"}
    env = ds.recover_environment()
    first, _ = env.reset(seed=0)
    assert first.shape == ds.observation_space.shape and env.action_space.shape == ds.action_space.shape
    np.testing.assert_array_equal(env.get_wrapper_attr("task"), [0.7])
    nxt, reward, *_ , info = env.step(np.zeros(6, np.float32))
    want = envs.get("halfcheetah_vel").reward(first, np.zeros(6), nxt, info["features"], [0.7])
    assert reward == pytest.approx(float(want))
    env.close()

    wide = {c: v.astype(np.float64) if c in ("obs", "next_obs") else v for c, v in stored.items()}
    store.delete(layout.BATCH("train", 0))                    # a store whose batch holds float64
    store.append_rows(layout.BATCH("train", 0), wide)
    out = runner.invoke(app, ["export", str(path), "--format", "minari", "--out", str(tmp_path / "wide")])
    assert out.exit_code == 0, out.output
    ds = minari_dataset(tmp_path / "wide", "mbml/cheetah/task-0-v0")
    ep = next(iter(ds.iterate_episodes()))
    assert ep.observations.dtype == ds.observation_space.dtype == np.float64
    np.testing.assert_array_equal(ep.observations[:-1], wide["obs"][:len(ep.rewards)])


def minari_dataset(root: Path, dataset_id: str):
    import os
    previous = os.environ["MINARI_DATASETS_PATH"]
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        return minari.load_dataset(dataset_id)
    finally:
        os.environ["MINARI_DATASETS_PATH"] = previous
