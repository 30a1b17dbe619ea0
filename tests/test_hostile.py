"""Issue 17: a hostile or careless user. One test per finding, through the CLI (real processes for
kills and for two writers): nothing outside the store is touched, one writer at a time, damaged
chunks and divergence are caught, bad input ends in one line and exit 2, never a traceback."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from mbml_cli.views.cli import app
from mbml_cli.core.store import Store
from mbml_cli.errors import StoreError
from trained_store import SMALL, trained  # noqa: F401  (a fixture)
from store_equal import differences

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "recipes" / "smoke.yaml")
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
runner = CliRunner()


def mbml(*args):
    """In-process CLI: (exit code, stdout, stderr); an exception other than exit fails the test."""
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"mbml {args[:2]}: {type(result.exception).__name__}: {result.exception}")
    return result.exit_code, result.stdout, result.stderr


def proc(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mbml_cli.views.cli", *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=timeout)


def one_error(code, stderr, fragment):
    """Exit 2 with exactly one `error:` line on stderr holding `fragment`, and no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr and len(errors) == 1, stderr[-2000:]
    assert fragment in errors[0], errors[0]
    return errors[0]


def snapshot(folder: Path) -> dict:
    """Every file below `folder` (links not followed) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def copy(trained, tmp_path):
    target = tmp_path / "copy.zarr"
    shutil.copytree(trained, target, symlinks=True)
    return target


# ---- 1. the store's root is a wall -------------------------------------------------------------------
def test_symlinked_eval_group_writes_nothing_outside(copy, tmp_path):
    outside = tmp_path / "outside"
    shutil.move(str(copy / "eval"), str(outside))
    (copy / "eval").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    code, _, err = mbml("eval", copy)
    one_error(code, err, "eval is a symbolic link")
    assert snapshot(outside) == before


def test_relabel_link_into_other_store_deletes_nothing(trained, tmp_path):
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    shutil.copytree(trained, a)
    shutil.copytree(trained, b)
    shutil.rmtree(a / "relabel")
    (a / "relabel").symlink_to(b / "relabel", target_is_directory=True)
    before = snapshot(b)
    code, _, err = mbml("relabel", a, "--force")
    one_error(code, err, "relabel is a symbolic link")
    assert snapshot(b) == before


def test_wall_checks_every_write_after_open(copy, tmp_path):
    store = Store.open(copy, mode="r+")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (copy / "planted").symlink_to(outside, target_is_directory=True)     # appears after the store was opened
    for write in (lambda: store.write_array("planted/x", np.zeros(3)), lambda: store.delete("planted"),
                  lambda: store.save_weights("planted/w", {"x": np.zeros(2)}),
                  lambda: store.append_rows("planted/t", {"a": np.zeros(2)})):
        with pytest.raises(StoreError, match="planted: a symbolic link"):
            write()
    with pytest.raises(StoreError, match="not a plain path"):
        store.write_array("../escape", np.zeros(1))
    assert list(outside.iterdir()) == [] and not (copy.parent / "escape").exists()


# ---- 2. one writer per store ---------------------------------------------------------------------------
def test_two_runs_started_together_one_refused_other_equals_clean(trained, tmp_path):
    store = tmp_path / "both.zarr"
    cmd = [sys.executable, "-m", "mbml_cli.views.cli", "run", SMOKE, "--store", str(store), *SMALL]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
            for _ in range(2)]
    results = [(p.wait(300), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    one_error(2, refused, "another mbml is writing to this store (pid ")
    assert differences(str(trained), str(store)) == []
    assert [p.name for p in tmp_path.iterdir()] == ["both.zarr"]      # no .tmp-<pid> directory left behind


HOLDER = textwrap.dedent("""
    import sys, time
    from mbml_cli.core import writer
    writer.acquire(sys.argv[1], command="holder")
    print("held", flush=True)
    time.sleep(120)
