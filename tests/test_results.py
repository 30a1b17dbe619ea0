"""RESULTS.md against the committed reports: every score of a section re-made by `mbml report` is the
JSON's, rounded (no store needed: the JSON is what `mbml report` read from the stores)."""
import json
import re

import pytest

from conftest import ROOT, runner
from mbml_cli.views.cli import app
from mbml_cli.views.report.tables import ordering

SECTIONS = {"### point_goal re-made with `mbml sweep` and `mbml report`": "results/point_goal.json",
            "### halfcheetah_vel_cpu: three fresh seeds of the committed recipe": "results/halfcheetah_vel_cpu.json",
            "## umaze_goal_m_cpu: three seeds × seven algorithms": "results/umaze_goal_m_cpu.json",
            "## ant_dir_cpu: three seeds × seven algorithms": "results/ant_dir_cpu.json",
            "## humanoid_dir_m_cpu: three seeds × seven algorithms": "results/humanoid_dir_m_cpu.json",
            "## walker_param_cpu: three seeds × seven algorithms": "results/walker_param_cpu.json",
            "## ant_goal_cpu: three seeds × seven algorithms": "results/ant_goal_cpu.json"}
CELL = re.compile(r"\*{0,2}([−-]?\d+\.\d+) ± (\d+\.\d+)\*{0,2}|—")
SEED = re.compile(r"([−-]?\d+\.\d+); (\d+\.\d+|—)")


def section(title: str) -> str:
    text = (ROOT / "RESULTS.md").read_text()
    start = text.index(title)
    end = min((i for i in (text.find("\n### ", start + len(title)), text.find("\n## ", start + len(title))) if i > 0),
              default=-1)
    return text[start:end if end > 0 else None]


def number(text: str) -> float:
    return float(text.replace("−", "-"))


@pytest.mark.parametrize("title, path", SECTIONS.items())
def test_results_numbers_are_the_reports(title, path):
    c = json.loads((ROOT / path).read_text())["conditions"][0]
    rows = [line.split("|")[1:-1] for line in section(title).splitlines() if line.startswith("| ")]
    checked = set()
    for cells in rows:
        algo = cells[0].strip()
        if algo.endswith(" (last)") and algo.removesuffix(" (last)") in c["algos"]:   # algo (last) | seed 0 | ...
            want = [round(v, 2) for v in c["algos"][algo.removesuffix(" (last)")]["last"]["per_seed"]]
            assert [number(cell.strip()) for cell in cells[1:]] == want, algo
            continue
        if algo not in c["algos"]:
            continue
        a = c["algos"][algo]
        if len(cells) == 6:                                  # algo | best | CI | last | CI | probe
            for cell, key in zip((cells[1], cells[3], cells[5]), ("best", "last", "probe")):
                m = CELL.search(cell)
                if a[key]["mean"] is None:                   # the report has none (walker's probe): "—"
                    assert m.group(0) == "—", (algo, key)
                else:
                    mean, std = map(number, m.groups())
                    assert (mean, std) == (round(a[key]["mean"], 2), round(a[key]["std"], 2)), (algo, key)
                checked.add((algo, key))
        else:                                                # algo | seed 0 | seed 1 | ...: best; probe
            for i, cell in enumerate(cells[1:]):
                best, probe = SEED.search(cell).groups()
                want = a["probe"]["per_seed"][i]
                assert (number(best), probe) == (round(a["best"]["per_seed"][i], 2),
                                                 "—" if want is None else f"{want:.2f}")
                checked.add((algo, i))
    seeds = len(next(iter(c["algos"].values()))["best"]["per_seed"])
    assert seeds == 3 and checked == {(a, k) for a in c["algos"] for k in ("best", "last", "probe", *range(seeds))}


def label_value(label: str, key: str, default: float) -> float:
    """The value a report condition's label gives `key` (`distill.margin=0.5`), else the recipe's `default`."""
    found = re.search(rf"{re.escape(key)}=([\d.]+)", label)
    return float(found.group(1)) if found else default


