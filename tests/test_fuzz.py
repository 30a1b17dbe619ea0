"""Our own fuzzer (issue 17): mutated recipes and crafted stores, a fixed seed, bounded time. Every
case must end in exit 0, or exit 2 with one short `error:` line free of control characters — never
a traceback. Cases run in-process through the Typer app (a process per case would take minutes)."""
from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mbml_cli.views.cli import app
from trained_store import trained  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parent.parent
SEED = 17
RECIPE_CASES, SET_CASES, STORE_CASES = 170, 40, 40
runner = CliRunner()

NASTY = [0, -1, 1, 2 ** 31, 2 ** 32, 2 ** 64, 10 ** 30, -10 ** 12, 0.0, -0.5, 1e308, 1e-320, float("nan"),
         float("inf"), float("-inf"), True, False, None, "", "x" * 5000, "../../../tmp/x", "a/b", "\x00",
         "\x1b[31mred\x1b[0m", "[bold]markup[/bold]", "[/]", "é✓🙂", "1e6", ".nan", "~", [], [0], [1e8, 1e8],
         [10 ** 9, 10 ** 9], ["mbml", "nope"], [[1]], {}, {"a": 1}, {"name": {"x": []}}, list(range(100))]


def nasty(rng: random.Random):
    value = rng.choice(NASTY)
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
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"{case}: {type(exc).__name__}: {exc}"
    assert result.exit_code in (0, 2), f"{case}: exit {result.exit_code}: {result.stderr[-500:]}"
    if result.exit_code == 2:
        lines = result.stderr.splitlines()
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, f"{case}: {result.stderr[-1000:]}"
        assert len(errors[0]) < 600, f"{case}: a {len(errors[0])}-character error line"
        assert not any(c in errors[0] for c in "\x00\x1b\x07"), f"{case}: control characters in {errors[0]!r}"


def test_fuzz_recipes_and_set(tmp_path):
    rng = random.Random(SEED)
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
    assert outcomes[0] > 10 and outcomes[2] > 100, outcomes       # both outcomes really occur


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
    assert outcomes[0] > 5 and outcomes[2] > 5, outcomes
