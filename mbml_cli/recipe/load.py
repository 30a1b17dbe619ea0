"""Recipes: YAML → typed `Recipe`, with `extends:`, `--set a.b=v` overrides and one-line errors.

Every error names the file and the dotted key (and the nearest valid key for a typo); the CLI
prints it and exits 2.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from pathlib import Path


from .config import RETIRED, Recipe
from ..errors import RecipeError
from .inputs import InputError, load_yaml, read_text, short

META_KEYS = ("extends", "lock")   # allowed at the top level, not part of the config
SHORT_PATH = 200                 # characters of a file name quoted in an error message
INT_MAX = 10 ** 9                 # an int field without its own maximum
SEED_MAX = 2 ** 32 - 1
WIDTH_MAX = 65_536                # a layer width


def yaml_hint(path: Path) -> str:
    """' (did you mean X.yaml?)' when the name lacks a suffix that would make it an existing recipe."""
    for suffix in (".yaml", ".yml"):
        if Path(f"{path}{suffix}").is_file():
            return f" (did you mean {path}{suffix}?)"
    return ""


def read_yaml(path: Path) -> dict:
    try:
        found = path.is_file()
    except OSError as e:                         # a name too long for the file system (a fuzzed `extends`)
        name = str(path) if len(str(path)) <= SHORT_PATH else str(path)[:SHORT_PATH - 1] + "…"
        raise RecipeError(name, "", f"cannot be read ({e.strerror or type(e).__name__})") from None
    if not found:
        raise RecipeError(str(path), "", "no such recipe file" + yaml_hint(path))
    try:
        data = load_yaml(read_text(path))
    except InputError as e:
        raise RecipeError(str(path), "", str(e)) from None
    except OSError as e:
        raise RecipeError(str(path), "", f"cannot be read ({e.strerror or type(e).__name__})") from None
    if data is None:
        raise RecipeError(str(path), "", "empty recipe (an empty file would run the paper-scale defaults); "
                                         "name at least the run and its env")
    if not isinstance(data, dict):
        raise RecipeError(str(path), "", "a recipe must be a mapping of sections")
    return data


def merge(base: dict, over: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_raw(path: Path, _seen: tuple = ()) -> dict:
    """The recipe's mapping with its `extends:` chain merged in (the child wins)."""
    path = Path(path)
    if path.resolve() in _seen:
        raise RecipeError(str(path), "extends", "circular extends")
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or "\0" in parent:
        raise RecipeError(str(path), "extends", "must be a file name")
    return merge(load_raw(path.parent / parent, _seen + (path.resolve(),)), data)


def parse_set(items: list[str], source: str = "--set") -> dict:
    """`["distill.margin=3", "seed=1"]` → nested mapping; values are read as YAML scalars/lists."""
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(source, item, "expected section.key=value")
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise RecipeError(source, short(key.strip(), 60), "sets a key below a value")
        try:
            node[leaf] = load_yaml(value)
        except InputError:
            node[leaf] = value
    return out


def _check_value(value, tp, meta: dict, source: str, key: str):
    """Validate one leaf against its declared type and metadata; returns the (coerced) value."""
    name = getattr(tp, "__name__", str(tp))
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif tp is list:
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise RecipeError(source, key, f"expected {name}, got {type(value).__name__} {short(value)}")
    if tp is float and not math.isfinite(value):
        raise RecipeError(source, key, f"{value!r} is not a finite number")
    lo, hi = meta.get("min"), meta.get("max")
    if tp is int and hi is None:
        hi = INT_MAX
    if lo is not None and value < lo or hi is not None and value > hi:
        bounds = f"[{lo}, {hi}]" if lo is not None and hi is not None else (f">= {lo}" if hi is None else f"<= {hi}")
        raise RecipeError(source, key, f"{short(value)} out of range, must be {bounds}")
    if tp is str and "choices" not in meta and len(value) > 4096:
        raise RecipeError(source, key, f"{len(value):,} characters, longer than 4096")
    if "choices" in meta and value not in meta["choices"]:
        raise RecipeError(source, key, f"{short(value)} is not one of {', '.join(meta['choices'])}")
    if tp is list:
        allowed = meta.get("items")
        if len(value) > meta.get("max_items", 64):
            raise RecipeError(source, key, f"{len(value)} items, more than {meta.get('max_items', 64)}")
        for item in value:
            if allowed is not None and not (isinstance(item, str) and item in allowed):
                near = difflib.get_close_matches(str(item), allowed, n=1) if isinstance(item, str) else []
                hint = f" (did you mean {near[0]!r}?)" if near else f" (one of {', '.join(allowed)})"
                raise RecipeError(source, key, f"unknown item {short(item)}{hint}")
            if meta.get("strings"):
                if not isinstance(item, str) or not item:
                    raise RecipeError(source, key, f"expected a list of non-empty strings, got {short(item)}")
            elif allowed is None and not (isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= WIDTH_MAX):
                raise RecipeError(source, key, f"expected a list of positive integers (at most {WIDTH_MAX}), got {short(item)}")
    return value


