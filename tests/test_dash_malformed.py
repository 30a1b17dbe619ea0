"""A store whose content is not what mbml writes: one plain line naming the part, that part left out
and not read again; SIGTERM (with or without the SIGCONT `timeout` sends after it) ends the
dashboard cleanly (issue 34, item 15)."""
import asyncio
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mbml_cli.core import layout
from mbml_cli.read import snapshot as reader
from mbml_cli.views.dash import demo
from mbml_cli.views.dash.app import DashApp
from mbml_cli.views.dash.widgets import LinePlot
from conftest import ROOT
from test_dash import SIZE, polled, static_text

PYTHON_TEXT = ("Traceback", "object is not", "Error", "invalid literal", "could not convert", "np.")


def recipe_with(store, **changes):
    store.root.attrs["recipe"] = {**store.root.attrs["recipe"], **changes}


def stage_attrs(store):
    g = store.root[layout.STAGE("bcq")]
    g.attrs.update({"status": 5, "progress": [1, 2]})      # still listed, its fields unknown


def metric_column(store):
    """A per-task column whose width is not the table's tasks'."""
    g = store.root["metrics/collect/train"]
    del g["critic_loss"]
    store.write_array("metrics/collect/train/critic_loss", np.zeros((int(g.attrs["n"]), len(g.attrs["tasks"]) + 2)))


def tasks_dtype(store):
    store.write_array(layout.TASKS("test"), np.array([["a", "b"], ["c", "d"]]))


def row_count(store):
    store.root["metrics/bcq/train"].attrs["n"] = "many"


def z_dtype(store):
    store.write_array("eval/mbml/test/z_mean", np.array([["a", "b"]]))


CRAFTED = {     # how the store is spoilt → words the line names
    "algos": (lambda s: recipe_with(s, algos=5), ("recipe", "algos")),
    "env": (lambda s: recipe_with(s, env="x", eval=3), ("recipe", "env")),
    "stage attrs": (stage_attrs, ("stage record bcq", "progress")),
    "metric column": (metric_column, ("metrics/collect/train", "critic_loss")),
    "tasks dtype": (tasks_dtype, ("tasks/test", "numbers")),
    "row count": (row_count, ("metrics/bcq/train",)),
    "z dtype": (z_dtype, ("eval/mbml:",)),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_malformed_store_shows_one_plain_line(tmp_path, case, monkeypatch):
    spoil, words = CRAFTED[case]
    path = tmp_path / "run.zarr"
    spoil(demo.build(path))

    async def go():
        app = DashApp(str(path), interval=60, clock=lambda: demo.NOW)
        async with app.run_test(size=SIZE) as pilot:
            await polled(pilot, app)
            for key in "123":
                await pilot.press(key)
                await pilot.pause()
            first = static_text(app, "#header")
            await pilot.press("r")                  # polls again: the same line, no new failure
            await polled(pilot, app, 2)
            await pilot.press("1")
            await pilot.pause()
            return app, first, static_text(app, "#header")

    app, header, again = asyncio.run(go())
    assert app.return_code in (None, 0)
    lines = [ln for ln in header.splitlines() if all(w in ln for w in words)]
    assert len(lines) == 1, header
    assert not any(t in header for t in PYTHON_TEXT), header
    assert "retrying" not in header
    assert again == header
    assert app.snapshot.stages and app.snapshot.recipe.get("name") == "smoke"   # the rest still shows


def test_a_broken_part_is_not_read_again(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    store = demo.build(path)
    z_dtype(store)
    calls = []
    read_eval = reader.read_eval
    monkeypatch.setattr(reader, "read_eval", lambda st, algo, *a: calls.append(algo) or read_eval(st, algo, *a))
    r = reader.Reader(str(path))
    first, second = r.read(), r.read()
    assert calls == ["mbml"]
    assert first.problems == second.problems and len(second.problems) == 1 and "mbml" not in second.evals
    r.forget()                                  # `r` in the dashboard: read it again
    assert r.read().problems == first.problems and calls == ["mbml", "mbml"]


# ---- SIGTERM ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGTERM, signal.SIGCONT)],
                         ids=["term", "term+cont"])
def test_sigterm_ends_the_dashboard_cleanly(tmp_path, signals):
    path = tmp_path / "run.zarr"
    demo.build(path, name="sigterm-demo")
    out = tmp_path / "out.txt"
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "mbml_cli.views.cli", "dash", str(path)], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                env={**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color",
                                     "COLUMNS": "120", "LINES": "40"})
    try:
        end = time.monotonic() + 120
        while b"sigterm-demo" not in out.read_bytes():        # the header is drawn
            assert proc.poll() is None and time.monotonic() < end, out.read_bytes()[-2000:]
            time.sleep(0.1)
        time.sleep(0.5)
        for s in signals:
            os.kill(proc.pid, s)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.read_bytes().decode(errors="replace")
    assert "Traceback" not in text and "Error" not in text, text[-3000:]
    assert rc == 128 + signal.SIGTERM


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_timeout_in_a_terminal_ends_the_dashboard_cleanly(tmp_path):
    """`timeout 60 mbml dash` typed in a shell: timeout puts the dashboard in a background process
    group of the terminal, where Textual stops itself; timeout's SIGTERM then SIGCONT (sent here,
    once it is stopped) must end it quietly."""
    path = tmp_path / "run.zarr"
    demo.build(path)
    command = f"cd {ROOT} && timeout 60 {sys.executable} -m mbml_cli.views.cli dash {path}; echo exit=$?"
    pid, fd = pty.fork()
    if pid == 0:                                    # the child: sh, session leader of a new terminal
        os.environ.update(PYTHONPATH=str(ROOT), TERM="xterm-256color")
        os.execv("/bin/sh", ["sh", "-c", command])
    text, end, dash = b"", time.monotonic() + 120, None
    while time.monotonic() < end:
        if dash is None:                            # sh → timeout → the dashboard, stopped by Textual
            found = [c for t in children(pid) for c in children(t)]
            stat = Path(f"/proc/{found[0]}/stat").read_text() if found else ""
            if stat and stat[stat.rindex(")") + 2] == "T":
                dash = found[0]
                os.kill(dash, signal.SIGTERM)
                os.kill(dash, signal.SIGCONT)
        ready, _, _ = select.select([fd], [], [], 0.1)
        try:
            chunk = os.read(fd, 65536) if ready else b""
        except OSError:                             # EIO: the terminal closed
            break
        if ready and not chunk:
            break
        text += chunk
    os.waitpid(pid, 0)
    text = text.decode(errors="replace")
    assert dash is not None and "exit=143" in text, text[-3000:]
    assert "Traceback" not in text and "Error" not in text, text[-3000:]
