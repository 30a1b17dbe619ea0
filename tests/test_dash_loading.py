"""`mbml dash` shows the header and the stage list at once, and the metrics tables, evaluations and
embeddings when they have been read (issue 34, item 13)."""
import asyncio
import threading
import time

from mbml_cli.read import snapshot as reader
from mbml_cli.views.dash import demo
from mbml_cli.views.dash.app import DashApp
from mbml_cli.views.dash.widgets import LinePlot, ScatterPlot
from test_dash import SIZE, polled, static_text


async def until(pilot, check, what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"not on screen in {timeout:g}s: {what}"
        await pilot.pause(0.02)
    await pilot.pause()


def test_header_first_then_the_heavy_parts(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    store = demo.build(path)
    release = threading.Event()
    slow_read = reader.read_tables

    def blocked(*args, **kwargs):            # reading the metrics tables takes until `release`
        release.wait(60)
        return slow_read(*args, **kwargs)

    monkeypatch.setattr(reader, "read_tables", blocked)

    async def go():
        app = DashApp(str(path), interval=60, clock=lambda: demo.NOW)
        async with app.run_test(size=SIZE) as pilot:
            try:
                stages = [k for k, rec in store.stages().items() if rec.get("status")]
                await until(pilot, lambda: all(k in static_text(app, "#header") for k in stages),
                            "the stage list while the tables are still being read")
                header = static_text(app, "#header")
                assert store.recipe["name"] in header and "point_goal" in header
                assert "reading" in static_text(app, "#losses-msg").lower()
                assert not app.query(LinePlot) and app.polls == 0
            finally:
                release.set()
            await polled(pilot, app)
            assert app.query(LinePlot) and not app.query_one("#losses-msg").display
            await pilot.press("3")
            await pilot.pause()
            assert app.query_one(ScatterPlot).point_count > 0

    asyncio.run(go())
