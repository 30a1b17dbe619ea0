"""Every random stream of a run, by name: `stream(seed, name, *ids)` is `SeedSequence([seed, id,
*ids])`, independent across names, tasks and episodes.

The ids are the numbers every stored result was drawn with; a new stream takes a new id. The older
streams made by an offset (`reward`: seed + 3000, ...) keep their values for seeds below
`OFFSET_SEEDS`, where no two of them meet (every committed result has seed 0, 1 or 2); from there on
each (seed, stream, salt) has its own value above them all (seed 100 of `mbml` and seed 0 of
`gt_relabel` gave the same 4100 before).
"""
from __future__ import annotations

import numpy as np

STREAMS = {
    "collect/init": 1, "collect/sample": 2, "collect/reset": 3,
    "bcq/init": 11, "bcq/sample": 12, "bcq/noise": 13, "bcq/eval": 14, "bcq/report": 15, "bcq/random": 16,
    "finetune/init": 7000, "finetune/sample": 7001, "finetune/host": 7002, "finetune/reset": 7003,
    "finetune/eval": 7004,
}
OFFSETS = {"reward": 3_000, "distill": 4_000, "probe": 6_000, "offline": 8_000, "eval/on_demand": 77_777}
OFFSET_SEEDS = 100          # below it, offset streams keep their values; `distill` adds 100 · salt


def stream(seed: int, name: str, *ids: int) -> int:
    """A 32-bit seed of the named stream (task, episode, ... in `ids`)."""
    return derive(seed, STREAMS[name], *ids)


def derive(*parts: int) -> int:
    """A 32-bit seed from non-negative integers: independent streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def offset(seed: int, name: str, salt: int = 0) -> int:
    """The seed of an offset stream: seed + OFFSETS[name] (+ 100 · salt) below OFFSET_SEEDS; from
    there on 2⁴⁰ + (seed, stream, salt) packed into bits, one value each and above every offset value."""
    if seed < OFFSET_SEEDS:
        return seed + OFFSETS[name] + 100 * salt
    return (1 << 40) + (seed << 8) + (list(OFFSETS).index(name) << 4) + salt
