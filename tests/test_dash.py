"""`mbml dash`: the reader on its own, then the app driven by Textual's pilot — on a run's store,
on an empty store, while another process writes, after the store is deleted — and one snapshot
of the main screen."""
import asyncio
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from mbml_cli.read import records, snapshot as reader
from mbml_cli.read.embedding import embedding
from mbml_cli.read.tables import TRAIN_STAGES, plot_series
from mbml_cli.views.dash import demo
from mbml_cli.views.dash.app import DashApp
from mbml_cli.views.dash.widgets import LinePlot, ReturnsTable, ScatterPlot, Series, fmt, render_plot, sparkline
from mbml_cli.core import layout
from mbml_cli.core.store import Store
from conftest import ROOT

SNAPSHOTS = Path(__file__).parent / "snapshots"
SIZE = (110, 34)


# ---- the stores ----------------------------------------------------------------------------------
def demo_store(path: Path) -> Store:
    """A deterministic store shaped like a smoke run caught in distill (mbml_cli/views/dash/demo.py)."""
    return demo.build(path)


def smoke_store(path: Path) -> Store:
    """A real `mbml run recipes/smoke.yaml` (needs every stage built)."""
    subprocess.run([sys.executable, "-m", "mbml_cli.views.cli", "run", str(ROOT / "recipes/smoke.yaml"),
                    "--store", str(path)], cwd=ROOT, check=True, capture_output=True, timeout=600)
    return Store.open(path)


RUN_STORE = demo_store          # the one-line switch: smoke_store checks the panels on a real run


@pytest.fixture(scope="module")
def run_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dash") / "run.zarr"
    RUN_STORE(path)
    return path


@pytest.fixture
def empty_path(tmp_path) -> Path:
    path = tmp_path / "new.zarr"
    Store.create(path, {"recipe": {"name": "new", "env": {"name": "point_goal"}, "algos": ["mbml"]}})
    return path


# ---- helpers -------------------------------------------------------------------------------------
def run(coro):
    return asyncio.run(coro)


async def polled(pilot, app: DashApp, count: int = 1, timeout: float = 10.0) -> None:
    """Wait until the app has applied `count` snapshots in all."""
    end = time.monotonic() + timeout
    while app.polls < count:
        assert time.monotonic() < end, "the dashboard did not poll"
        await pilot.pause(0.02)
    await pilot.pause()


