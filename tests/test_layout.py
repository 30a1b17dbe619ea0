"""The store schema: the README's layout section is generated from it, and every node a run writes
(the whole pipeline plus fine-tuning) belongs to one of its artefacts, of the right kind."""
import re

import zarr

from conftest import ROOT
from mbml_cli.core import layout
from mbml_cli.core.store import Store


def test_readme_layout_section_is_the_schema():
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"<!-- layout:start -->\n(.*?)\n<!-- layout:end -->", readme, re.S)
    assert section, "README.md has no layout section"
    assert section.group(1) == layout.markdown(), "README layout section is stale: python -m mbml_cli.core.layout"


def test_paths_fields_and_matching():
    assert all(getattr(layout, name) is a for name, a in zip(layout.NAMES, layout.SCHEMA))   # table = names
    assert len({a.pattern for a in layout.SCHEMA}) == len(layout.SCHEMA)
    assert layout.BATCH("train", 3) == "data/train/3"
    assert layout.METRICS("finetune", "mbml/0") == "metrics/finetune/mbml/0"
    assert layout.checkpoint("distill", "mbml") == "models/distill/mbml/checkpoint"
    assert layout.checkpoint("bcq", "0-2") == "models/bcq/checkpoint/0-2"
    assert layout.find("models/bcq/checkpoint/all") is layout.CHECKPOINT
    assert layout.find("models/bcq/final/4") is layout.BCQ
    assert layout.find("models/distill/mbml/checkpoint") is layout.DISTILL_CHECKPOINT
    assert layout.find("eval/mbml/history") is layout.EVAL_HISTORY
    assert layout.find("eval/mbml/probe") is layout.PROBE
    assert layout.find("data/finetune/mbml/0") is layout.FINETUNE_BATCH
    assert layout.find("models/something/else") is None
    assert layout.find("models/reward/error", {"array"}) is layout.REWARD_ERROR
    assert layout.find("models/reward/reward", {"weights", "group", "attrs"}) is layout.REWARD_MODEL
    assert layout.stage_key("eval", "mbml") == "eval/mbml" and layout.stage_key("collect", 0) == "collect/0"
    assert layout.parent(layout.BATCH, "train") == "data/train" and layout.parent(layout.STAGE) == "stages"


def kind_of(node) -> set[str]:
    if isinstance(node, zarr.Array):
        return {"array"}
    kinds = {"attrs", "group"}
    if "n" in node.attrs:
        kinds.add("table")
    if "current" in node.attrs:
        kinds.add("weights")
    return kinds


def test_every_node_of_a_run_belongs_to_an_artefact(finetuned):
    path, _ = finetuned
    root = Store.open(path).root
    found, stray = set(), []

    def walk(group, prefix, covered):
        for name, node in group.members():
            where = f"{prefix}{name}"
            artefact = layout.find(where, kind_of(node))
            if artefact is not None:
                found.add(artefact.pattern)
            if isinstance(node, zarr.Array):
                if artefact is None and not covered:
                    stray.append(where)
            else:
                walk(node, where + "/", covered or (artefact is not None and artefact.kind != "attrs"))

    walk(root, "", False)
    assert not stray, f"nodes outside the schema: {stray[:10]}"
    missing = {a.pattern for a in layout.SCHEMA} - found
    # stage checkpoints go when a stage ends; imported data without an environment has the next two
    # (tests/test_import_arrays.py); MetaGenRL's agents are not in the smoke run (tests/test_metagenrl.py)
    assert missing == {layout.CHECKPOINT.pattern, layout.HELDOUT_BATCH.pattern, layout.OFFLINE_CHECK.pattern,
                       layout.AGENT_HISTORY.pattern}, missing