def test_appendix_i_table_is_the_reports():
    """RESULTS.md's Appendix-I rows (margin M, ensemble E, the report file): best, last, probe and the
    per-seed best are those of the condition of that report whose label has that margin and ensemble size."""
    text = section("## Appendix I on umaze_goal_m_cpu")
    checked = 0
    for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| ")):
        row = re.match(r"margin ([\d.]+), ensemble (\d+)", cells[0])
        if not row:
            continue
        margin, size = float(row.group(1)), int(row.group(2))
        conditions = json.loads((ROOT / "results/umaze_goal_m_cpu" / cells[1].strip("`")).read_text())["conditions"]
        [c] = [c for c in conditions if label_value(c["label"], "distill.margin", 2.0) == margin
               and label_value(c["label"], "reward.ensemble_size", 20) == size]
        a = c["algos"]["mbml"]
        for cell, key in zip(cells[2:5], ("best", "last", "probe")):
            mean, std = map(number, CELL.search(cell).groups())
            assert (mean, std) == (round(a[key]["mean"], 2), round(a[key]["std"], 2)), (cells[0], key)
        assert [number(x) for x in cells[5].split(" / ")] == [round(v, 2) for v in a["best"]["per_seed"]], cells[0]
        checked += 1
    assert checked == 6                                     # m ∈ {0.5, 1, 2, 4} and ensemble 1 (2 twice: two machines)


def test_lever_table_is_the_committed_jsonl():
    """RESULTS.md's distillation-lever rows: test best / last and the kept fractions are the JSONL's."""
    levers = {r["lever"]: r for r in map(json.loads, (ROOT / "results/levers/halfcheetah_vel_cpu.jsonl").read_text().splitlines())}
    text = section("## Distillation levers on halfcheetah_vel_cpu")
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ")]
    checked = set()
    for cells in rows:
        name = cells[0].strip()
        if name not in levers:
            continue
        r, cells = levers[name], [c.strip().strip("*") for c in cells]
        assert int(cells[1]) == r["seed"]
        best, last = map(number, cells[3].split(" / "))
        assert (best, last) == (round(r["test_best"], 1), round(r["test_last"], 1)), name
        for cell, key in zip(cells[4:8], ("teacher/distilled", "distilled/teacher", "distilled/no", "distilled/distilled")):
            assert cell == ("–" if key not in r["kept"] else f"{r['kept'][key]:.2f}"), (name, key)
        checked.add(name)
    assert checked == set(levers)


def test_walker_teacher_table_is_the_committed_json():
    """RESULTS.md's walker teacher levers: each checkpoint's mean fraction and tasks at 0.8 are the JSON's."""
    text = section("### walker_param_cpu's teachers: BCQ levers on seed 0's batches")
    checked = 0
    for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| ")):
        path = ROOT / f"results/teachers/walker_param_cpu-s0-{cells[0]}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        assert (ROOT / f"results/teachers/walker_param_cpu-s0-{cells[0]}.lock.yaml").exists(), cells[0]
        for cell, which in zip(cells[2:4], ("final", "best")):
            assert cell == f"{r[which]['fraction_mean']:.2f}; {r[which]['tasks_at_0.8']} / 10", (cells[0], which)
        checked += 1
    assert checked == 5


SUMMARIES = ["## Summary: every distribution measured with `mbml report`",
             "### Fresh stores of today's recipes, beside the committed reports"]


