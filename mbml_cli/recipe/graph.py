"""The stage graph: every stage once, with the recipe keys it reads, the stages it needs, whether it
runs once per algorithm, and whether `mbml run` includes it by default. Torch-free.

A record's digest hashes its own keys of the recipe and the digests of the records it needs (as
Snakemake and DVC hash a rule's inputs), so a change anywhere upstream changes every digest
downstream by itself. Each finished record also gets a `run` token, and a record keeps the tokens of
the records it read (`inputs`): a stage re-run upstream (`--force`, or after a failure) makes what
read the earlier run stale too. A record is *fresh* when it is done, its stored digest is today's,
it read the current run of every record it needs, and those are fresh; anything else that has run is
*stale*. `mbml run` skips fresh records and re-runs the rest in the graph's topological order.

Record keys: `collect`, `bcq`, ... for stages that run once; `distill/<algo>`, `eval/<algo>`,
`probe/<algo>` for stages that run once per algorithm (a need named without an algorithm is the
same algorithm's).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Callable

from ..algos.registry import ALGOS

# `Recipe` in the annotations is config.Recipe; config imports this module for the stage names.


@dataclass(frozen=True)
class Node:
    name: str
    keys: tuple[str, ...]                         # recipe keys (dotted) whose change re-runs it
    needs: Callable[[Recipe, str | None], tuple[str, ...]]    # (recipe, algo) → record keys it reads
    per_algo: bool = False                        # records `<name>/<algo>`, one per algorithm
    included: Callable[[Recipe], bool] | None = None     # None: in `mbml run` when the recipe's `stages` lists
                                                          # it (and by default); else when this says so
    ignore: tuple[str, ...] = ()                  # dotted keys under `keys` that change no number


def _needs(*keys: str):
    return lambda r, algo: keys


def _distill_needs(r: Recipe, algo: str | None) -> tuple[str, ...]:
    return ("collect",) + ALGOS[algo].needs if algo in ALGOS else ("collect",)


NODES = (
    # seed, env and imported data shape every number: they are collect's, and so everyone's through the chain
    Node("collect", ("seed", "env", "data", "shards", "collect"), _needs(), ignore=("env.n_test",)),
    # teachers from every task's data (`bcq.relabelled`) read the relabelled transitions: bcq after relabel
    Node("bcq", ("bcq",), lambda r, algo: ("collect", "relabel") if r.bcq.relabelled else ("collect",)),
    Node("reward", ("reward",), _needs("collect")),
    Node("relabel", ("relabel",), _needs("reward")),
    # distill evaluates on the test tasks as it trains: the protocol's sizes and the test tasks are its inputs
    Node("distill", ("distill", "eval.episodes", "eval.skip", "eval.repeats", "env.n_test"), _distill_needs,
         per_algo=True),
    Node("eval", ("eval.unseen_seed",), _needs("distill"), per_algo=True),
    Node("probe", ("eval.probe_draws",), _needs("distill"), per_algo=True),
    Node("finetune", ("finetune",), _needs("distill/mbml"), included=lambda r: r.finetune.enabled,
         ignore=("finetune.enabled",)),
)
GRAPH: dict[str, Node] = {n.name: n for n in NODES}
NAMES = tuple(GRAPH)
DEFAULT = tuple(n.name for n in NODES if n.included is None)       # the `stages` key's default


def split(key: str) -> tuple[str, str | None]:
    """(stage, algo) of a record key; algo None for a stage that runs once."""
    name, _, rest = key.partition("/")
    return name, (rest or None) if GRAPH.get(name, NODES[0]).per_algo else None


def record_key(name: str, algo: str | None = None) -> str:
    return f"{name}/{algo}" if algo and GRAPH[name].per_algo else name


def needs(recipe: Recipe, key: str) -> tuple[str, ...]:
    """Record keys `key` reads (a per-algorithm need without an algorithm is `key`'s own algorithm's)."""
    name, algo = split(key)
    return tuple(need if "/" in need or not GRAPH[need].per_algo else record_key(need, algo)
                 for need in GRAPH[name].needs(recipe, algo))


def _pick(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


def _drop(d: dict, dotted: str) -> None:
    *path, last = dotted.split(".")
    for part in path:
        d = d[part]
    d.pop(last, None)


# Keys (dotted prefixes) added to the recipe after stores were made with it: at their default value they are
# left out of every digest, so those stores stay fresh; any other value is hashed as usual.
ADDED = ("bcq.relabelled", "distill.inference_loss", "distill.dml_", "distill.infonce_", "distill.metagenrl_")


@functools.lru_cache(maxsize=None)
def _defaults(recipe_type: type) -> dict:
    """The Recipe class's defaults, made once (config imports this module, so the class is passed in)."""
    return dataclasses.asdict(recipe_type())