def screen_text(app: DashApp) -> str:
    """The screen as plain text (what export_screenshot draws, without styles)."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True,
                      force_terminal=True, color_system=None, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def static_text(app: DashApp, selector: str) -> str:
    content = app.query_one(selector).content
    return getattr(content, "plain", str(content))


# ---- reader and drawing, no UI -------------------------------------------------------------------
def test_reader_reads_what_the_stages_write(run_path):
    store = Store.open(run_path)
    snap = reader.Reader(str(run_path)).read()
    n_train = len(store.read_array("tasks/train"))
    assert snap.error is None
    # every table under metrics/, discovered, with its row count
    assert {k: t.n for k, t in snap.tables.items()} == {
        f"{s}/{n}": store.rows(f"metrics/{s}/{n}")
        for s in store.root["metrics"].group_keys() for n in store.root[f"metrics/{s}"].group_keys()}
    for key, table in snap.tables.items():
        if table.stage in TRAIN_STAGES and table.returns():
            assert list(table.returns()) == [str(i) for i in range(n_train)], key
        for name, plot in plot_series(table).items():       # per-task columns: one plot
            assert plot.tasks in (0, n_train) and len(plot.x) == len(plot.y) <= table.n, (key, name)
    # per-task records are counted, not listed
    keys = [s.key for s in snap.stages]
    assert not any(k.split("/")[-1].isdigit() for k in keys)
    running = [k for k, rec in store.stages().items() if rec.get("status") == "running"]
    assert (records.current_stage(snap.stages) is None) == (not running and all(s.status != "running" for s in snap.stages))


def test_eta_and_stale():
    """ETA = (updated − started)(1 − p)/p − (now − updated); silence for long is flagged."""
    rec = records.StageRecord("bcq", "running", progress=0.25, started=100.0, updated=130.0)
    assert records.eta(rec, now=140.0) == pytest.approx(30 * 3 - 10)
    assert records.silent(rec, now=140.0) is None and records.silent(rec, now=130.0 + 3600) == 3600
    assert records.eta(records.StageRecord("bcq", "done", progress=1.0, started=1.0), now=2.0) is None


def test_reader_eval_scores_and_embedding(run_path):
    snap = reader.Reader(str(run_path)).read()
    store = Store.open(run_path)
    skip = store.recipe["eval"]["skip"]
    assert snap.evals
    for algo, res in snap.evals.items():
        if store.exists(f"eval/{algo}/history"):      # per-task scores over the evaluations in training
            hist = store.read_rows(f"eval/{algo}/history")
            np.testing.assert_allclose(res.history, hist["returns"][:, :, skip:].mean(-1), rtol=1e-6)
        final = f"eval/{algo}/test" if store.exists(f"eval/{algo}/test") else f"eval/{algo}/history"
        points = f"{final}/z_points" if store.exists(f"{final}/z_points") else f"{final}/z_mean"
        z = store.read_array(points)
        if final.endswith("test"):                    # PEARL: the episodes after `skip`
            np.testing.assert_allclose(res.scores, store.read_array(f"{final}/returns")[:, skip:].mean(1),
                                       rtol=1e-6)
        else:
            z = z[-1]
        emb = embedding(res.z_mean)
        assert emb.points.shape == (int(np.prod(z.shape[:-1])), 2)
        assert sorted(set(emb.labels.tolist())) == list(range(z.shape[0]))


def test_reader_reads_the_schema_and_notes_what_it_cannot(tmp_path):
    store = Store.create(tmp_path / "s.zarr", {"recipe": {"algos": ["a"], "eval": {"skip": 1}}})
    store.append_rows(layout.EVAL_HISTORY("a"), {"epoch": np.array([10.0, 20.0]),             # eval×task×ep
                                                 "returns": np.arange(24.0).reshape(2, 3, 4)})
    store.group(layout.PROBE("b")).attrs["score"] = 0.25
    test_c = layout.EVALUATION("c", "test")
    store.write_array(f"{test_c}/returns", np.zeros((2, 2, 2, 2)))                          # not understood
    store.write_array(f"{test_c}/z_mean", np.zeros((3, 2, 5)))                      # task × episode × latent
    store.append_rows(layout.METRICS("distill", "a_eval"), {"epoch": np.arange(2.0), "return_0": np.array([1.0, np.nan])})
    store.append_rows(layout.METRICS("bcq", "train"), {"iteration": np.arange(3.0), "q_0": np.ones(3),
                                                      "q_1": np.zeros(3), "lr": np.ones(3)})
    store.set_stage("collect", status="partial", message="tasks still to do: 1")
    store.set_stage("collect/0", status="done")
    snap = reader.read_snapshot(store)
    a = snap.evals["a"]
    np.testing.assert_allclose(a.history, np.arange(24.0).reshape(2, 3, 4)[:, :, 1:].mean(-1))
    np.testing.assert_allclose(a.history_x, [10, 20])
    np.testing.assert_allclose(a.scores, a.history[-1])
    assert snap.evals["b"].probe == 0.25 and snap.evals["b"].scores is None
    assert "expected (task, episode)" in snap.evals["c"].note
    assert embedding(snap.evals["c"].z_mean).points.shape == (6, 2)
    sources, rows = reader.test_returns(snap, "a")
    assert sources == ["distill/a_eval", layout.EVAL_HISTORY("a")] and [r.task for r in rows] == ["0", "1", "2"]
    assert list(rows[0].cells["distill/a_eval"][1]) == [1.0]         # NaN rows left out
    assert reader.algos(snap) == ["a", "b", "c"]
    bcq = snap.tables["bcq/train"]
    assert bcq.metric_names() == ["lr", "q"] and bcq.plot("q").tasks == 2
    np.testing.assert_allclose(bcq.plot("q").y, 0.5)
    collect = next(s for s in snap.stages if s.key == "collect")
    assert (collect.status, collect.tasks_done, collect.tasks_seen) == ("partial", 1, 1)


def test_drawing_helpers():
    assert [fmt(v) for v in (0, 1234.5, 0.01234, -2.5e-5, 3e6, None)] == \
        ["0", "1234", "0.0123", "-2.5e-05", "3.0e+06", "—"]
    assert sparkline([1, 2, 3, 4]) == "▁▃▆█" and len(sparkline(range(100), 10)) == 10
    x = np.arange(1000.0)
    text = render_plot([Series("loss", x, 100 * np.exp(-x / 100) + 1e-3)], 60, 12, "loss").plain
    lines = text.splitlines()
    assert len(lines) == 12 and all(len(line) <= 60 for line in lines) and "log" in lines[0]
    assert "log" not in render_plot([Series("q", x, -x)], 60, 12, "q").plain.splitlines()[0]


# ---- (a) a run's store: each panel shows what the store holds --------------------------------------
def test_panels_show_the_store(run_path):
    store = Store.open(run_path)
    n_train, n_test = len(store.read_array("tasks/train")), len(store.read_array("tasks/test"))

    async def go():
        app = DashApp(str(run_path), interval=60, clock=lambda: demo.NOW)
        async with app.run_test(size=SIZE) as pilot:
            await polled(pilot, app)
            # header: the run, every stage record
            header = static_text(app, "#header")
            assert store.recipe["name"] in header
            for key in (k for k, rec in store.stages().items() if rec.get("status")):
                assert key in header
            # losses: every table listed; the followed one plotted, one plot per metric, all rows
            tables = static_text(app, "#tables")
            snap = app.snapshot
            for key in reader.plot_tables(snap):
                assert key in tables
            shown = reader.default_table(snap)
            plots = list(app.query(LinePlot))
            assert [p.title for p in plots] == list(plot_series(snap.tables[shown]))
            metric = snap.tables[shown].metric_names()[0]
            assert next(p for p in plots if p.title == metric).point_count == store.rows(f"metrics/{shown}")
            # `t` steps through the tables
            await pilot.press("t")
            await pilot.pause()
            assert app.table_choice == reader.plot_tables(snap)[0]
            assert app.query(LinePlot).first().point_count > 0
            await pilot.press("l")
            await pilot.pause()
            assert {p.log_mode for p in app.query(LinePlot)} == {"log"}
            # returns: one row per training task; one per test task plus the mean
            await pilot.press("2")
            await pilot.pause()
            assert app.query_one("#train-returns", ReturnsTable).row_count == n_train
            assert app.query_one("#test-returns", ReturnsTable).row_count == n_test + 1
            # embeddings: every posterior mean of the algo with z, every test task in the legend
            await pilot.press("3")
            await pilot.pause()
            algo = app.current_algo()
            test = f"eval/{algo}/test/z_points" if store.exists(f"eval/{algo}/test/z_points") else f"eval/{algo}/test/z_mean"
            z = (store.read_array(test) if store.exists(f"eval/{algo}/test")
                 else store.read_rows(f"eval/{algo}/history")["z_mean"][-1])
            assert app.query_one(ScatterPlot).point_count == int(np.prod(z.shape[:-1]))
            legend = static_text(app, "#legend")
            assert all(f"task {t}" in legend for t in range(z.shape[0]))
            # `a` moves to the next algo; one with no eval yet says so
            await pilot.press("a")
            await pilot.pause()
            assert app.current_algo() != algo
            if app.snapshot.evals.get(app.current_algo()) is None:
                assert "No embeddings for" in static_text(app, "#emb-msg")
                assert app.query_one(ScatterPlot).point_count == 0
            await pilot.press("q")
        assert app.return_code == 0

    run(go())


# ---- (b) an empty store: "waiting" in every panel -----------------------------------------------
def test_empty_store_waits(empty_path):
    async def go():
        app = DashApp(str(empty_path), interval=60)
        async with app.run_test(size=SIZE) as pilot:
            await polled(pilot, app)
            assert "waiting: no stage has started yet" in static_text(app, "#header")
            assert "No metrics yet" in static_text(app, "#losses-msg")
            assert not app.query(LinePlot)
            assert "No training returns logged yet" in static_text(app, "#train-msg")
            assert "No evaluation of mbml yet" in static_text(app, "#test-msg")
            assert "No embeddings for mbml yet" in static_text(app, "#emb-msg")

    run(go())


def test_deleted_store_shows_a_message(tmp_path):
    path = tmp_path / "gone.zarr"
    demo.build(path)

    async def go():
        app = DashApp(str(path), interval=60, clock=lambda: demo.NOW)
        async with app.run_test(size=SIZE) as pilot:
            await polled(pilot, app)
            before = app.query(LinePlot).first().point_count
            shutil.rmtree(path)
            since = app.polls
            await pilot.press("r")
            await polled(pilot, app, since + 1)
            assert "no such store" in static_text(app, "#header")
            assert app.query(LinePlot).first().point_count == before       # the last data stays

    run(go())


# ---- (c) another process appends: the plot grows ---------------------------------------------------
WRITER = textwrap.dedent("""
    # Appends the number of rows read from each stdin line to metrics/collect/sac, then says "done".
    import sys, time
    from mbml_cli.core.store import Store
    store, total, started = Store.open(sys.argv[1], mode="r+"), int(sys.argv[2]), time.time()
    i = 0
    for line in sys.stdin:
        for _ in range(int(line)):
            i += 1
            store.log("collect", "sac", {"step": 10.0 * i, "critic_loss": 1.0 / i, "alpha": 0.5})
            store.set_stage("collect", status="running", started=started, updated=time.time(),
                            progress=i / total)
            time.sleep(0.005)
        print("done", flush=True)