@pytest.mark.parametrize("title", SUMMARIES)
def test_summary_table_is_the_reports(title):
    """RESULTS.md's summary tables are `mbml report --summary` of the report JSONs they name, verbatim;
    the first names every final report."""
    text = section(title)
    command = re.search(r"`mbml report --summary ([^`]+)`", text).group(1).split()
    out = runner.invoke(app, ["report", "--summary", *[str(ROOT / p) for p in command]])
    assert out.exit_code == 0, out.output
    table = out.output.strip()
    assert table in text and table.count("\n") == len(command) + 1       # header, rule, a row per report
    if title == SUMMARIES[0]:
        finals = {f"results/{p.name}" for p in (ROOT / "results").glob("*.json")} - {"results/inference-losses.json"}
        assert finals <= set(command)          # every final report (the losses' join is issue 38's, below)


def kept(folder: str) -> list[float]:
    """distill_gap's distilled/distilled kept_mean of seeds 0–2 in `folder`, rounded as RESULTS.md shows it."""
    return [round(json.loads((ROOT / f"{folder}/s{s}.gap.json").read_text())["rows"]["distilled/distilled"]
                  ["kept_mean"], 2) for s in range(3)]


def test_kept_fractions_are_the_gap_jsons():
    """The fresh stores' kept-fraction table: per seed, distill_gap's distilled/distilled kept_mean."""
    rows = table_after("**How much of its teachers the distilled policy keeps**")
    assert rows
    for dist, *cells in rows:
        assert [number(c) for c in cells[:3]] == kept(f"results/fresh/{dist}"), dist
        if cells[3] != "not measured":
            assert [number(c) for c in cells[3].split(" / ")] == kept(f"results/{dist}"), dist


def test_paper_ordering_worked_example():
    def cond(**best):
        return {"algos": {a: {"best": {"mean": m, "std": s}} for a, (m, s) in best.items()}}
    assert ordering(cond(mbml=(-10, 1), contextual_bcq=(-14, 1), neither=(-15, 2))) == "yes"
    assert ordering(cond(mbml=(-10, 1), contextual_bcq=(-11, 2), neither=(-15, 2))) == \
        "yes, within noise of contextual_bcq"                                  # margin 1 < std 2
    assert ordering(cond(mbml=(-10, 1), contextual_bcq=(-9, 1), batch_pearl=(-10, 1))) == \
        "no: contextual_bcq, batch_pearl ≥ mbml"
    assert ordering(cond(contextual_bcq=(-9, 1))) == "—"