def _added_at_default(d: dict, recipe_type: type) -> list[str]:
    defaults = _defaults(recipe_type)
    section = lambda path: path.rpartition(".")[0]
    keys = [f"{sec}.{name}" for sec in {section(p) for p in ADDED} for name in d.get(sec, {})]
    return [k for k in keys if k.startswith(ADDED) and _pick(d, k) == _pick(defaults, k)]


def _strip_added(d: dict, recipe_type: type) -> dict:
    """`d` with the added keys (`ADDED`) that are at their default dropped, in place."""
    for k in _added_at_default(d, recipe_type):
        _drop(d, k)
    return d


def without_added(d: dict, recipe_type: type) -> dict:
    """A copy of the recipe dict `d` without the added keys at their default: a recipe written before
    they existed compares equal to today's same recipe (a sweep's own file, say), as its digests do."""
    return _strip_added(copy.deepcopy(d), recipe_type)


def digest(recipe: Recipe, key: str, _memo: dict | None = None) -> str:
    """The hash of `key`'s recipe keys and of the digests of the records it needs."""
    memo = {} if _memo is None else _memo
    if key not in memo:
        node = GRAPH[split(key)[0]]
        d = _strip_added(dataclasses.asdict(recipe), type(recipe))
        picked = {k: _pick(d, k) for k in node.keys}
        for k in node.ignore:
            _drop(picked, k)
        picked = {"stage": node.name, "keys": picked,
                  "needs": {need: digest(recipe, need, memo) for need in needs(recipe, key)}}
        memo[key] = hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]
    return memo[key]


def plan(recipe: Recipe) -> list[str]:
    """The record keys `mbml run` does, in topological order: the recipe's `stages`, and a stage with its
    own `included` (finetune) when that says so; per-algorithm stages once per algorithm, each after
    what it needs."""
    chosen = [n for n in NODES if (n.name in recipe.stages if n.included is None else n.included(recipe))]
    keys = [record_key(n.name, a) for n in chosen for a in (recipe.algos if n.per_algo else [None])]
    ordered: list[str] = []
    while keys:                       # Kahn's order; among the ready, the graph's declared order
        ready = next((k for k in keys if not set(needs(recipe, k)) & set(keys)), None)
        if ready is None:
            raise ValueError(f"the stage graph has a cycle among {keys}")
        ordered.append(ready)
        keys.remove(ready)
    return ordered


def inputs(recipe: Recipe, key: str, record: Callable[[str], dict]) -> dict[str, str | None]:
    """The run tokens of the records `key` needs, as they are now: what a run of `key` reads."""
    return {need: (record(need) or {}).get("run") for need in needs(recipe, key)}


def freshness(recipe: Recipe, record: Callable[[str], dict]) -> Callable[[str], bool]:
    """fresh(key): the record `record(key)` is done with today's digest, read the current run of
    everything it needs, and all that is fresh too."""
    digests: dict = {}
    memo: dict[str, bool] = {}

    def fresh(key: str) -> bool:
        if key not in memo:
            rec = record(key) or {}
            memo[key] = (rec.get("status") == "done" and rec.get("hash") == digest(recipe, key, digests)
                         and rec.get("inputs") == inputs(recipe, key, record)
                         and all(fresh(need) for need in needs(recipe, key)))
        return memo[key]
    return fresh


def status(recipe: Recipe, records: dict[str, dict]) -> dict[str, str]:
    """The status of every planned or recorded stage key: the record's own (running, failed,
    interrupted, partial), 'done' when fresh, 'stale' when done but its inputs changed since (its
    digest, or a record it needs is no longer fresh), 'pending' when it never ran."""
    fresh = freshness(recipe, lambda k: records.get(k))
    recorded = [k for k in records if split(k)[0] in GRAPH and _stage_key(k)]
    out = {}
    for key in dict.fromkeys(plan(recipe) + recorded):
        st = (records.get(key) or {}).get("status")
        out[key] = "pending" if not st else st if st != "done" else "done" if fresh(key) else "stale"
    return out


def _stage_key(key: str) -> bool:
    """A stage's record (`bcq`, `distill/mbml`), not a per-task one (`bcq/3`) or a side result (`eval/mbml-unseen`)."""
    name, algo = split(key)
    return algo in ALGOS if GRAPH[name].per_algo else "/" not in key


def downstream(recipe: Recipe, key: str) -> list[str]:
    """Planned record keys that read `key`, directly or through others."""
    def reads(k: str) -> bool:
        return any(need == key or reads(need) for need in needs(recipe, k))
    return [k for k in plan(recipe) if reads(k)]
