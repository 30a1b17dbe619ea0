"""The Embeddings panel draws the 2-D projection at the panel's size, with a legend of the tasks and
the axes (issue 34, item 14)."""
import asyncio

import numpy as np
import pytest

from mbml_cli.views.dash import demo
from mbml_cli.views.dash.app import DashApp
from mbml_cli.views.dash.widgets import ScatterPlot
from test_dash import polled, static_text

AXES = set("┊┄┼ ")


def elongated_store(path):
    """4 test tasks × 12 posterior means, spread 30× wider along PC1 than along PC2: a thin band at
    equal scale."""
    store = demo.build(path, n_test=4)
    rng = np.random.default_rng(1)
    centres = np.stack([np.linspace(-3, 3, 4), np.zeros(4), np.zeros(4)], axis=1)
    z = centres[:, None] + rng.standard_normal((4, 12, 3)) * [0.5, 0.1, 0.01]
    store.write_array("eval/mbml/test/z_points", z.astype(np.float32))
    return store


@pytest.mark.parametrize("size", [(110, 34), (160, 48)])
def test_scatter_spans_the_panel(tmp_path, size):
    path = tmp_path / "run.zarr"
    elongated_store(path)

    async def go():
        app = DashApp(str(path), interval=60, clock=lambda: demo.NOW)
        async with app.run_test(size=size) as pilot:
            await polled(pilot, app)
            await pilot.press("3")
            await pilot.pause()
            scatter = app.query_one(ScatterPlot)
            assert app.current_algo() == "mbml" and scatter.point_count == 48
            width, height = scatter.content_size
            lines = scatter.render().plain.splitlines()
            legend = static_text(app, "#legend")
            return width, height, lines, legend

    width, height, lines, legend = asyncio.run(go())
    assert width > 40 and height > 15 and len(lines) == height
    assert all(len(line) == width for line in lines)

    def marked(cells):
        return any(c not in AXES for c in cells)

    assert marked(lines[0]) and marked(lines[-1]), "no mark in the top or bottom row"
    assert marked(line[0] for line in lines) and marked(line[-1] for line in lines), \
        "no mark in the left or right column"
    for t in range(4):
        assert f"task {t}" in legend
    assert "PC1" in legend and "PC2" in legend
