"""The distillation algorithms: one spec each, torch-free, so that the stage graph, `mbml info`,
`mbml report` and the recipe can ask what an algorithm is without importing torch.

A spec's `salt` belongs to the name: it seeds the algorithm's random streams, and reordering this
table changes no seed (the values are those every stored result was made with). `needs` names the
stages whose records the algorithm's distillation reads (the stage graph chains their digests).

A spec names the module under algos/ that trains it; that module (imported on first use, it needs
torch) has `POLICY`, the policy class a stored policy is rebuilt with, and `build_trainer(r, data,
device, ...)`, which takes from the recipe only the keys the algorithm reads (the module's config
dataclass) and returns the trainer that `mbml distill` drives. MBML and its ablations are one
module with a `Variant` each (Sec. 5.2); the baselines have none.

The table is in the order the report shows it: MBML, its ablations (Fig. 6), the full model with other
task-inference losses (group "loss"), the baselines (Fig. 4).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """MBML's ablations are settings of one algorithm (Sec. 5.2), read by algos/mbml.py."""
    relabel_context: bool        # mix relabelled transitions of other tasks into c_i ("full model")
    loss: str                    # the task-inference loss: a key of algos/inference_loss.py's LOSSES
    true_rewards: bool = False   # relabel with the distribution's true reward instead of R̂_i
    loss_from_recipe: bool = False   # the loss is `distill.inference_loss` (the full model), `loss` its default


# `distill.inference_loss` (the full model's task-inference loss) → its key of algos/inference_loss.py's
# LOSSES; `mbml report` names every variant's loss by these short names ("none": no_triplet, neither)
INFERENCE_LOSSES = {"triplet": "relabelled_triplet", "hardest": "hardest_triplet", "dml": "dml", "infonce": "infonce"}
LOSS_NAMES = {**{v: k for k, v in INFERENCE_LOSSES.items()}, "none": "none"}


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    salt: int                  # its random streams: core/seeds.offset(seed, "distill", salt)
    group: str                 # "mbml", "ablation", "loss" or "baseline": where `mbml report` shows it
    needs: tuple[str, ...]     # stages it reads: "bcq" (teachers), "relabel" (R̂ on other tasks' data)
    colour: str                # its lines in `mbml report`'s figures
    doc: str                   # an ablation's is its label in the report's tables
    module: str                # the module under algos/ that trains it
    variant: Variant | None = None   # MBML's settings; None for a baseline

    def trainer_module(self):
        """The module that trains it (imported here, not above: it needs torch)."""
        return importlib.import_module(f"{__package__}.{self.module}")

    def policy_class(self) -> type:
        return self.trainer_module().POLICY

    def build_trainer(self, r, data, device, teachers=None, rel=None):
        """The trainer `mbml distill` drives. MBML's variants distil the K `teachers` (with the
        relabelled rewards `rel` where they relabel); a baseline learns from the data alone."""
        if self.variant is None:
            return self.trainer_module().build_trainer(r, data, device)
        return self.trainer_module().build_trainer(r, data, device, self.variant, teachers, rel)


SPECS = (
    AlgoSpec("mbml", 0, "mbml", ("bcq", "relabel"), "#1f77b4",
             "the full model: relabelled contexts and the triplet loss",
             "mbml", Variant(relabel_context=True, loss="relabelled_triplet", loss_from_recipe=True)),
    AlgoSpec("gt_relabel", 1, "ablation", ("bcq",), "#9467bd",
             "true rewards for relabelling",
             "mbml", Variant(relabel_context=True, loss="relabelled_triplet", true_rewards=True)),
    AlgoSpec("no_relabel", 3, "ablation", ("bcq",), "#d62728",
             "hardest-pair triplet, Eq. 11",
             "mbml", Variant(relabel_context=False, loss="hardest_triplet")),
    AlgoSpec("no_triplet", 2, "ablation", ("bcq", "relabel"), "#2ca02c",
             "relabelled context, no triplet",
             "mbml", Variant(relabel_context=True, loss="none")),
    AlgoSpec("neither", 4, "ablation", ("bcq",), "#ff7f0e",
             "no relabelling, no triplet",
             "mbml", Variant(relabel_context=False, loss="none")),
    # the full model with another task-inference loss (issue 38): only the loss differs from `mbml`
    AlgoSpec("mbml_dml", 8, "loss", ("bcq", "relabel"), "#e377c2",
             "FOCAL's distance-metric loss on posterior means",
             "mbml", Variant(relabel_context=True, loss="dml")),
    AlgoSpec("mbml_infonce", 9, "loss", ("bcq", "relabel"), "#bcbd22",
             "CORRO's InfoNCE, negatives relabelled by R̂",
             "mbml", Variant(relabel_context=True, loss="infonce")),
    AlgoSpec("contextual_bcq", 5, "baseline", (), "#8c564b",
             "one BCQ conditioned on the inferred task", "contextual_bcq"),
    AlgoSpec("batch_pearl", 6, "baseline", (), "#17becf",
             "PEARL's SAC on the batches, no environment step", "batch_pearl"),
    AlgoSpec("metagenrl", 7, "baseline", (), "#7f7f7f",
             "K TD3 agents trained by one learned objective (Fig. 5)", "metagenrl"),
)
ALGOS: dict[str, AlgoSpec] = {s.name: s for s in SPECS}
NAMES = tuple(ALGOS)


def in_group(*groups: str) -> tuple[str, ...]:
    """The names of the given report groups, in the table's order."""
    return tuple(s.name for s in SPECS if s.group in groups)
