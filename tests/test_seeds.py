"""Named random streams (`core/seeds.py`): the values every stored result was drawn with, and no two
streams of different names, algorithms or seeds on the same seed."""
from __future__ import annotations

import numpy as np

from mbml_cli.algos.registry import ALGOS
from mbml_cli.core import seeds


def test_named_streams_keep_their_values():
    first = lambda *parts: int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
    assert seeds.stream(5, "bcq/init", 0, 1, 2) == first(5, 11, 0, 1, 2)
    assert seeds.stream(0, "collect/reset", 3, 7) == first(0, 3, 3, 7)
    assert seeds.stream(2, "finetune/eval", 1, 0, 4, 1) == first(2, 7004, 1, 0, 4, 1)


def test_offset_streams_keep_their_values_below_100():
    assert seeds.offset(2, "reward") == 3002
    assert seeds.offset(1, "distill", ALGOS["gt_relabel"].salt) == 4101
    assert seeds.offset(0, "eval/on_demand") == 77_777


def test_no_two_offset_streams_meet():
    """Seed 100 of mbml and seed 0 of gt_relabel both gave 4100 + 100 before; now every (stream, salt,
    seed) of the first 1,000 seeds has its own value."""
    values = {}
    for seed in range(1000):
        for name in seeds.OFFSETS:
            for salt in ([s.salt for s in ALGOS.values()] if name == "distill" else [0]):
                v = seeds.offset(seed, name, salt)
                assert v not in values, (seed, name, salt, values.get(v))
                values[v] = (seed, name, salt)
    assert seeds.offset(2 ** 32 - 1, "eval/on_demand") < 2 ** 63                     # a valid torch seed
