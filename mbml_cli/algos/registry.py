"""The distillation algorithms: one spec each, torch-free, so that the stage graph, `mbml info` and
`mbml report` can ask what an algorithm is without importing torch.

A spec's `salt` belongs to the name: it seeds the algorithm's random streams, and reordering this
table changes no seed (the values are those every stored result was made with). `needs` names the
stages whose records the algorithm's distillation reads (the stage graph chains their digests).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    salt: int                  # its random streams: seed + 4100 + 100 · salt (distill.py)
    group: str                 # "mbml", "ablation" or "baseline": where `mbml report` shows it
    needs: tuple[str, ...]     # stages it reads: "bcq" (teachers), "relabel" (R̂ on other tasks' data)
    doc: str


SPECS = (
    AlgoSpec("mbml", 0, "mbml", ("bcq", "relabel"), "the full model: relabelled contexts and the triplet loss"),
    AlgoSpec("gt_relabel", 1, "ablation", ("bcq",), "MBML relabelled with the true rewards"),
    AlgoSpec("no_triplet", 2, "ablation", ("bcq", "relabel"), "relabelled contexts, no triplet loss"),
    AlgoSpec("no_relabel", 3, "ablation", ("bcq",), "the hardest-pair triplet (Eq. 11), no relabelling"),
    AlgoSpec("neither", 4, "ablation", ("bcq",), "no relabelling and no triplet loss"),
    AlgoSpec("contextual_bcq", 5, "baseline", (), "one BCQ conditioned on the inferred task"),
    AlgoSpec("batch_pearl", 6, "baseline", (), "PEARL's SAC on the batches, no environment step"),
)
ALGOS: dict[str, AlgoSpec] = {s.name: s for s in SPECS}
NAMES = tuple(ALGOS)
