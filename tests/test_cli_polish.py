"""Issue 34's smaller points, through the CLI: `mbml info`'s integer counts and data sizes, a sweep
extended by a seed, progress bars as wide as the terminal, the NUL-byte recipe's line, and an eval
refusal printed once."""
from __future__ import annotations

import io
import re
import shutil

import pytest
import yaml
from rich.console import Console

from conftest import FAST, SMOKE, runner
from mbml_cli.core.store import Store
from mbml_cli.run import progress
from mbml_cli.views.cli import app

COLLECT_ONLY = ["--set", "stages=[collect]", *FAST]


def mbml(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(result, *needles) -> str:
    """Exit 2 and exactly one line (the error), naming `needles`."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output and all(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    path = tmp_path_factory.mktemp("polish") / "collected.zarr"
    out = mbml("run", SMOKE, "--store", path, *COLLECT_ONLY)
    assert out.exit_code == 0, out.output
    return path


# ---- 1: info ---------------------------------------------------------------------------------------
def test_info_counts_transitions_as_integers_and_shows_the_data_size(collected):
    out = mbml("info", collected)
    assert out.exit_code == 0, out.output
    row = next(line for line in out.output.splitlines() if line.startswith("│ train"))
    assert [c.strip() for c in row.split("│")[1:4]] == ["train", "3", "600"], row
    sizes = {name: sum(p.stat().st_size for p in (collected / name).rglob("*") if p.is_file())
             for name in ("data", "models")}
    total = sum(p.stat().st_size for p in collected.rglob("*") if p.is_file())
    for name, n in (*sizes.items(), ("total", total)):
        line = next((line for line in out.output.splitlines() if line.startswith(f"│ {name} ")), None)
        assert line is not None, (name, out.output)
        assert f"{n:,} bytes" in line and re.search(r"\d+(\.\d)? (KiB|MiB|GiB|bytes)", line), line


# ---- 2: a sweep grows by a seed --------------------------------------------------------------------
def test_a_sweep_takes_another_seed_and_refuses_other_changes(tmp_path):
    directory = tmp_path / "s"
    first = mbml("sweep", SMOKE, "--seeds", "0,1", *COLLECT_ONLY, "--dir", directory)
    assert first.exit_code == 0, first.output
    made = {p: p.stat().st_mtime_ns for p in (directory / "smoke-s0.zarr", directory / "smoke-s1.zarr")}
    more = mbml("sweep", SMOKE, "--seeds", "0,1,2", *COLLECT_ONLY, "--dir", directory)
    assert more.exit_code == 0, more.output
    assert "3 runs (2 finished before)" in more.output, more.output
    assert Store.open(directory / "smoke-s2.zarr").stage("collect")["status"] == "done"
    assert {p: p.stat().st_mtime_ns for p in made} == made                  # the finished runs were skipped
    doc = yaml.safe_load((directory / "sweep.yaml").read_text())
    assert doc["sweep"]["seeds"] == [0, 1, 2]
    again = mbml("sweep", directory / "sweep.yaml")                          # the file repeats all three
    assert again.exit_code == 0 and "3 runs (3 finished before)" in again.output, again.output
    # anything else than more seeds is another experiment
    one_line(mbml("sweep", SMOKE, "--seeds", "0,1", *COLLECT_ONLY, "--dir", directory), "(seeds differ)", "never fewer")
    one_line(mbml("sweep", SMOKE, "--seeds", "0,1,2,3", *COLLECT_ONLY, "--grid", "distill.margin=1,2",
                  "--dir", directory), "holds another sweep (seeds, grid differ)")
    one_line(mbml("sweep", SMOKE, "--seeds", "0,1,2,3", *COLLECT_ONLY, "--set", "collect.steps=300",
                  "--dir", directory), "holds another sweep (recipe, seeds differ)")
    assert not (directory / "smoke-s3.zarr").exists()
    assert yaml.safe_load((directory / "sweep.yaml").read_text())["sweep"]["seeds"] == [0, 1, 2]


# ---- 3: bars as wide as the terminal ---------------------------------------------------------------
@pytest.mark.parametrize("how", ["width", "COLUMNS"])
def test_a_progress_bar_uses_the_whole_width_of_a_wide_terminal(monkeypatch, how):
    screen = io.StringIO()
    made = []

    def console(**options):
        options.pop("stderr", None)
        made.append(Console(file=screen, force_terminal=True, color_system=None,
                            **({"width": 200} if how == "width" else {}), **options))
        return made[-1]

    if how == "COLUMNS":
        monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(progress, "Console", console)
    info = "R " + " ".join(f"{i}:-{100 + i}" for i in range(12)) + " loss 0.1234"       # 80 characters
    bar = progress.Reporter("distill mbml", 40_000, unit="step")
    bar.update(1000, info, line=True)
    bar.bar.refresh()
    bar.close()
    assert made[0].width == 200
    lines = [line for line in re.split(r"[\r\n]", screen.getvalue()) if "distill mbml" in line]
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", lines[-1]).rstrip()
    assert shown.endswith(info) and "…" not in shown, shown
    assert len(shown) > 160, len(shown)


# ---- 4: a NUL byte in a recipe -----------------------------------------------------------------------
def test_a_nul_byte_in_a_recipe_is_one_line_naming_file_and_line(tmp_path):
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"name: x\nseed: 1\ncollect: {steps: 2\x0000}\n")
    line = one_line(mbml("recipe", path), str(path), "line 3", "NUL byte")
    assert "not valid YAML: 'not valid YAML'" not in line and line.count("not valid YAML") <= 1, line
    path.write_bytes(b"name: x\n\x07seed: 1\n")
    one_line(mbml("run", path), str(path), "line 2", "control character")


# ---- 5: an eval refusal once --------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["eval"], ["eval", "--algo", "neither"], ["eval", "--unseen", "2"], ["probe"]])
def test_an_eval_refusal_is_one_line(collected, args):
    result = mbml(args[0], collected, *args[1:])
    line = one_line(result, "must finish before")
    assert result.output.count(str(collected)) == line.count(str(collected)), result.output


def test_eval_of_a_negative_number_of_unseen_tasks_is_refused(collected):
    one_line(mbml("eval", collected, "--unseen", "-1"), "--unseen")