def build(cls, data: dict, source: str, prefix: str = ""):
    """Instantiate dataclass `cls` from `data`, checking every key and type."""
    if not isinstance(data, dict):
        raise RecipeError(source, prefix.rstrip("."), f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + (str(key) if len(str(key)) <= 60 else short(str(key), 60))
        retired = RETIRED.get(prefix.rstrip("."), {})
        if key not in fields and key in retired:
            if type(value) is not type(retired[key]) or value != retired[key]:
                raise RecipeError(source, dotted, f"{short(value)}: this key was measured and retired (RESULTS.md, "
                                                  f"\"Distillation levers\"); only {retired[key]!r} is accepted")
            continue
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix}{near[0]}?)" if near else ""
            raise RecipeError(source, dotted, f"unknown key{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value, source, dotted + ".")
        else:
            kwargs[key] = _check_value(value, tp, dict(fields[key].metadata), source, dotted)
    return cls(**kwargs)


def load(path: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, dict]:
    """Read a recipe file (with extends and --set). Returns (recipe, lock-or-{})."""
    path = Path(path)
    raw = load_raw(path)
    lock = raw.pop("lock", None) or {}
    recipe = build(Recipe, raw, str(path))
    validate(recipe, str(path))
    if overrides:   # checked apart, so that an error names the place it comes from
        source = f"{path} (with --set)"
        recipe = build(Recipe, merge(raw, parse_set(overrides)), source)
        validate(recipe, source)
    return recipe, lock


def from_dict(data: dict, source: str = "store") -> Recipe:
    return build(Recipe, data, source)


def validate(recipe: Recipe, source: str) -> None:
    """Cross-field checks that one field's type cannot express."""
    from .. import envs
    from . import limits

    try:
        dist = envs.get(recipe.env.name)
    except LookupError as e:
        raise RecipeError(source, "env.name", str(e)[:300]) from None
    try:
        envs.of(recipe.env)
    except LookupError as e:
        raise RecipeError(source, "env.observation", str(e)[:300]) from None
    n_train = recipe.env.n_train or dist.n_train
    if n_train and recipe.shards > n_train:
        raise RecipeError(source, "shards", f"{recipe.shards} shards of {n_train} training tasks (at most one per task)")
    if recipe.eval.skip >= recipe.eval.episodes:
        raise RecipeError(source, "eval.skip", "must be smaller than eval.episodes")
    problem = limits.name_problem(recipe.name)
    if problem:
        raise RecipeError(source, "name", f"{short(recipe.name)}: {problem}")


def check_memory(recipe: Recipe, source: str) -> None:
    """Refuse, before anything is allocated, a recipe whose largest allocation exceeds the machine's memory."""
    from . import limits

    need, have, what = limits.memory_estimate(recipe)
    if need > have:
        raise RecipeError(source, what, f"would need about {limits.gib(need)} of memory "
                                        f"(this machine has {limits.gib(have)})")


def resolve(recipe: Recipe) -> Recipe:
    """Fill the distribution's defaults (H, K, test tasks) and the store path in."""
    from .. import envs

    r = dataclasses.replace(recipe, env=dataclasses.replace(recipe.env))
    dist = envs.get(r.env.name)
    r.env.horizon = r.env.horizon or dist.horizon
    r.env.n_train = r.env.n_train or dist.n_train
    r.env.n_test = r.env.n_test or dist.n_test
    r.store = r.store or f"runs/{r.name}-s{r.seed}.zarr"
    return r


def to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def field_docs(cls=Recipe, prefix: str = "") -> list[tuple[str, str, object]]:
    """(dotted key, doc, default) for every leaf, for the README and `mbml recipe`."""
    out = []
    hints = typing.get_type_hints(cls)
    inst = cls()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += field_docs(hints[f.name], prefix + f.name + ".")
        else:
            out.append((prefix + f.name, f.metadata.get("doc", ""), getattr(inst, f.name)))
    return out
