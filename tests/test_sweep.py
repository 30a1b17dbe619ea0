"""`mbml sweep`, `mbml run --jobs N`, `mbml report` and the sweep's dashboard, on the smoke recipe.

The sweep (3 seeds, 2 at a time) is killed with SIGKILL mid-run and run again; every store then
equals the same run made alone with `mbml run` (same seed → same arrays). The same with Ray, where
it is installed. The report's JSON is checked against the stores, its PNGs against their pixels.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ENV, FAST, ROOT, SMOKE, alive, children, cli, runner
from mbml_cli.core import layout, writer
from mbml_cli.views.cli import app
from mbml_cli.read.batches import batch_progress
from mbml_cli.read.scores import summarise
from mbml_cli.core.store import Store
from store_equal import differences

SWEEP = ["sweep", SMOKE, "--seeds", "0,1,2", "--jobs", "2", *FAST]


def one_error(args: list[str], *words) -> str:
    """`mbml ARGS` (in this process) exits 2 with one line naming `words`."""
    out = runner.invoke(app, args)
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), out.output
    return lines[0]


@pytest.fixture(scope="module")
def alone(smoke_run, tmp_path_factory) -> dict[int, Path]:
    """Seeds 0, 1, 2 of the smoke recipe, each made alone with `mbml run` (seed 0 is conftest's)."""
    stores = {0: smoke_run}
    for seed in (1, 2):
        stores[seed] = tmp_path_factory.mktemp("alone") / f"smoke-s{seed}.zarr"
        out = runner.invoke(app, ["run", SMOKE, "--set", f"seed={seed}", "--store", str(stores[seed]), *FAST])
        assert out.exit_code == 0, out.output
    return stores


def killed_mid_bcq_and_run_again(args: list[str], directory: Path, first: str, timeout: float = 600,
                                 exact: bool = True):
    """`mbml ARGS`, SIGKILLed while the run `first` is in BCQ, then run again to the end: (the second
    run, its seconds, the sweep's own worker processes). The processes that held the running records
    (local workers, or Ray's) must die with the sweep, and no record may read `running` after. Local
    workers die with the sweep at once, so `first`'s BCQ reads `interrupted`; Ray's die when Ray sees
    its driver gone (`exact=False`), by which time smoke's seconds-long BCQ may have ended and the
    worker may have died between two stages, so that no record reads `interrupted` at all, or may have
    started the next stage in a fresh worker that dies a moment later."""
    p = subprocess.Popen([sys.executable, "-m", "mbml_cli.views.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=ENV, cwd=ROOT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    workers = []
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if Store.open(directory / f"{first}.zarr").stage("bcq").get("status") == "running":
                workers = children(p.pid)
                break
        except Exception:               # noqa: BLE001 - not made yet
            pass
        time.sleep(0.1)
    assert p.poll() is None, p.communicate()
    holders = {int(r["pid"]) for s in directory.glob("*.zarr") for r in Store.open(s).stages().values()
               if r.get("status") == "running" and "pid" in r}
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 60
    while any(alive(w) for w in {*workers, *holders}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert holders and not any(alive(w) for w in {*workers, *holders}), "a worker outlived its killed sweep"

    def statuses() -> set[str]:
        return {layout.record_status(r) for s in directory.glob("*.zarr") for r in Store.open(s).stages().values()}
    # Ray may hand a next stage to a fresh worker process in the moment before it sees the driver gone;
    # that worker dies too, within Ray's own grace period, and its record must then read `interrupted`.
    while "running" in statuses() and not exact and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "running" not in statuses(), statuses()
    bcq = layout.record_status(Store.open(directory / f"{first}.zarr").stage("bcq"))
    assert bcq == "interrupted" if exact else bcq in ("interrupted", "done"), bcq
    t0 = time.monotonic()
    again = cli(*args, timeout=1200)
    return again, time.monotonic() - t0, workers


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The sweep, SIGKILLed while its first runs are in BCQ (both local workers die with it), then run
    again to the end."""
    directory = tmp_path_factory.mktemp("sweep") / "smoke"
    again, seconds, workers = killed_mid_bcq_and_run_again([*SWEEP, "--dir", str(directory)], directory, "smoke-s0")
    assert len(workers) == 2
    return directory, again, seconds


def test_killed_sweep_resumes_and_every_store_equals_the_run_made_alone(swept, alone):
    directory, again, _ = swept
    assert again.returncode == 0, again.stderr[-3000:] + again.stdout[-3000:]
    assert "sweep smoke: best test-task score per algorithm" in again.stdout          # it ends with a table
    for seed in (0, 1, 2):
        assert f"smoke-s{seed}" in again.stdout
        assert differences(str(alone[seed]), str(directory / f"smoke-s{seed}.zarr")) == [], seed
    assert (directory / "logs" / "smoke-s2.log").is_file()
    doc = json.loads(json.dumps(__import__("yaml").safe_load((directory / "sweep.yaml").read_text())))
    assert doc["sweep"]["seeds"] == [0, 1, 2] and doc["recipe"]["name"] == "smoke" and doc["lock"]["packages"]


def test_finished_runs_are_skipped_and_the_sweep_file_repeats_it(swept):
    directory, _, _ = swept
    out = runner.invoke(app, ["sweep", str(directory / "sweep.yaml")])      # its own file: in place, all finished
    assert out.exit_code == 0, out.output
    assert "3 runs (3 finished before)" in out.output and "skipped" in out.output
    one_error([*SWEEP[:2], "--seeds", "0,1", "--dir", str(directory)], str(directory), "holds another sweep (seeds differ)")


def test_a_failing_run_does_not_stop_the_others(tmp_path):
    """Two runs of a grid: collect alone, and collect then distill (refused: bcq has not run)."""
    out = runner.invoke(app, ["sweep", SMOKE, "--grid", "stages=[collect],[collect,distill]", "--jobs", "2", *FAST,
                              "--dir", str(tmp_path / "g")])
    assert out.exit_code == 1, out.output
    assert "1 of 2 runs did not finish: smoke-stages=collect+distill-s0 (failed, log " in out.output
    assert Store.open(tmp_path / "g" / "smoke-stages=collect-s0.zarr").stage("collect")["status"] == "done"
    log = (tmp_path / "g" / "logs" / "smoke-stages=collect+distill-s0.log").read_text()
    assert "stage 'bcq' must finish before 'distill/mbml'" in log


@pytest.mark.parametrize("args, words", [
    (["--seeds", "0,x"], ["--seeds 0,x"]),
    (["--grid", "distill.margn=1,2"], ["distill.margn", "unknown key", "distill.margin"]),
    (["--grid", "seed=1,2"], ["--seeds"]),
    (["--executor", "slurm"], ["--executor slurm", "local or ray"]),
    (["--address", "x:1"], ["--address", "--executor ray"]),
])
def test_bad_sweep_input_is_one_line(tmp_path, args, words):
    one_error(["sweep", SMOKE, *args, "--dir", str(tmp_path / "s")], *words)
    assert not (tmp_path / "s" / "smoke-s0.zarr").exists()


def test_run_jobs_trains_the_algorithms_in_parallel_and_equals_the_sequential_run(smoke_run, tmp_path):
    store = tmp_path / "jobs.zarr"
    out = runner.invoke(app, ["run", SMOKE, "--store", str(store), "--jobs", "2", *FAST])
    assert out.exit_code == 0, out.output
    assert "4 algorithms, 2 at a time (local)" in out.output
    assert differences(str(smoke_run), str(store)) == []
    assert sorted(p.name for p in (tmp_path / "jobs.logs").iterdir()) == \
        ["batch_pearl.log", "contextual_bcq.log", "mbml.log", "neither.log"]


def test_ray_sweep_killed_and_run_again_equals_the_runs_made_alone(alone, tmp_path):
    """The same on a local Ray instance: its workers die with the killed sweep, and the re-run resumes."""
    pytest.importorskip("ray")
    directory = tmp_path / "ray"
    args = ["sweep", SMOKE, "--seeds", "1,2", "--executor", "ray", *FAST, "--dir", str(directory)]
    again, _, _ = killed_mid_bcq_and_run_again(args, directory, "smoke-s1", exact=False)
    assert again.returncode == 0, again.stderr[-3000:] + again.stdout[-3000:]
    assert "(ray)" in again.stdout
    for seed in (1, 2):
        assert differences(str(alone[seed]), str(directory / f"smoke-s{seed}.zarr")) == [], seed


# ---- the writer lock's units ------------------------------------------------------------------------
HOLD = """
import sys, time
from mbml_cli.core import writer
writer.acquire(sys.argv[1], command="holder " + sys.argv[2], unit=sys.argv[2] or None)
print("held", flush=True)
time.sleep(120)
"""


def holding(path, unit=""):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), unit], stdout=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout.readline().strip() == "held"
    return p


def test_units_of_different_algorithms_write_together_same_unit_or_whole_store_refused(tmp_path):
    path = tmp_path / "s.zarr"
    path.mkdir()
    mbml = holding(path, "algo/mbml")
    try:
        writer.acquire(str(path), unit="algo/neither")              # another algorithm: allowed
        writer.release(str(path), "algo/neither")
        with pytest.raises(writer.LockError, match=f"algo/mbml of this store .*pid {mbml.pid} .*`holder algo/mbml`"):
            writer.acquire(str(path), unit="algo/mbml")
        with pytest.raises(writer.LockError, match=f"to this store .*pid {mbml.pid} "):   # the whole store
            writer.acquire(str(path))
    finally:
        mbml.kill()
        mbml.wait()
    whole = holding(path)
    try:
        with pytest.raises(writer.LockError, match=f"pid {whole.pid} "):
            writer.acquire(str(path), unit="algo/neither")
    finally:
        whole.kill()
        whole.wait()
    writer.acquire(str(path))                                        # whole, then shared for units, then whole again
    try:
        with writer.shared(str(path)):
            unit = holding(path, "algo/mbml")
            unit.kill()
            unit.wait()
        assert writer.holds(str(path))
    finally:
        writer.release(str(path))


# ---- mbml report --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reported(swept, tmp_path_factory):
    directory = swept[0]
    out = tmp_path_factory.mktemp("report")
    result = runner.invoke(app, ["report", str(directory), "--out", str(out), "--json", str(out / "smoke.json")])
    assert result.exit_code == 0, result.output
    return directory, out, json.loads((out / "smoke.json").read_text()), result.output


def test_report_json_equals_the_stores(reported):
    directory, _, report, _ = reported
    assert report["mbml_report"] == 1 and len(report["conditions"]) == 1
    c = report["conditions"][0]
    stores = [Store.open(directory / f"smoke-s{s}.zarr") for s in (0, 1, 2)]
    assert [r["seed"] for r in c["runs"]] == [0, 1, 2]
    for algo in ("mbml", "neither", "contextual_bcq", "batch_pearl"):
        rows = [summarise(s, [algo], 2)[0] for s in stores]
        for key in ("best", "last", "eval", "probe"):
            stat = c["algos"][algo][key]
            assert stat["per_seed"] == pytest.approx([r[key] for r in rows], abs=0, rel=0)
            assert stat["mean"] == pytest.approx(np.mean([r[key] for r in rows]))
            assert stat["std"] == pytest.approx(np.std([r[key] for r in rows]))
            assert stat["ci95"][0] <= stat["mean"] <= stat["ci95"][1]
        hist = [s.read_rows(layout.EVAL_HISTORY(algo)) for s in stores]
        curve = c["algos"][algo]["curve"]
        assert curve["epoch"] == hist[0]["epoch"].tolist()
        assert curve["mean"] == pytest.approx(np.mean([h["returns"][:, :, 2:].mean(axis=(1, 2)) for h in hist], axis=0))
    errors = [s.read_array(layout.REWARD_ERROR("error")) for s in stores]
    assert np.array(c["reward_error"]["matrix"]) == pytest.approx(np.mean(errors, axis=0))
    assert c["teachers"]["fraction"]["per_seed"] == pytest.approx(
        [np.mean([s.stage(f"bcq/{i}")["fraction"] for i in range(3)]) for s in stores])
    assert c["teachers"]["fraction_top10"]["per_seed"] == pytest.approx(
        [np.mean([s.stage(f"bcq/{i}")["fraction_top10"] for i in range(3)]) for s in stores])
    assert c["teachers"]["at_bar_top10"] == [sum(s.stage(f"bcq/{i}")["fraction_top10"] >= 0.8 for i in range(3))
                                             for s in stores] and c["teachers"]["bar_tasks"] == [3, 3, 3]
    rows = [[batch_progress(s, i) for i in range(3)] for s in stores]
    assert c["batches"]["per_task"] == rows and c["batches"]["tasks"] == [3, 3, 3]
    assert c["batches"]["first"]["per_seed"] == pytest.approx([np.mean([r["first"] for r in seed]) for seed in rows])
    assert c["batches"]["clear"]["per_seed"] == [sum(r["clear"] for r in seed) for seed in rows]
    bcq = [s.stage("bcq") for s in stores]
    assert c["wall"]["bcq"]["per_seed"] == pytest.approx([r["ended"] - r["started"] for r in bcq])


def test_report_markdown_has_the_tables(reported):
    _, out, report, printed = reported
    text = (out / "report.md").read_text()
    assert text == printed.split("report of ")[0] or text in printed
    for heading in ("## smoke (seeds 0, 1, 2)", "MBML against the baselines (the paper's Fig. 4)",
                    "Full model against the ablations (the paper's Fig. 6)", "### Per seed", "### BCQ teachers",
                    "### Stage wall times", "![Fig. 4: MBML against the baselines](fig4-comparison.png)"):
        assert heading in text, heading
    mbml = report["conditions"][0]["algos"]["mbml"]["best"]
    assert f"| mbml | {mbml['mean']:.2f} ± {mbml['std']:.2f} | [{mbml['ci95'][0]:.2f}, {mbml['ci95'][1]:.2f}]" in text


def test_batch_progress_against_hand_computation(tmp_path):
    """20 episodes of 5 steps: the first and last 10 % are two episodes each; their means, the
    standard error of their difference and `clear` (a rise of more than twice it) by hand."""
    store = Store.create(tmp_path / "b.zarr", {"recipe": {"name": "t"}})
    returns = np.array([3.0, 1.0] + [2.0] * 16 + [4.0, 8.0])
    ends = np.zeros(100, bool)
    ends[4::5] = True
    rew = np.repeat(returns / 5, 5)
    store.append_rows(layout.BATCH("train", 0), {"rew": rew, "terminal": np.zeros(100, bool), "truncated": ends})
    got = batch_progress(store, 0)
    se = np.sqrt(np.var([3.0, 1.0], ddof=1) / 2 + np.var([4.0, 8.0], ddof=1) / 2)     # sqrt(2/2 + 8/2) = 2.236
    assert got["first"] == pytest.approx(2.0) and got["last"] == pytest.approx(6.0) and got["episodes"] == 20
    assert got["se"] == pytest.approx(se) and got["clear"] is False                    # 4.0 < 2 · 2.236
    store.append_rows(layout.BATCH("train", 1), {"rew": np.repeat(np.arange(20.0) / 5, 5), "terminal": ends,
                                                 "truncated": np.zeros(100, bool)})
    assert batch_progress(store, 1)["clear"] is True                                   # 18.5 − 0.5 > 2 · 0.71
    store.append_rows(layout.BATCH("train", 2), {"rew": np.ones(10), "terminal": np.zeros(10, bool),
                                                 "truncated": ends[:10]})
    assert batch_progress(store, 2) == {"first": None, "last": None, "se": None, "episodes": 2, "clear": False}


def png(path: Path) -> tuple[np.ndarray, dict]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 600 and im.height >= 300
        return np.asarray(im.convert("RGB")), json.loads(im.info["mbml"])


def pixels_of(img: np.ndarray, colour: str) -> int:
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img.astype(int) - rgb).sum(axis=-1) <= 6).sum())


def test_report_figures_are_images_with_their_curves_and_cells(reported):
    _, out, report, _ = reported
    img, info = png(out / "fig4-comparison.png")
    assert [c["label"] for c in info["curves"]] == ["mbml", "contextual_bcq", "batch_pearl"]
    for curve in info["curves"]:
        assert curve["points"] == 2
        assert pixels_of(img, curve["color"]) > 100, curve              # each curve is drawn, in its colour
    img, info = png(out / "fig6-ablations.png")
    assert [c["label"] for c in info["curves"]] == ["mbml", "neither"]
    img, info = png(out / "fig7-reward-error.png")
    assert info["cells"] == [3, 3]
    assert len({tuple(p) for p in img.reshape(-1, 3)}) > 9
    img, info = png(out / "embeddings.png")
    assert info["panels"] == ["mbml", "neither", "contextual_bcq", "batch_pearl"]
    assert not (out / "fig8-finetune.png").exists()                  # no fine-tuning in these runs


def test_long_condition_labels_wrap_inside_the_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from mbml_cli.views.report import figures
    label = "umaze_goal_m_cpu algos=[mbml] distill.margin=0.5 reward.ensemble_size=1 seed=0,1,2"
    fig = figures._figure()
    ax = fig.subplots()
    title = ax.set_title(figures._heading(label, "MBML against the baselines", fig))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box, page = title.get_window_extent(canvas.get_renderer()), fig.bbox
    assert title.get_text().count("\n") >= 1                          # wrapped, every word kept
    assert title.get_text().split() == f"{label}: MBML against the baselines".split()
    assert page.x0 <= box.x0 and box.x1 <= page.x1, (box, page)


def test_report_finetune_figure(finetuned, tmp_path):
    path, _ = finetuned
    result = runner.invoke(app, ["report", str(path), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    img, info = png(tmp_path / "fig8-finetune.png")
    assert [c["label"] for c in info["curves"]] == ["MBML init", "scratch"]
    for curve in info["curves"]:
        assert pixels_of(img, curve["color"]) > 100
    f = json.loads((tmp_path / "report.json").read_text())["conditions"][0]["finetune"]
    rows = Store.open(path).read_rows(layout.FINETUNE_CURVE("scratch", "0"))
    assert f["interactions"] == rows["interactions"].tolist() and f["runs"] == 1
    assert f["scratch"]["mean"] == pytest.approx(rows["return"].tolist())


def test_report_of_a_missing_store_is_one_line(tmp_path):
    one_error(["report", str(tmp_path / "nope.zarr")], "nope.zarr", "no such store")


def test_report_joins_earlier_report_jsons_whose_stores_are_gone(reported, tmp_path):
    """A report JSON given beside a sweep joins with its conditions and loss comparisons as they are (its
    stores are gone: a committed result), so one report covers distributions run in different sessions."""
    directory, _, smoke, _ = reported
    earlier = tmp_path / "point_goal.json"          # the committed JSON, its stores moved where none is (this
    text = (ROOT / "results" / "inference-losses" / "point_goal.json").read_text()   # machine may hold them)
    earlier.write_text(text.replace('"store": "/', f'"store": "{tmp_path}/gone/'))
    from mbml_cli.views.report.gather import read_report
    committed = read_report(str(earlier))                    # made before the best-10 % scale: its fields are None
    assert committed["conditions"][0]["teachers"]["bar_met_top10"] is None
    assert not Path(committed["conditions"][0]["runs"][0]["store"]).exists()
    out = tmp_path / "joined"
    result = runner.invoke(app, ["report", str(directory), str(earlier), "--out", str(out), "--json", str(out / "j.json")])
    assert result.exit_code == 0, result.output
    joined = json.loads((out / "j.json").read_text())
    assert joined["conditions"] == smoke["conditions"] + committed["conditions"]
    assert joined["losses"] == smoke["losses"] + committed["losses"]
    assert "mbml_infonce" in result.output and (out / "losses-2.png").is_file()
    assert (out / "point_goal" / "fig5-metagenrl.png").is_file() and not (out / "point_goal" / "embeddings.png").exists()
    (tmp_path / "bad.json").write_text('{"mbml_report": 1}')
    one_error(["report", str(directory), str(tmp_path / "bad.json")], "bad.json", "not a report JSON")


# ---- mbml dash runs/<sweep>/ ---------------------------------------------------------------------------
def test_sweep_dashboard_lists_the_runs_and_opens_one(swept):
    from mbml_cli.views.dash.sweep import SweepApp
    directory = swept[0]

    async def go():
        sweep_app = SweepApp(directory, interval=60)
        async with sweep_app.run_test(size=(120, 30)) as pilot:
            for _ in range(200):
                if sweep_app.polls:
                    break
                await pilot.pause(0.05)
            assert [(r.label, r.status, r.fraction) for r in sweep_app.rows] == \
                [(f"smoke-s{s}", "done", 1.0) for s in (0, 1, 2)]
            assert "3/3 runs done" in str(sweep_app.query_one("#sweep-head").render())
            await pilot.press("down", "enter")
        return sweep_app.return_value

    assert asyncio.run(go()) == str(directory / "smoke-s1.zarr")


def test_the_sweep_dashboard_weighs_progress_as_the_sweep_does(swept, monkeypatch, tmp_path):
    """The sweep writes its pre-flight's seconds per stage key (`estimates.yaml`); the dashboard weighs
    each run's progress by them, as the sweep's live view does (equal weights made a 45-minute run
    whose collect was a quarter done read 3 %, ETA 3 h). A damaged file gives equal weights, no error."""
    from mbml_cli.read import records
    from mbml_cli.run.sweep import ESTIMATES, read_estimates
    from mbml_cli.views.dash.sweep import read_rows
    directory = swept[0]
    estimates = read_estimates(directory)
    planned = records.planned_keys(Store.open(directory / "smoke-s0.zarr").recipe)
    assert estimates and set(estimates) <= set(planned) and all(v > 0 for v in estimates.values())
    seen, real = [], records.progress
    monkeypatch.setattr(records, "progress", lambda store, keys, weights=None: seen.append(weights) or real(store, keys, weights))
    read_rows(directory, {}, time.time())
    assert len(seen) == 3 and all(w == estimates for w in seen)
    for damaged in ("{not yaml", "[1, 2]", "collect: -3\nbcq: .nan\nreward: yes\n"):
        (tmp_path / ESTIMATES).write_text(damaged)
        assert read_estimates(tmp_path) == {}


def test_live_view_on_a_terminal_draws_its_rows(smoke_run):
    """The view as a terminal shows it (the tests' other runs have no terminal, and a terminal-only
    path once raised before it drew anything): a unit's row goes from running to done."""
    from io import StringIO
    from rich.console import Console
    from mbml_cli.run.live import LiveView, Tracked
    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    unit = Tracked("smoke-s0", str(smoke_run), ["collect", "bcq"])
    with LiveView("smoke: runs", [unit], console, weights={"collect": 3.0, "bcq": 1.0}) as view:
        view.tick({"smoke-s0": unit}, {})
        assert unit.status == "running" and unit.progress == 1.0          # both stages done in the store
        view.tick({}, {"smoke-s0": 0})
    assert unit.status == "done"
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())            # without cursor moves
    assert "smoke-s0" in drawn and "100%" in drawn
    assert any(line.strip().startswith("smoke: runs: 1/1 done, ") and line.strip().endswith(" so far")
               for line in drawn.splitlines())                                  # the title, on one line


def test_report_groups_a_store_made_before_a_key_existed_with_one_made_after():
    """Conditions compare recipes as this version resolves them: a recipe without a newer key (at its
    default) is the same condition; a real difference is labelled by its dotted key, briefly."""
    from mbml_cli.recipe.load import load, to_dict
    from mbml_cli.views.report.gather import condition_key, label
    recipe = to_dict(load(ROOT / "recipes/smoke.yaml")[0])
    older = {**recipe, "distill": {k: v for k, v in recipe["distill"].items() if k != "lr_schedule"}}
    assert condition_key(older) == condition_key(recipe)
    other = {**recipe, "seed": 5, "distill": {**recipe["distill"], "lr": 0.001}}
    assert condition_key(other) != condition_key(recipe)
    groups = [{"recipe": recipe, "values": {}}, {"recipe": other, "values": {}}]
    assert label(groups[1], groups) == f"{recipe['name']} distill.lr=0.001"


@pytest.mark.parametrize("sigint", [signal.default_int_handler, signal.SIG_IGN])
def test_a_ray_task_stops_when_its_driver_dies(sigint):
    """`worker.watch_driver`: a unit whose driver (here a stand-in process) dies is interrupted as Ctrl-C
    would (its stage then records `interrupted`) within a second, also in a process that started with
    SIGINT ignored (a background job), which gets its handler back after; a unit whose driver is already
    gone does not start; a unit without a driver (local workers) is not watched."""
    import socket

    from mbml_cli.run.unit import Unit
    from mbml_cli.run.worker import execute, watch_driver
    previous = signal.signal(signal.SIGINT, sigint)
    try:
        driver = subprocess.Popen(["sleep", "60"])
        unit = Unit(kind="run", label="x", store="/nonexistent", log=os.devnull, driver=driver.pid,
                    host=socket.gethostname())
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            with watch_driver(unit, every=0.05) as gone:
                assert not gone()
                driver.kill()
                driver.wait()
                while time.monotonic() - started < 10:
                    time.sleep(0.01)
        assert gone() and time.monotonic() - started < 2
        assert signal.getsignal(signal.SIGINT) == sigint
        assert execute(unit, redirect=False) == 130                  # already gone: the unit never starts
        with watch_driver(Unit(kind="run", label="x", store="", log=os.devnull)) as gone:
            time.sleep(0.1)
        assert not gone()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_sweep_written_before_a_recipe_key_was_added_is_the_same_sweep():
    """A sweep's own file from before a key was added (`graph.ADDED`) still matches today's same recipe,
    so the sweep resumes; the new key set off its default is another sweep."""
    import copy

    from mbml_cli.recipe.load import load, to_dict
    from mbml_cli.run.sweep import Sweep
    today = to_dict(load(SMOKE)[0])
    before = copy.deepcopy(today)
    for section, key in (("bcq", "relabelled_generator"), ("bcq", "relabelled"), ("distill", "inference_loss")):
        del before[section][key]
    assert Sweep("s", today, [0], {}, {}).same_experiment(Sweep("s", before, [0], {}, {})) == []
    changed = copy.deepcopy(today)
    changed["bcq"]["relabelled"] = True
    assert Sweep("s", changed, [0], {}, {}).same_experiment(Sweep("s", before, [0], {}, {})) == ["recipe"]
    changed = copy.deepcopy(today)
    changed["bcq"]["lr"] = 0.5
    assert Sweep("s", changed, [0], {}, {}).same_experiment(Sweep("s", today, [0], {}, {})) == ["recipe"]


def test_live_eta_counts_from_a_resumed_stage_checkpoint(monkeypatch):
    """A resumed unit's record first shows how far the killed run got (5 %), then its stage restarts
    from its last checkpoint (3 %). The ETA's rate counts from the lower mark: 60 s from 3 % to 6 %
    leaves 94 % at 3 % per minute, 1,880 s (counted from 5 % over all 90 s it was 8,460 s, and
    nothing at all while the progress sat below 5 %)."""
    from types import SimpleNamespace
    from mbml_cli.read import records
    from mbml_cli.run import live
    clock, shown = [1000.0], iter([0.05, 0.03, 0.06])
    monkeypatch.setattr(live.time, "time", lambda: clock[0])
    monkeypatch.setattr(records, "progress", lambda store, keys, weights: SimpleNamespace(stage="collect", fraction=next(shown)))
    unit = live.Tracked("ant-s0", "store", ["collect"], opened=object())
    unit.read({})
    unit.status, unit.started, unit.start_progress = "running", clock[0], unit.progress
    clock[0] += 30.0
    unit.read({})                                   # back to the checkpoint: the baseline moves down
    assert (unit.started, unit.start_progress) == (1030.0, 0.03)
    clock[0] += 60.0
    unit.read({})
    assert unit.eta == pytest.approx(60.0 * 0.94 / 0.03)
