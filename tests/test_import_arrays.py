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
    # no environment (issue 34, item 9): no column of nan, no score "— @-1", no hint at --unseen
    assert "nan" not in out.output and "@-1" not in out.output and "--unseen" not in out.output, out.output
    assert "no environment to run the final" in out.output and "offline check (no environment)" in out.output
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


def one_line_exit_2(out, *needles):
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_non_finite_values_are_refused_naming_file_array_and_row(collected, tmp_path):
    """NaN or ±inf in any float array (issue 34, item 3) is refused at import: one line naming the
    file, the array and the first bad row of the file; no store is made."""
    _, batches, goals = collected
    b = {k: batches[0][k].copy() for k in ("obs", "act", "rew", "next_obs", "terminal")}
    cases = {"rew": ("rew", 7, np.nan), "obs": ("obs", 3, np.inf), "next_obs": ("next_obs", 150, -np.inf),
             "act": ("act", 0, np.nan), "info": ("info", 9, np.nan)}
    store = tmp_path / "x.zarr"
    for name, (key, row, value) in cases.items():
        a = {**b, "info": np.zeros((len(b["rew"]), 1), np.float32)}
        a[key] = a[key].copy()
        a[key][row] = value
        np.savez(tmp_path / f"{name}.npz", **a, task_params=[1.0, 0.0])
        out = runner.invoke(app, ["import", "arrays", str(tmp_path / f"{name}.npz"), "--store", str(store)])
        one_line_exit_2(out, f"{name}.npz: {key} has a non-finite value", f"at row {row}")
        assert not store.exists()
    for key, value, row in (("task_params", [1.0, np.nan], 1), ("action_low", [-1.0, -np.inf], 1),
                            ("action_high", [np.nan, 1.0], 0)):
        np.savez(tmp_path / f"{key}.npz", **b, **{"task_params": [1.0, 0.0], key: value})
        out = runner.invoke(app, ["import", "arrays", str(tmp_path / f"{key}.npz"), "--store", str(store)])
        one_line_exit_2(out, f"{key}.npz: {key} has a non-finite value", f"at row {row}")
    task = np.repeat([0, 1], 100)                       # a file with a task column: the file's own row
    cat = {k: np.concatenate([v[:100], v[:100]]) for k, v in b.items()}
    cat["rew"][160] = np.nan
    np.savez(tmp_path / "tasks.npz", **cat, task=task, task_params=goals[:2])
    out = runner.invoke(app, ["import", "arrays", str(tmp_path / "tasks.npz"), "--store", str(store)])
    one_line_exit_2(out, "tasks.npz: rew has a non-finite value (nan) at row 160")
    huge = {**b, "obs": b["obs"].astype(np.float64)}     # finite in the file, ±inf in the store's float32
    huge["obs"][5, 0] = 1e300
    np.savez(tmp_path / "huge.npz", **huge, task_params=[1.0, 0.0])
    out = runner.invoke(app, ["import", "arrays", str(tmp_path / "huge.npz"), "--store", str(store)])
    one_line_exit_2(out, "huge.npz: obs has a non-finite value (inf) at row 5")
    assert not store.exists()


def npz_from_headers(path: Path, arrays: dict, data: bytes = b"\0" * 64) -> None:
    """An .npz whose .npy headers declare `arrays` ({name: (shape, dtype)}) over a few bytes of data."""
    import io
    import zipfile
    with zipfile.ZipFile(path, "w") as z:
        for name, (shape, dtype) in arrays.items():
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(head, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                        "fortran_order": False, "shape": shape})
            z.writestr(f"{name}.npy", head.getvalue() + data)


def test_declared_shapes_are_checked_before_loading(tmp_path, monkeypatch):
    """A tiny .npz whose headers declare 200 million rows (issue 34, item 4) is refused from its
    headers alone — in moments, without allocating — naming the file, the array, its declared shape
    and the memory estimate against the machine's; so are row counts that disagree."""
    import resource
    import time
    from mbml_cli.recipe import limits
    monkeypatch.setattr(limits, "machine_memory", lambda: 16 * 2 ** 30)
    N = 200_000_000
    npz_from_headers(tmp_path / "lie.npz", {"obs": ((N, 17), np.float64), "act": ((N, 6), np.float32),
                                            "rew": ((N,), np.float32), "next_obs": ((N, 17), np.float64),
                                            "terminal": ((N,), bool)})
    store = tmp_path / "x.zarr"
    peak, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    out = runner.invoke(app, ["import", "arrays", str(tmp_path / "lie.npz"), "--store", str(store)])
    assert time.monotonic() - start < 20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200 * 1024      # KiB: under 200 MiB more
    one_line_exit_2(out, "lie.npz: obs declares shape (200000000, 17) float64", "this machine has 16.0 GiB")
    assert "GiB of memory" in out.output and not store.exists()

    npz_from_headers(tmp_path / "rows.npz", {"obs": ((600, 2), np.float32), "act": ((600, 2), np.float32),
                                             "rew": ((10_000_000,), np.float32), "next_obs": ((600, 2), np.float32),
                                             "terminal": ((600,), bool)})
    out = runner.invoke(app, ["import", "arrays", str(tmp_path / "rows.npz"), "--store", str(store)])
    one_line_exit_2(out, "rows.npz: rew declares shape (10000000,), obs (600, 2): the row counts differ")
    assert not store.exists()
