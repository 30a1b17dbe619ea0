"""A forced re-run that fails keeps the last good weights, and everything downstream of it reads
stale and is re-run by `mbml run` (issue 34, item 2)."""
from __future__ import annotations

import shutil

import numpy as np

from conftest import FAST, runner
from mbml_cli.core import layout
from mbml_cli.core.store import Store
from mbml_cli.recipe import graph
from mbml_cli.recipe.load import from_dict
from mbml_cli.views.cli import app


def weights(store: Store, i: int) -> dict[str, np.ndarray]:
    return store.load_weights(layout.BCQ("final", i))[0]


def test_a_diverged_forced_bcq_keeps_its_teachers_and_stales_what_reads_them(smoke_run, tmp_path):
    path = tmp_path / "forced.zarr"
    shutil.copytree(smoke_run, path)
    before = [weights(Store.open(path), i) for i in range(3)]
    out = runner.invoke(app, ["bcq", str(path), "--force", *FAST, "--set", "bcq.lr=1e30"])
    assert out.exit_code == 2 and "diverged" in out.output, out.output
    store = Store.open(path)
    for i in range(3):                                   # the last good teachers are all still there
        after = weights(store, i)
        assert after.keys() == before[i].keys() and all(np.array_equal(after[k], before[i][k]) for k in after)
    recipe = from_dict(store.recipe)
    status = graph.status(recipe, {k: store.stage(k) for k in graph.plan(recipe)})
    assert status["bcq"] == "failed" and status["reward"] == "done"
    assert all(status[k] == "stale" for k in graph.downstream(recipe, "bcq")), status
    again = runner.invoke(app, ["run", str(path), *FAST, "--set", "bcq.lr=0.001", "--yes"])
    assert again.exit_code == 0, again.output
    assert "✓ bcq: done in" in again.output and "✓ distill/mbml: done in" in again.output
    assert "✓ reward: skipped" in again.output and "✓ relabel: skipped" in again.output
