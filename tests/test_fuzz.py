"""Our own fuzzer (issues 17 and 34): mutated recipes, crafted stores, fuzzed runs, imported arrays,
links inside a store and a second writer, from a fresh seed each run. Every case must end in exit 0
(and then leave a valid store: it opens, `mbml info --check` passes, its records agree with its
data), or exit 2 with one short `error:` line free of control characters — never a traceback.

The seed is printed and named in every failure; `MBML_FUZZ_SEED=N pytest tests/test_fuzz.py` replays
a run. Recipe and store cases run in this process through the Typer app; the command cases run one
at a time in a worker process (`serve`) under a memory limit (RLIMIT_AS) and a per-case timeout, so
a case that hangs or grows without bound is reported, not waited for."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import resource
import select
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mbml_cli.core.writer import LOCK_FILE
from mbml_cli.views.cli import app
from trained_store import trained  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "recipes" / "smoke.yaml")
SEED = int(os.environ.get("MBML_FUZZ_SEED") or random.SystemRandom().randrange(2 ** 32))
REPLAY = f"replay with MBML_FUZZ_SEED={SEED}"
RECIPE_CASES, SET_CASES, STORE_CASES = 170, 40, 24
RUN_CASES, ARRAY_CASES, LINK_CASES, WRITER_CASES = 8, 20, 10, 5
MEMORY = 3 * 2 ** 30            # the worker's address space (torch alone maps about 1 GiB)
SECONDS = 60                    # the longest a case may take (a fuzzed run of a few hundred steps: seconds)
runner = CliRunner()

NASTY = [0, -1, 1, 2 ** 31, 2 ** 32, 2 ** 64, 10 ** 30, -10 ** 12, 0.0, -0.5, 1e308, 1e-320, float("nan"),
         float("inf"), float("-inf"), True, False, None, "", "x" * 5000, "../../../tmp/x", "a/b", "\x00",
         "\x1b[31mred\x1b[0m", "[bold]markup[/bold]", "[/]", "é✓🙂", "1e6", ".nan", "~", [], [0], [1e8, 1e8],
         [10 ** 9, 10 ** 9], ["mbml", "nope"], [[1]], {}, {"a": 1}, {"name": {"x": []}}, list(range(100))]


def nasty(rng: random.Random):
    value = copy.deepcopy(rng.choice(NASTY))     # a fresh copy: a shared one could be mutated into a cycle
    if rng.random() < 0.2:                       # nest a nasty value a few levels deep
        for _ in range(rng.randint(1, 40)):
            value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, path + (k,))
    yield path


def set_path(doc, path, value):
    if not path:
        return value
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return doc


def mutate_structure(doc: dict, rng: random.Random) -> dict:
    for _ in range(rng.randint(1, 3)):
        paths = list(leaves(doc))
        path = rng.choice(paths)
        roll = rng.random()
        if roll < 0.7:
            doc = set_path(doc, path, nasty(rng))
        elif roll < 0.85 and path:
            parent = doc
            for k in path[:-1]:
                parent = parent[k]
            parent.pop(path[-1], None)
        elif isinstance(doc, dict):
            doc[rng.choice(["nmae", "stages", "env", "lock", "extends", "x" * 300, 7])] = nasty(rng)
        if not isinstance(doc, dict):
            break
    return doc


def mutate_text(text: str, rng: random.Random) -> bytes:
    data = bytearray(text.encode())
    for _ in range(rng.randint(1, 6)):
        roll, at = rng.random(), rng.randrange(max(1, len(data)))
        if roll < 0.3:
            data[at:at + 1] = bytes([rng.randrange(256)])
        elif roll < 0.5:
            del data[at:at + rng.randint(1, 20)]
        elif roll < 0.7:
            data[at:at] = rng.choice([b"&a ", b"*a", b"<<: *a\n", b"\n  - ", b": ", b"{", b"]", b"\t", b"\x00",
                                      b"\x1b[2J", b"!!python/object:os.system ", b"!!binary ", b"? ", b"%YAML 1.1\n"])
        elif roll < 0.85:
            lines = bytes(data).split(b"\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[rng.randrange(len(lines))])          # a duplicated line → duplicate keys
            data = bytearray(b"\n".join(lines))
        else:
            data = data[:at]
    return bytes(data)


def check(result, case: str) -> None:
    """Exit 0, or exit 2 with one `error:` line (`result`: a CliRunner result or the worker's dict)."""
    if isinstance(result, dict):
        code, exc, stderr = result["code"], result["exception"], result["stderr"]
    else:
        exc = result.exception
        code, stderr = result.exit_code, result.stderr
        exc = None if exc is None or isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
    case = f"{case} [{REPLAY}]"
    assert exc is None, f"{case}: {exc}"
    assert code in (0, 2), f"{case}: exit {code}: {stderr[-500:]}"
    if code == 2:
        lines = stderr.splitlines()
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in stderr, f"{case}: {stderr[-1000:]}"
        assert len(errors[0]) < 600, f"{case}: a {len(errors[0])}-character error line"
        assert not any(c in errors[0] for c in "\x00\x1b\x07"), f"{case}: control characters in {errors[0]!r}"


def test_fuzz_recipes_and_set(tmp_path):
    rng = random.Random(SEED)
    print(f"fuzz seed {SEED} ({REPLAY})")
    shutil.copy(ROOT / "recipes" / "point_goal.yaml", tmp_path / "point_goal.yaml")
    bases = [(ROOT / "recipes" / name).read_text() for name in ("smoke.yaml", "halfcheetah_vel_cpu.yaml", "walker_param.yaml")]
    shutil.copy(ROOT / "recipes" / "halfcheetah_vel.yaml", tmp_path / "halfcheetah_vel.yaml")
    t0, outcomes = time.perf_counter(), {0: 0, 2: 0}
    for case in range(RECIPE_CASES):
        text = rng.choice(bases)
        if case % 2:
            body = mutate_text(text, rng)
        else:
            body = yaml.safe_dump(mutate_structure(yaml.safe_load(text), rng), allow_unicode=True).encode()
        path = tmp_path / f"case{case}.yaml"
        path.write_bytes(body)
        result = runner.invoke(app, ["recipe", str(path)])
        check(result, f"recipe case {case} ({body[:200]!r})")
        outcomes[result.exit_code] += 1
    keys = [k for k, _, _ in __import__("mbml_cli.recipe.load", fromlist=["field_docs"]).field_docs()]
    for case in range(SET_CASES):
        sets = []
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(keys + ["x.y.z", "seed.x", "", "env", "a" * 300])
            value = rng.choice(["1e6", ".nan", "-1", "[1e8, 1e8]", "&a [*a]", "{", "\x1b[31m", "10**12",
                                "99999999999999999999999", "[bold]x", "''", "~", "[mbml, neither]", "3e-4"])
            sets += ["--set", f"{key}={value}"]
        result = runner.invoke(app, ["recipe", str(ROOT / "recipes" / "smoke.yaml"), *sets])
        check(result, f"--set case {case} ({sets})")
        outcomes[result.exit_code] += 1
    elapsed = time.perf_counter() - t0
    print(f"fuzz: {RECIPE_CASES + SET_CASES} recipe cases in {elapsed:.1f}s, exits {outcomes}")
    assert outcomes[0] > 3 and outcomes[2] > 30, (outcomes, REPLAY)       # both outcomes really occur


def json_paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from json_paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from json_paths(v, path + (i,))


def test_fuzz_crafted_stores(trained, tmp_path):
    rng = random.Random(SEED + 1)
    print(f"fuzz seed {SEED} ({REPLAY})")
    store = tmp_path / "fuzz.zarr"
    shutil.copytree(trained, store)
    root_meta = store / "zarr.json"
    records = sorted(p for p in store.rglob("zarr.json") if p.parent.parent.name in ("stages", "collect", "train")
                     or "stages/" in str(p.relative_to(store)))
    policy = sorted((store / "models/distill/mbml/final").rglob("zarr.json")) + [store / "tasks/test/zarr.json"]
    chunks = sorted(p for p in store.rglob("c/*") if p.is_file() and ("models/distill/mbml/final" in str(p)
                                                                        or rng.random() < 0.05))
    # each kind of target with the commands that read it: the root's attributes (recipe, lock) are read
    # by all; stage records and row counts by info; the policy's metadata and chunks by eval and info --check
    kinds = [([root_meta], [["info"], ["lock"], ["eval"]]), (records, [["info"]]),
             (policy, [["eval"], ["info", "--check"]]), (chunks, [["eval"], ["info", "--check"]])]
    runner.invoke(app, ["eval", str(store)])            # torch's first import and warm-up, not a case
    t0, outcomes = time.perf_counter(), {0: 0, 2: 0}
    for case in range(STORE_CASES):
        targets, commands = kinds[rng.choices(range(4), weights=[4, 2, 3, 1])[0]]
        target = rng.choice(targets)
        original = target.read_bytes()
        if target.name == "zarr.json":
            doc = json.loads(original)
            if rng.random() < 0.15:
                target.write_bytes(original[:rng.randrange(len(original))] + bytes([rng.randrange(256)]))
            else:
                paths = [p for p in json_paths(doc) if p]
                path = rng.choice([p for p in paths if p[0] == "attributes"] or paths)
                node = doc
                for k in path[:-1]:
                    node = node[k]
                node[path[-1]] = nasty(rng)
                target.write_text(json.dumps(doc, allow_nan=True))
        else:
            data = bytearray(original)
            if data and rng.random() < 0.7:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            else:
                data = data[:rng.randrange(len(data) + 1)]
            target.write_bytes(bytes(data))
        command = rng.choice(commands)
        result = runner.invoke(app, [command[0], str(store), *command[1:]])
        check(result, f"store case {case}: {command} on {target.relative_to(store)}")
        outcomes[result.exit_code] += 1
        target.write_bytes(original)
    elapsed = time.perf_counter() - t0
    print(f"fuzz: {STORE_CASES} store cases in {elapsed:.1f}s, exits {outcomes}")
    assert outcomes[0] > 2 and outcomes[2] > 2, (outcomes, REPLAY)


# ---- commands in a bounded worker: run, import arrays, links in a store, a second writer ----------------
def serve() -> None:
    """The worker: one JSON request a line on stdin → one JSON answer a line on the protocol pipe.
    {"cli": [args]} runs `mbml ARGS`; {"check": store, "rows": n or null} checks a store."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)                                   # stray prints must not reach the protocol
    for line in sys.stdin:
        ask = json.loads(line)
        if "cli" in ask:
            result = runner.invoke(app, ask["cli"])
            exc = result.exception
            exc = None if exc is None or isinstance(exc, SystemExit) else \
                "".join(traceback.format_exception(exc)[-6:])[-3000:]
            answer = {"code": result.exit_code, "exception": exc, "stderr": result.stderr[-3000:],
                      "stdout": result.stdout[-3000:]}
        else:
            answer = {"problems": store_problems(ask["check"], ask.get("rows"))}
        proto.write(json.dumps(answer) + "\n")
        proto.flush()


def store_problems(path: str, rows: int | None) -> list[str]:
    """What is wrong with a store an accepted command left: it must open, pass `mbml info --check`,
    hold no record still `running`, and each training batch's columns must agree with its row count
    (`rows` of each when given) and the tasks with the batches."""
    from mbml_cli.core import layout
    from mbml_cli.core.store import Store
    from mbml_cli.read.records import stage_records
    try:
        store = Store.open(path)
    except Exception as e:                          # noqa: BLE001 - reported, not raised
        return [f"does not open: {e}"]
    problems = []
    info = runner.invoke(app, ["info", path, "--check"])
    if info.exit_code != 0:
        problems.append(f"info --check exits {info.exit_code}: {info.output[-500:]}")
    for rec in stage_records(store):
        if rec.status == "running":
            problems.append(f"record {rec.key} still running")
        if rec.status == "done" and (rec.progress != 1.0 or not rec.ended or rec.ended < (rec.started or 0)):
            problems.append(f"record {rec.key} done at progress {rec.progress}, started {rec.started}, ended {rec.ended}")
    if store.stage("collect").get("status") == "done":
        groups = layout.children(store, layout.parent(layout.BATCH, "train"))
        tasks = layout.read_tasks(store, "train")
        if len(groups) != len(tasks):
            problems.append(f"{len(groups)} training batches for {len(tasks)} tasks")
        for g in groups:
            n, columns = store.rows(layout.BATCH("train", g)), store.read_rows(layout.BATCH("train", g))
            lengths = {k: len(v) for k, v in columns.items()}
            if set(lengths.values()) != {n} or (rows is not None and n != rows) or n == 0:
                problems.append(f"batch {g}: {n} rows, columns {lengths}, expected {rows}")
    return problems


class Worker:
    """`serve` in a child process under RLIMIT_AS; restarted after a case kills it."""

    def __init__(self, log: Path):
        self.log, self.proc = log, None

    def start(self) -> None:
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
               "MALLOC_ARENA_MAX": "2", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", "import test_fuzz; test_fuzz.serve()"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "ab"),
                                     text=True, preexec_fn=limit)

    def ask(self, request: dict, case: str, seconds: float = SECONDS) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], seconds)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            timed_out = self.proc.poll() is None
            self.close()
            tail = self.log.read_text(errors="replace")[-1500:]
            pytest.fail(f"{case} [{REPLAY}]: " + (f"still running after {seconds} s" if timed_out else
                        f"the worker died (memory limit {MEMORY / 2 ** 30:g} GiB?): {tail}"))
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def accepted_or_refused(worker: Worker, args: list[str], case: str, store: str | None = None,
                        rows: int | None = None, whole_line: bool = True) -> int:
    """Run `mbml ARGS` in the worker; exit 0 leaves a valid `store` (when given), exit 2 one line."""
    case = f"{case}: mbml {' '.join(args)[:300]}"
    result = worker.ask({"cli": args}, case)
    check(result, case)
    if result["code"] == 2 and whole_line:
        lines = [line for line in (result["stdout"] + result["stderr"]).splitlines() if line.strip()]
        assert len(lines) == 1, f"{case} [{REPLAY}]: a refusal of {len(lines)} lines: {lines[-5:]}"
    if result["code"] == 0 and store is not None:
        problems = worker.ask({"check": store, "rows": rows}, case)["problems"]
        assert not problems, f"{case} [{REPLAY}]: mbml {' '.join(args)[:300]} left {store}: {problems}"
    return result["code"]


def flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()


# (key, values): a collect-only run of a few hundred steps at most, whatever is drawn
RUN_SETS = [("collect.steps", [0, 1, 2, 37, 150, -1, 10 ** 12, 1.5, "x"]), ("collect.random_steps", [0, 1, 150, 10 ** 9, -5]),
            ("collect.batch_size", [1, 2, 0, 10 ** 9]), ("collect.log_every", [1, 0, 7, 10 ** 9]),
            ("collect.checkpoint_every", [1, 3, 0, 10 ** 9]), ("collect.hidden", [[1], [], [16, 16, 16], [0], [10 ** 9] * 2]),
            ("env.n_train", [1, 2, 0, 10 ** 6]), ("env.n_test", [0, 1, 10 ** 6]), ("env.horizon", [1, 2, 3, 0, 10 ** 9]),
            ("seed", [0, 7, 2 ** 31, -1, 2 ** 64]), ("name", ["é✓🙂", "../x", "\x1b[31m", "a" * 300, "[bold]"]),
            ("threads", [1, 0, -1, 10 ** 6]), ("device", ["cpu", "cuda", "tpu"]), ("env.name", ["point_goal", "nope", "none"]),
            ("collect.updates_per_step", [0, 1, 3, 10 ** 6]), ("collect.gamma", [0.0, 1.0, 1.5, float("nan")])]


def run_case(rng: random.Random, tmp: Path) -> tuple[list[str], str, int | None]:
    store = str(tmp / "run.zarr")
    drawn = {"collect.steps": 120, "collect.random_steps": 60, "threads": 1}
    for key, values in rng.sample(RUN_SETS, rng.randint(1, 3)):
        drawn[key] = rng.choice(values)
    recipe = SMOKE
    if rng.random() < 0.5:                          # a mutated recipe file, then sized by the --set below
        shutil.copy(ROOT / "recipes" / "point_goal.yaml", tmp / "point_goal.yaml")
        recipe = str(tmp / "mutated.yaml")
        mutated = mutate_structure(yaml.safe_load(Path(SMOKE).read_text()), rng)
        Path(recipe).write_text(yaml.safe_dump(mutated, allow_unicode=True))
    args = ["run", recipe, "--store", store, "--set", "stages=[collect]"]
    for key, value in drawn.items():
        args += ["--set", f"{key}={flow(value)}"]
    steps = drawn["collect.steps"]
    return args, store, steps if isinstance(steps, int) else None


# ---- imported arrays
def arrays(rng: random.Random, n: int = 40) -> dict:
    obs = rng.random()
    g = np.random.default_rng(rng.randrange(2 ** 32))
    return {"obs": g.normal(size=(n, 2)).astype(np.float32) * obs, "act": g.uniform(-1, 1, (n, 2)).astype(np.float32),
            "rew": g.normal(size=n).astype(np.float32), "next_obs": g.normal(size=(n, 2)).astype(np.float32),
            "terminal": np.zeros(n, bool), "task_params": g.normal(size=2)}


def mutate_arrays(data: dict, rng: random.Random) -> dict:
    name = rng.choice(sorted(data))
    v = np.asarray(data[name])
    roll = rng.randrange(10)
    if roll == 0:
        dtype = rng.choice([np.float16, np.float64, np.int8, np.int64, np.bool_, np.complex64, np.uint8, "<U3"])
        try:
            data[name] = v.astype(dtype)
        except (TypeError, ValueError):            # an earlier mutation made it strings or objects
            data[name] = v.astype("<U3")
    elif roll == 1:
        data[name] = v[:rng.randrange(len(v) + 1)] if v.ndim else v
    elif roll == 2:
        data[name] = v[..., None] if rng.random() < 0.5 or not v.size else v.reshape(-1)[:1].reshape(())
    elif roll == 3 and v.dtype.kind == "f" and v.size:
        v = v.copy()
        v.reshape(-1)[rng.randrange(v.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e38])
        data[name] = v
    elif roll == 4:
        data.pop(name)
    elif roll == 5:
        n = len(np.atleast_1d(data.get("rew", [0])))
        data[rng.choice(["x", "info", "truncated", "action_low", "action_high", "task"])] = \
            rng.choice([np.zeros(n), np.array([-1.0, 1.0]), np.array([[1, 2]]), np.array(["a"]), np.full(n, 7)])
    elif roll == 6:
        data[name] = np.array([{"x": 1}], dtype=object)
    elif roll == 7:
        data = {k: np.asarray(x)[:0] if np.ndim(x) and k != "task_params" else x for k, x in data.items()}
    elif roll == 8 and name == "act" and v.dtype.kind in "fiub":      # an earlier mutation may have made it an object
        data["act"] = v * 10.0
    else:
        data["task_params"] = rng.choice([np.zeros(3), np.array([np.nan, 0.0]), np.array(["a", "b"]), np.zeros((2, 2))])
    return data


def array_case(rng: random.Random, tmp: Path) -> tuple[list[str], str]:
    folder = tmp / "arrays"
    folder.mkdir()
    k = rng.randint(1, 3)
    for i in range(k):
        data = arrays(rng)
        for _ in range(rng.randint(0, 2) if rng.random() < 0.8 else 0):
            data = mutate_arrays(data, rng)
        path = folder / f"task-{i}.npz"
        np.savez(path, **data, allow_pickle=True) if any(np.asarray(v).dtype == object for v in data.values()) \
            else np.savez(path, **data)
        if rng.random() < 0.15:                    # a damaged file: cut short, a flipped byte, not a zip at all
            raw = bytearray(path.read_bytes())
            roll = rng.randrange(3)
            if roll == 0:
                raw = raw[:rng.randrange(len(raw))]
            elif roll == 1:
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            else:
                raw = bytearray(b"PK\x03\x04" + bytes(rng.randrange(256) for _ in range(64)))
            path.write_bytes(bytes(raw))
    store = str(tmp / "imported.zarr")
    source = str(folder) if rng.random() < 0.7 else str(folder / "task-0.npz")
    return ["import", "arrays", source, "--store", store, "--env", rng.choice(["point_goal", "none", "none", "nope"]),
            "--recipe", SMOKE, "--set", "threads=1"], store


# ---- links inside a store, and a second writer
def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.name.startswith(LOCK_FILE):           # the writer lock's holder record, not the store's content
            continue
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


def link_case(rng: random.Random, base: Path, tmp: Path) -> tuple[list[str], Path, Path]:
    store, outside = tmp / "linked.zarr", tmp / "outside"
    shutil.copytree(base, store)
    outside.mkdir()
    files = sorted(p for p in store.rglob("*") if p.is_file() and not p.name.startswith(LOCK_FILE))
    dirs = sorted(p for p in store.rglob("*") if p.is_dir())
    roll = rng.randrange(5)
    if roll == 0:                                   # a chunk or metadata file replaced by a link to its copy
        target = rng.choice(files)
        shutil.copy(target, outside / "copy")
        target.unlink()
        target.symlink_to(outside / "copy")
    elif roll == 1:                                 # a group replaced by a link to its copy
        target = rng.choice(dirs)
        shutil.copytree(target, outside / "group")
        shutil.rmtree(target)
        target.symlink_to(outside / "group", target_is_directory=True)
    elif roll == 2:                                 # a dangling link
        (rng.choice(dirs + [store]) / "dangling").symlink_to(tmp / "nowhere")
    elif roll == 3:                                 # a new group that is a link to a directory outside
        (outside / "x").mkdir()
        shutil.copy(store / "zarr.json", outside / "x" / "zarr.json")
        (rng.choice(dirs + [store]) / "extra").symlink_to(outside / "x", target_is_directory=True)
    else:                                           # the lock file a link (a writer would follow it)
        (outside / "lockfile").write_text("")
        (store / LOCK_FILE).unlink(missing_ok=True)
        (store / LOCK_FILE).symlink_to(outside / "lockfile")
    command = rng.choice([["info", str(store)], ["info", str(store), "--check"], ["lock", str(store)],
                          ["run", str(store), "--set", "threads=1"], ["collect", str(store), "--force", "--set", "threads=1"],
                          ["bcq", str(store), "--set", "threads=1"], ["eval", str(store)]])
    return command, store, outside


def writer_case(rng: random.Random, base: Path, tmp: Path) -> tuple[list[str], Path, str | None]:
    store = tmp / "held.zarr"
    shutil.copytree(base, store)
    unit = rng.choice([None, None, "algo/mbml"])
    np.savez(tmp / "task-0.npz", **arrays(rng))
    command = rng.choice([["run", str(store), "--set", "threads=1"], ["collect", str(store), "--force", "--set", "threads=1"],
                          ["bcq", str(store), "--set", "threads=1"], ["distill", str(store), "--set", "threads=1"],
                          ["run", SMOKE, "--store", str(store), "--set", "stages=[collect]", "--set", "threads=1"],
                          ["import", "arrays", str(tmp), "--store", str(store), "--env", "none"]])
    return command, store, unit


def test_fuzz_commands_in_a_bounded_worker(tmp_path):
    from mbml_cli.core import writer
    rng = random.Random(SEED + 2)
    print(f"fuzz seed {SEED} ({REPLAY})")
    worker = Worker(tmp_path / "worker.log")
    t0, outcomes = time.perf_counter(), {}
    try:
        base = tmp_path / "base.zarr"                  # a collected store the link and writer cases copy
        made = worker.ask({"cli": ["run", SMOKE, "--store", str(base), "--set", "stages=[collect]", "--set", "threads=1",
                                   "--set", "collect.steps=120", "--set", "collect.random_steps=60"]}, "base store",
                          seconds=3 * SECONDS)      # the setup, in a worker that first imports torch: not a case
        assert made["code"] == 0, made
        kinds = ["run"] * RUN_CASES + ["arrays"] * ARRAY_CASES + ["link"] * LINK_CASES + ["writer"] * WRITER_CASES
        rng.shuffle(kinds)
        for i, kind in enumerate(kinds):
            tmp = tmp_path / f"case{i}"
            tmp.mkdir()
            case = f"{kind} case {i}"
            if kind == "run":
                args, store, steps = run_case(rng, tmp)
                code = accepted_or_refused(worker, args, case, store, steps, whole_line=False)
            elif kind == "arrays":
                args, store = array_case(rng, tmp)
                code = accepted_or_refused(worker, args, case, store)
            elif kind == "link":
                args, store, outside = link_case(rng, base, tmp)
                before = digest(outside)
                code = accepted_or_refused(worker, args, case, whole_line=args[0] not in ("run", "collect", "bcq", "eval"))
                assert digest(outside) == before, f"{case} [{REPLAY}]: mbml {args} wrote outside the store"
                if code == 0:
                    assert args[0] in ("info", "lock") or not any(p.is_symlink() for p in store.rglob("*")), \
                        f"{case} [{REPLAY}]: mbml {args} wrote a store holding a link"
            else:
                args, store, unit = writer_case(rng, base, tmp)
                before = digest(store)
                writer.acquire(str(store), command="the fuzzer", unit=unit)
                try:
                    code = accepted_or_refused(worker, args, case, str(store))
                finally:
                    writer.release(str(store), unit)
                assert code == 2, f"{case} [{REPLAY}]: mbml {args} ran while another writer held the store"
                assert digest(store) == before, f"{case} [{REPLAY}]: a refused mbml {args} changed the store"
            outcomes[(kind, code)] = outcomes.get((kind, code), 0) + 1
    finally:
        worker.close()
    elapsed = time.perf_counter() - t0
    print(f"fuzz: {len(kinds)} command cases in {elapsed:.1f}s, (kind, exit): {outcomes}")


@pytest.mark.parametrize("change, words", [
    ({"rew": np.zeros(0, np.float32), "obs": np.zeros((0, 2)), "act": np.zeros((0, 2)), "next_obs": np.zeros((0, 2)),
      "terminal": np.zeros(0, bool), "info": np.zeros((0, 1))}, ["no transitions"]),        # found by the fuzzer
    ({"act": np.full((40, 2), "0.5")}, ["act has dtype <U3", "expected numbers"]),          # found by the fuzzer
    ({"act": np.ones((40, 2), np.complex64)}, ["act has dtype complex64"]),
    ({"action_low": np.array([[1, 2]])}, ["action_low has shape (1, 2)"]),                  # found by the fuzzer
    ({"action_high": np.ones(40)}, ["action_high has shape (40,)"]),
])
def test_fuzz_found_imports(tmp_path, change, words):
    """Arrays the fuzzer found crashing `mbml import arrays` (a traceback): now one line each."""
    np.savez(tmp_path / "task-0.npz", **{**arrays(random.Random(0)), **change})
    result = runner.invoke(app, ["import", "arrays", str(tmp_path), "--store", str(tmp_path / "s.zarr"), "--env", "none"])
    check(result, f"import of {sorted(change)}")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and all(w in lines[0] for w in words), result.output
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("text, words", [('extends: "\\0"\nname: x\n', ["extends: must be a file name"]),
                                         (f"extends: {'x' * 5000}\nname: x\n", ["cannot be read (File name too long)"])])
def test_fuzz_found_recipes(tmp_path, text, words):
    """Recipes the fuzzer found crashing `mbml recipe` (ValueError: embedded null byte; OSError: file name
    too long): one short line each."""
    path = tmp_path / "r.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["recipe", str(path)])
    check(result, text[:40])
    assert result.exit_code == 2 and all(w in result.output for w in words), result.output


def test_fuzz_found_a_pre_flight_that_ran_the_updates_it_times(tmp_path):
    """Found by the fuzzer: `collect.updates_per_step: 1000000` was accepted and its pre-flight timed
    whole steps, a million updates each (hours); now one update is timed and scaled, and the run is
    refused at once as projected over the CPU limit."""
    args = ["run", SMOKE, "--store", str(tmp_path / "s.zarr"), "--set", "stages=[collect]", "--set", "threads=1",
            "--set", "collect.steps=120", "--set", "collect.random_steps=60", "--set", "collect.updates_per_step=1000000"]
    proc = subprocess.run([sys.executable, "-m", "mbml_cli.views.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=SECONDS, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "projected" in proc.stderr, proc.stderr[-2000:]


if __name__ == "__main__":
    serve()