def test_summary_of_a_file_that_is_not_a_report_is_one_line(tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    for bad in (ROOT / "README.md", tmp_path / "x.json", tmp_path / "missing.json"):
        out = runner.invoke(app, ["report", "--summary", str(bad)])
        assert out.exit_code == 2 and str(bad) in out.output and "Traceback" not in out.output


def test_teacher_tables_are_bench_teachers_of_the_committed_jsons(monkeypatch):
    """RESULTS.md's teachers retrained per training seed: each table is `bench/teachers.py --table` of the
    JSONs its caption names, verbatim."""
    import importlib.util
    monkeypatch.syspath_prepend(str(ROOT / "bench"))                 # its sibling `peers`
    spec = importlib.util.spec_from_file_location("bench_teachers", ROOT / "bench" / "teachers.py")
    teachers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(teachers)
    text = section("## Strong teachers: measured per training seed, and from every task's data")
    captions = re.findall(r"`(results/teachers/[^`{]+)\{([^}]+)\}\.json`:", text)
    assert len(captions) == 2
    for stem, names in captions:
        files = ["+".join(str(ROOT / f"{stem}{part}.json") for part in n.split("+")) for n in names.split(",")]
        assert teachers.table(files) in text, stem


def table_after(marker: str) -> list[list[str]]:
    """The rows (cells stripped, header and rule left out) of the first Markdown table after `marker`."""
    text = (ROOT / "RESULTS.md").read_text()
    lines = text[text.index(marker):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("| "))      # a list item's too
    rows = []
    for line in lines[start + 2:]:
        if not line.lstrip().startswith("| "):
            break
        rows.append([c.strip() for c in line.strip().split("|")[1:-1]])
    return rows


def cell(text: str) -> tuple[float, ...]:
    """`−11.18 ± 0.40` → (−11.18, 0.40); `−155.47` → (−155.47,)."""
    return tuple(number(x) for x in re.findall(r"[−-]?\d+\.\d+", text))


def mean_std(stat: dict) -> tuple[float, ...]:
    return (round(stat["mean"], 2),) if stat["n"] == 1 else (round(stat["mean"], 2), round(stat["std"], 2))


METAGENRL = {"**point_goal, 3 seeds** (the committed recipe with `algos: [mbml, neither, metagenrl]`": "results/metagenrl/point_goal.json",
             "**ant_dir_cpu, 3 seeds** (where the paper's Fig. 5 is)": "results/metagenrl/ant_dir_cpu.json"}
METAGENRL_CURVES = {"**MetaGenRL's evaluations on point_goal, per seed**": "results/metagenrl/point_goal.json",
                    "**MetaGenRL's evaluations on ant_dir_cpu, per seed**": "results/metagenrl/ant_dir_cpu.json"}
LOSSES = {"**point_goal, 3 seeds** (mean ± std over seeds; probe": "results/inference-losses/point_goal.json",
          "**halfcheetah_vel_cpu, 3 seeds** (fresh stores": "results/inference-losses/halfcheetah_vel_cpu.json",
          "**umaze_goal_m_cpu, 3 seeds** (fresh stores": "results/inference-losses/umaze_goal_m_cpu.json"}


@pytest.mark.parametrize("marker, path", METAGENRL.items())
def test_metagenrl_tables_are_the_reports(marker, path):
    """RESULTS.md's Fig. 5 tables: algorithm | best | last | per seed best / last, from the JSON."""
    algos = json.loads((ROOT / path).read_text())["conditions"][0]["algos"]
    rows = table_after(marker)
    assert {r[0] for r in rows} >= {"mbml", "metagenrl"}
    for algo, best, last, per_seed in rows:
        a = algos[algo]
        assert (cell(best), cell(last)) == (mean_std(a["best"]), mean_std(a["last"])), algo
        if per_seed:
            pairs = [round(v, 2) for pair in zip(a["best"]["per_seed"], a["last"]["per_seed"]) for v in pair]
            assert list(cell(per_seed)) == pairs, algo


@pytest.mark.parametrize("marker, path", METAGENRL_CURVES.items())
def test_metagenrl_curves_are_the_report(marker, path):
    """RESULTS.md's MetaGenRL evaluations, per seed and epoch: the test-task score (`curve`) and the
    training agents' return on their own tasks (`agents_curve`), from the JSON."""
    c = json.loads((ROOT / path).read_text())["conditions"][0]
    a = c["algos"]["metagenrl"]
    rows = table_after(marker)
    expected = {f"seed {r['seed']}, {name}": [round(v, 1) for v in curve["per_seed"][i]]
                for name, curve in (("test tasks", a["curve"]), ("training agents, own tasks", a["agents_curve"]))
                for i, r in enumerate(c["runs"])}
    assert {r[0] for r in rows} == set(expected)
    for row in rows:
        assert [number(x) for x in row[1:]] == expected[row[0]], row[0]


@pytest.mark.parametrize("marker, path", LOSSES.items())
def test_inference_loss_tables_are_the_reports(marker, path):
    """RESULTS.md's task-inference-loss tables: algorithm | loss | best | last | probe, from the JSON."""
    algos = json.loads((ROOT / path).read_text())["conditions"][0]["algos"]
    rows = table_after(marker)
    assert {r[0] for r in rows} == {"mbml", "mbml_dml", "mbml_infonce", "no_relabel", "neither"}
    for algo, _, best, last, probe in rows:
        a = algos[algo]
        assert (cell(best), cell(last), cell(probe)) == (mean_std(a["best"]), mean_std(a["last"]), mean_std(a["probe"])), algo