""")


def test_second_writer_refused_naming_holder_readers_free_dead_holder_taken_over(copy):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(copy)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = proc("collect", copy)
        line = one_error(p.returncode, p.stderr, f"pid {holder.pid} on ")
        assert "`holder`" in line
        assert proc("info", copy).returncode == 0                    # readers never need the lock
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    p = proc("collect", copy)                                         # the holder is gone: taken over, and said
    assert p.returncode == 0, p.stderr
    assert f"took over the writer lock of pid {holder.pid}" in p.stderr
    assert json.loads((copy / ".mbml-writer").read_text() or "{}") == {}    # released cleanly at the end


# ---- 3. crash-safe saves -------------------------------------------------------------------------------
KILL_IN_SAVE = (ROOT / "bench" / "kill_resume.py").read_text().split('IN_SAVE = textwrap.dedent("""')[1].split('""")')[0]


# bench/kill_resume.py does 20 kills at random; here: mid-BCQ (a `best` save) and while BCQ writes
# its final weights and per-task records (task 0 already marked done when task 1's save is killed)
@pytest.mark.parametrize("save_at, array_at", [(7, 2), ("models/bcq/final/1", 2)])
def test_kill_inside_a_weight_save_then_rerun_equals_clean(trained, tmp_path, save_at, array_at):
    store = tmp_path / "killed.zarr"
    args = ["run", SMOKE, "--store", str(store), *SMALL]
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL_IN_SAVE), str(save_at), str(array_at), *args],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    rerun = proc(*args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert differences(str(trained), str(store)) == []


def test_half_deleted_idle_slot_is_cleared(copy):
    store = Store.open(copy)
    group = "models/distill/mbml/final"
    idle = "b" if store.root[group].attrs["current"] == "a" else "a"
    slot = copy / group / idle
    shutil.copytree(copy / group / store.root[group].attrs["current"], slot, dirs_exist_ok=True)
    (slot / "zarr.json").unlink()              # a kill mid-delete: the slot's arrays remain, its group is gone
    code, _, err = mbml("distill", copy, "--force")
    assert code == 0, err
    assert Store.open(copy).load_weights(group)[0]


# ---- 4. checksums --------------------------------------------------------------------------------------
def chunk_files(root: Path, top: str):
    return [p for p in sorted((root / top).rglob("c/*")) if p.is_file()] + \
           [p for p in sorted((root / top).rglob("c/*/*")) if p.is_file()]


def flip(path: Path, at: int = -7) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_any_weight_or_data_chunk_is_reported(copy):
    from mbml_cli.core.guard import verify
    flipped = set()
    for top in ("models", "data", "relabel"):
        for chunk in chunk_files(copy, top):
            flip(chunk, len(chunk.read_bytes()) // 2)
            flipped.add(str(chunk.relative_to(copy)).split("/c/")[0])
    checked, bad = verify(Store.open(copy))
    assert len(flipped) > 100 and {path for path, _ in bad} == flipped and checked > len(flipped)
    code, _, err = mbml("info", copy, "--check")
    one_error(code, err, f"{len(flipped)} of {checked} arrays damaged")


def test_damaged_weight_chunk_stops_eval_naming_the_array(copy):
    store = Store.open(copy)
    group = "models/distill/mbml/final"
    slot = store.root[group].attrs["current"]
    chunk = chunk_files(copy, f"{group}/{slot}")[0]
    array = str(chunk.relative_to(copy)).split("/c/")[0]
    flip(chunk)
    before = store.read_array("eval/mbml/test/returns")
    code, _, err = mbml("eval", copy)
    one_error(code, err, f"{array}: cannot be read (a chunk failed its crc32c checksum")
    assert np.array_equal(Store.open(copy).read_array("eval/mbml/test/returns"), before)


def test_damaged_data_chunk_stops_bcq(copy):
    flip(chunk_files(copy, "data/train/1/rew")[0])
    code, _, err = mbml("bcq", copy, "--force")
    one_error(code, err, "data/train/1/rew: cannot be read (a chunk failed its crc32c checksum")


# ---- 5. divergence stops the stage -----------------------------------------------------------------------
def test_collect_divergence_stops_with_one_line_and_no_nan_in_data(tmp_path):
    store = tmp_path / "div.zarr"
    code, _, err = mbml("collect", SMOKE, "--set", "collect.lr=1.0e+6", "--set", f"store={store}",
                        "--set", "collect.checkpoint_every=50", "--set", "threads=1")
    line = one_error(code, err, "collect diverged at step 100: ")
    assert "loss" in line or "alpha" in line
    s = Store.open(store)
    assert s.stage("collect")["status"] == "failed"
    assert s.has_weights("models/collect/checkpoint/all")                 # the last good checkpoint
    for i in range(3):
        rows = s.read_rows(f"data/train/{i}")
        assert len(rows["obs"]) == 50
        assert all(np.isfinite(rows[c]).all() for c in ("obs", "act", "rew", "next_obs"))


@pytest.mark.parametrize("stage, fragment", [("bcq", "bcq diverged at step "), ("reward", "reward diverged at step ")])
def test_bcq_and_reward_divergence_stop_the_stage(copy, stage, fragment):
    before = Store.open(copy).load_weights("models/reward/reward" if stage == "reward" else "models/bcq/final/0")[0]
    code, _, err = mbml(stage, copy, "--force", "--set", f"{stage}.lr=1.0e+6")
    one_error(code, err, fragment)
    s = Store.open(copy)
    assert s.stage(stage)["status"] == "failed"
    if stage == "reward":      # the reward models are only written once trained without divergence
        after = s.load_weights("models/reward/reward")[0]
        assert all(np.array_equal(before[k], after[k]) for k in before)


# ---- 6. input limits -----------------------------------------------------------------------------------------
def recipe(tmp_path, body, name="r.yaml"):
    path = tmp_path / name
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body)
    return path


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9)) + \
    "name: bomb\ncollect: {hidden: *j}\n"


@pytest.mark.parametrize("body, fragment", [
    (BOMB, "aliases (*name) are not allowed"),
    ("name: x\n" + "# padding\n" * 200_000, "larger than the 1,000,000 a recipe may have"),
    (bytes(range(256)) * 4, "not UTF-8 text"),
    ("name: x\nenv: {name: point_goal}\n".encode("utf-16"), "not UTF-8 text"),
    ("name: x\nseed: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than 32 levels deep"),
    ('name: "a\\0b"\n', "name: 'a\\x00b': must not contain control characters"),
    ('name: "run\\e[31mred"\n', "must not contain control characters"),
    ("name: x\ncollect: {hidden: [1e8, 1e8]}\n", "collect.hidden: expected a list of positive integers"),
    ("name: x\ncollect: {hidden: [100000000, 100000000]}\n", "collect.hidden: expected a list of positive integers"),
    ("name: x\nenv: {n_train: 1000000000000}\n", "env.n_train: 1000000000000 out of range"),
    ("name: ../../../tmp/x\n", "name: '../../../tmp/x': must be a plain name"),
    ("", "empty recipe"),
    ("name: x\nseed: 1\nseed: 2\n", "line 3: duplicate key 'seed'"),
    ("name: x\nseed: 100000000000000000000000000000\n", "seed: 100000000000000000000000000000 out of range, must be [0, 4294967295]"),
    ("name: x\neval: {repeats: 10000000}\n", "eval.repeats: 10000000 out of range"),
    ("name: x\ndistill: {lr: .nan}\n", "distill.lr: nan is not a finite number"),
    ("name: x\ncollect: {hidden: " + "x" * 100_000 + "}\n", "collect.hidden: expected list, got str 'xxxx"),
])
def test_bad_recipes_end_in_one_short_line(tmp_path, body, fragment):
    t0 = time.perf_counter()
    code, _, err = mbml("recipe", recipe(tmp_path, body))
    line = one_error(code, err, fragment)
    assert len(line) < 400 and time.perf_counter() - t0 < 5


def test_yaml_12_numbers_and_set(tmp_path):
    path = recipe(tmp_path, "extends: " + SMOKE + "\ndistill: {lr: 3e-4}\ncollect: {lr: 1e-3}\n")
    code, out, err = mbml("recipe", path, "--set", "bcq.lr=1e6")
    assert code == 0, err
    import yaml
    doc = yaml.safe_load(out)
    assert doc["distill"]["lr"] == 3e-4 and doc["collect"]["lr"] == 1e-3 and doc["bcq"]["lr"] == 1e6


def test_sizes_beyond_memory_are_refused_before_allocation(tmp_path):
    t0 = time.perf_counter()
    code, _, err = mbml("run", SMOKE, "--store", tmp_path / "big.zarr", "--set", "collect.steps=900000000",
                        "--set", "env.n_train=10000")
    one_error(code, err, "collect.steps: would need about ")
    assert "GiB of memory (this machine has" in err and time.perf_counter() - t0 < 10
    assert not (tmp_path / "big.zarr").exists()


def test_markup_and_escapes_in_names_and_paths_are_printed_literally(tmp_path):
    path = recipe(tmp_path, f"extends: {SMOKE}\nname: '[bold]x'\nstages: []\n")
    store = tmp_path / "[bold]s.zarr"
    code, out, err = mbml("run", path, "--store", store)
    assert code == 0, err
    assert "run [bold]x → " in out and "[bold]s.zarr" in out
    code, out, err = mbml("info", store)
    assert code == 0 and "[bold]x" in out
    code, _, err = mbml("info", tmp_path / "no\x1b[31m.zarr")
    line = one_error(code, err, "no such store")
    assert "\x1b" not in line


def test_store_settings_url_without_package_and_file(tmp_path):
    code, _, err = mbml("run", SMOKE, "--store", "http://127.0.0.1:9/x.zarr")
    one_error(code, err, "http:// stores need fsspec[http] (aiohttp)")
    (tmp_path / "f").write_text("x")
    code, _, err = mbml("run", SMOKE, "--store", tmp_path / "f")
    one_error(code, err, "a file, not a store")


# ---- 7. stores from elsewhere ------------------------------------------------------------------------------
def set_attrs(store: Path, path: str, **attrs):
    group = zarr.open_group(str(store), mode="r+")
    node = group[path] if path else group
    node.attrs.update(attrs)


def stored_recipe(store: Path, section: str, key: str, value):
    group = zarr.open_group(str(store), mode="r+")
    r = dict(group.attrs["recipe"])
    if section:
        r[section] = {**r[section], key: value}
    else:
        r[key] = value
    group.attrs["recipe"] = r


def test_eval_on_crafted_metadata_is_one_line(copy):
    group = "models/distill/mbml/final"
    meta = dict(zarr.open_group(str(copy), mode="r")[group].attrs["meta"])
    cases = [
        (lambda: set_attrs(copy, group, meta={k: v for k, v in meta.items() if k != "act_dim"}), "act_dim"),
        (lambda: set_attrs(copy, group, meta={**meta, "q_hidden": [10 ** 8, 10 ** 8]}), "'q_hidden' is [100000000"),
        (lambda: set_attrs(copy, group, meta={**meta, "q_hidden": [17, 16]}), "stored weights do not fit"),
        (lambda: set_attrs(copy, group, current="z"), "damaged weights record"),
        (lambda: stored_recipe(copy, "env", "name", "nowhere"), "env.name: unknown distribution"),
        (lambda: stored_recipe(copy, "eval", "episodes", 10 ** 12), "eval.episodes: 1000000000000 out of range"),
        (lambda: stored_recipe(copy, "", "seed", 10 ** 30), "seed: 1000000000000000000000000000000 out of range"),
    ]
    original = dict(zarr.open_group(str(copy), mode="r").attrs["recipe"])
    for craft, fragment in cases:
        craft()
        code, _, err = mbml("eval", copy)
        one_error(code, err, fragment)
        set_attrs(copy, group, meta=meta, current=zarr.open_group(str(copy), mode="r")[group].attrs.get("current"))
        set_attrs(copy, "", recipe=original)
        if zarr.open_group(str(copy), mode="r")[group].attrs["current"] not in ("a", "b"):
            set_attrs(copy, group, current="a" if (copy / group / "a").exists() else "b")


def test_info_on_junk_records_and_a_list_recipe(copy):
    set_attrs(copy, "stages/collect", progress="junk", ended=[1], started={"x": 1}, status=["\x1b[2J"])
    code, out, err = mbml("info", copy)
    assert code == 0, err
    assert "\x1b" not in out
    set_attrs(copy, "data/train/0", n="many")
    code, _, err = mbml("info", copy)
    one_error(code, err, "data/train/0: attribute 'n' is 'many'")
    set_attrs(copy, "", recipe=[1, 2, 3])
    code, _, err = mbml("info", copy)
    one_error(code, err, "attribute 'recipe' is a list, not a mapping")


def test_store_made_on_a_gpu_evaluates_on_a_cpu(copy):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    stored_recipe(copy, "", "device", "cuda")
    code, out, err = mbml("eval", copy)
    assert code == 0, err
    code, _, err = mbml("run", SMOKE, "--set", "device=cuda", "--store", copy.parent / "new.zarr")
    one_error(code, err, "device: cuda, but this machine has no CUDA device")
