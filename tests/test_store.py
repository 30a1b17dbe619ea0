"""The experiment store: bit-exact weights, append-only tables, a concurrent reader, refusals."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import zarr

from mbml_cli.core.store import FORMAT, Store, newest_store
from mbml_cli.errors import StoreError


@pytest.fixture
def store(tmp_path):
    return Store.create(tmp_path / "run.zarr", {"recipe": {"name": "t"}})


def test_create_is_atomic_and_readable_with_plain_zarr(tmp_path, store):
    assert [p.name for p in tmp_path.iterdir()] == ["run.zarr"]     # no temp dir left behind
    root = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    assert root.attrs["mbml"]["format"] == FORMAT and root.attrs["recipe"] == {"name": "t"}


def test_weights_round_trip_bit_exact(store):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    extra = {"log_alpha": torch.tensor(-1.2345678, dtype=torch.float64),
             "counts": torch.arange(6, dtype=torch.int64).reshape(2, 3)}
    state = {**net.state_dict(), **extra}
    store.save_weights("models/test/net", state, {"step": 12})
    loaded, meta = Store.open(store.path).load_weights("models/test/net")
    assert meta == {"step": 12} and set(loaded) == set(state)
    for name, t in state.items():
        assert loaded[name].dtype == t.numpy().dtype
        assert np.array_equal(loaded[name], t.numpy()), name        # bit for bit
    # the second save goes to the other slot; the first stays readable until the flip
    first = store.root["models/test/net"].attrs["current"]
    store.save_weights("models/test/net", {"w": np.ones(3, np.float32)}, {"step": 13})
    assert store.root["models/test/net"].attrs["current"] != first
    w, meta = store.load_weights("models/test/net")
    assert set(w) == {"w"} and meta["step"] == 13


def test_weights_are_plain_arrays_not_pickles(store):
    store.save_weights("models/x", {"w": np.arange(4, dtype=np.float32)})
    files = [p for p in (store.root.store.root / "models" / "x").rglob("*") if p.is_file()]
    metas = [json.loads(p.read_text()) for p in files if p.name == "zarr.json"]
    arrays = [m for m in metas if m["node_type"] == "array"]
    assert arrays and all(m["data_type"] == "float32" for m in arrays)
    assert not any(b"pickle" in p.read_bytes() or p.suffix in (".pt", ".pkl") for p in files)


def test_append_rows_and_rollback(store):
    for k in range(3):
        store.append_rows("data/train/0", {"obs": np.full((5, 2), k, np.float32), "rew": np.full(5, k, np.float64)})
    assert store.rows("data/train/0") == 15
    rows = store.read_rows("data/train/0")
    assert rows["obs"].shape == (15, 2) and np.array_equal(rows["rew"], np.repeat([0., 1, 2], 5))
    store.set_rows("data/train/0", 5)               # resume from a checkpoint at 5 rows
    store.append_rows("data/train/0", {"obs": np.full((1, 2), 9, np.float32), "rew": np.array([9.0])})
    rows = store.read_rows("data/train/0")
    assert np.array_equal(rows["rew"], [0, 0, 0, 0, 0, 9.0])
    with pytest.raises(ValueError, match="differ"):
        store.append_rows("data/train/0", {"obs": np.zeros((1, 2), np.float32)})


def test_metrics_and_stage_records(store):
    store.log("bcq", "train", {"step": 1, "critic_loss": 0.5})
    store.log("bcq", "train", {"step": 2, "critic_loss": 0.25})
    m = store.metrics("bcq", "train")
    assert np.array_equal(m["step"], [1, 2]) and np.array_equal(m["critic_loss"], [0.5, 0.25])
    store.set_stage("bcq", status="running", progress=0.5)
    store.set_stage("bcq", status="done")
    assert store.stages()["bcq"] == {"status": "done", "progress": 0.5}


def test_foreign_and_incompatible_stores_are_refused(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    with pytest.raises(StoreError, match="not an mbml store"):
        Store.open(foreign)
    with pytest.raises(StoreError, match="not an mbml store"):
        Store.create(foreign, {})           # never writes into someone else's directory
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    plain.attrs["x"] = 1
    with pytest.raises(StoreError, match="not an mbml store"):
        Store.open(tmp_path / "plain.zarr")
    future = zarr.open_group(str(tmp_path / "future.zarr"), mode="w")
    future.attrs["mbml"] = {"format": FORMAT + 1}
    with pytest.raises(StoreError, match="incompatible"):
        Store.open(tmp_path / "future.zarr")
    with pytest.raises(StoreError, match="no such store"):
        Store.open(tmp_path / "missing.zarr")


def test_fsspec_url(tmp_path):
    s = Store.create(f"file://{tmp_path}/url.zarr", {"recipe": {}})
    s.log("x", "y", {"a": 1.0})
    assert Store.open(str(tmp_path / "url.zarr")).metrics("x", "y")["a"].tolist() == [1.0]


def test_newest_store(tmp_path):
    with pytest.raises(StoreError, match="no stores"):
        newest_store(tmp_path)
    Store.create(tmp_path / "a.zarr", {})
    b = Store.create(tmp_path / "b.zarr", {})
    b.log("s", "m", {"v": 1})
    assert newest_store(tmp_path).name in ("a.zarr", "b.zarr")


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from mbml_cli.core.store import Store
    s = Store.open(sys.argv[1], mode="r+")
    for k in range(1, 201):
        # every row k is 64 copies of k, so a torn or stale read is visible
        s.append_rows("data/train/0", {"obs": np.full((37, 64), k, np.float32), "step": np.full(37, k)})
    print("done", flush=True)
""")


def test_concurrent_reader_sees_consistent_rows(store):
    store.append_rows("data/train/0", {"obs": np.zeros((1, 64), np.float32), "step": np.zeros(1, np.int64)})
    writer = subprocess.Popen([sys.executable, "-c", WRITER, store.path], stdout=subprocess.PIPE, text=True)
    seen = set()
    while writer.poll() is None or len(seen) < 2:
        reader = Store.open(store.path)              # reopen each poll, as the dashboard does
        rows = reader.read_rows("data/train/0")
        n = len(rows["step"])
        assert rows["obs"].shape == (n, 64)
        expected = np.concatenate([[0], np.repeat(np.arange(1, (n - 1) // 37 + 1), 37)])
        assert (n - 1) % 37 == 0, n                  # whole appends only
        assert np.array_equal(rows["step"], expected)
        assert np.array_equal(rows["obs"], np.repeat(expected[:, None], 64, axis=1).astype(np.float32))
        seen.add(n)
        if writer.poll() is not None and n == 1 + 200 * 37:
            break
    assert writer.wait() == 0 and writer.stdout.read().strip() == "done"
    seen.add(len(Store.open(store.path).read_rows("data/train/0")["step"]))     # the writer may end between reads
    assert max(seen) == 1 + 200 * 37 and len(seen) >= 2       # it read while the writer appended