""")


def test_plot_grows_while_another_process_writes(empty_path):
    batches = (1, 8, 8)

    async def go():
        app = DashApp(str(empty_path), interval=0.05)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(empty_path), str(sum(batches))],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            async with app.run_test(size=SIZE) as pilot:
                await polled(pilot, app)
                seen = []
                for rows in batches:      # the app polls while the writer appends
                    writer.stdin.write(f"{rows}\n")
                    writer.stdin.flush()
                    assert (await asyncio.to_thread(writer.stdout.readline)).strip() == "done"
                    await polled(pilot, app, app.polls + 2)     # the 2nd began after the write
                    plot = next(p for p in app.query(LinePlot) if p.title == "critic_loss")
                    seen.append(plot.point_count)
                assert seen == list(np.cumsum(batches))
                assert "now collect" in static_text(app, "#header")
        finally:
            writer.stdin.close()
            writer.wait(timeout=30)
        assert writer.returncode == 0

    run(go())


# ---- snapshot of the main screen -----------------------------------------------------------------
def test_main_screen_snapshot(tmp_path, monkeypatch):
    """The Losses screen of the demo store at a fixed clock; UPDATE_SNAPSHOTS=1 rewrites it."""
    monkeypatch.chdir(tmp_path)
    demo.build("run.zarr")

    async def go():
        app = DashApp("run.zarr", interval=60, clock=lambda: demo.NOW)
        async with app.run_test(size=SIZE) as pilot:
            await polled(pilot, app)
            return screen_text(app)

    text = run(go())
    snapshot = SNAPSHOTS / "dash_main.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.parent.mkdir(exist_ok=True)
        snapshot.write_text(text + "\n", encoding="utf-8")
    assert snapshot.exists(), f"no {snapshot}: run the test with UPDATE_SNAPSHOTS=1 and review it"
    assert text + "\n" == snapshot.read_text(encoding="utf-8")


def test_make_screenshots_writes_one_svg_per_panel(tmp_path):
    spec = importlib.util.spec_from_file_location("make_screenshots", ROOT / "docs/make_screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    store = tmp_path / "run.zarr"
    demo.build(store)
    written = module.main([str(store), "--out", str(tmp_path / "shots"), "--clock", str(demo.NOW)])
    assert [p.name for p in written] == ["dash-losses.svg", "dash-returns.svg", "dash-embeddings.svg"]
    assert all(p.read_text().startswith("<svg") for p in written)
