"""The stage graph (`recipe/graph.py`): a change to one recipe key makes exactly the records
downstream of the stage that reads it stale, through the digests' chain; the plan is topological."""
from __future__ import annotations

import dataclasses

import pytest

from mbml_cli.recipe import graph
from mbml_cli.recipe.load import field_docs, load, resolve

ALGOS = ["mbml", "gt_relabel", "no_triplet", "no_relabel", "neither", "contextual_bcq", "batch_pearl"]
TEACHERS = ALGOS[:5]                       # the algorithms that distil the BCQ teachers
RELABELLED = ["mbml", "no_triplet"]        # the algorithms that read R̂ on other tasks' data


def per_algo(algos, stages=("distill", "eval", "probe")):
    return {f"{s}/{a}" for s in stages for a in algos}


EVERYTHING = {"collect", "bcq", "reward", "relabel", "finetune"} | per_algo(ALGOS)
# Written out by hand from what each stage reads (not from the graph): key prefix → records that change.
EXPECTED = {
    "seed": EVERYTHING, "env.": EVERYTHING, "data.": EVERYTHING, "shards": EVERYTHING, "collect.": EVERYTHING,
    "env.n_test": per_algo(ALGOS) | {"finetune"},
    "bcq.": {"bcq", "finetune"} | per_algo(TEACHERS),
    "reward.": {"reward", "relabel", "finetune"} | per_algo(RELABELLED),
    "relabel.": {"relabel", "finetune"} | per_algo(RELABELLED),
    "distill.": per_algo(ALGOS) | {"finetune"},
    "eval.episodes": per_algo(ALGOS) | {"finetune"}, "eval.skip": per_algo(ALGOS) | {"finetune"},
    "eval.repeats": per_algo(ALGOS) | {"finetune"},
    "eval.unseen_seed": per_algo(ALGOS, ("eval",)), "eval.probe_draws": per_algo(ALGOS, ("probe",)),
    "finetune.": {"finetune"}, "finetune.enabled": set(),
    "name": set(), "store": set(), "device": set(), "threads": set(), "stages": set(), "algos": set(),
}


def expected(key: str) -> set[str]:
    match = max((p for p in EXPECTED if key == p or (p.endswith(".") and key.startswith(p))), key=len)
    return EXPECTED[match]


def changed(value):
    """Another valid value of the same type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, list):
        return value[:-1] if value and isinstance(value[0], str) else [*value, 8]
    return {"full": "compact", "": "minari", "sample": "mean"}.get(value, value + "x")


def with_key(recipe, dotted: str, value):
    *path, last = dotted.split(".")
    if not path:
        return dataclasses.replace(recipe, **{last: value})
    section = getattr(recipe, path[0])
    return dataclasses.replace(recipe, **{path[0]: dataclasses.replace(section, **{last: value})})


@pytest.fixture(scope="module")
def recipe():
    r, _ = load("recipes/smoke.yaml", ["finetune.enabled=true", f"algos=[{','.join(ALGOS)}]"])
    return resolve(r)


@pytest.mark.parametrize("key", [k for k, _, _ in field_docs()])
def test_a_change_to_each_key_stales_exactly_what_is_downstream(recipe, key):
    keys = graph.plan(recipe)
    before = {k: graph.digest(recipe, k) for k in keys}
    value = recipe
    for part in key.split("."):
        value = getattr(value, part)
    other = with_key(recipe, key, changed(value))
    after = {k: graph.digest(other, k) for k in keys if k in graph.plan(other)}
    assert {k for k in after if after[k] != before[k]} == expected(key), key
    # the same through records: every record done with the old digests, then read with the new recipe
    records = done_records(recipe)
    stale = {k for k, s in graph.status(other, records).items() if s == "stale"}
    assert stale == {k for k in expected(key) if k in after}, key


def done_records(recipe) -> dict[str, dict]:
    """Every planned record done with today's digest, each having read the current run of its needs."""
    return {k: {"status": "done", "hash": graph.digest(recipe, k), "run": f"run-{k}",
                "inputs": {need: f"run-{need}" for need in graph.needs(recipe, k)}} for k in graph.plan(recipe)}


def test_a_record_that_is_not_done_stales_what_reads_it(recipe):
    records = done_records(recipe)
    assert set(graph.status(recipe, records).values()) == {"done"}
    records["bcq"] = {**records["bcq"], "status": "failed"}          # a forced re-run that diverged
    status = graph.status(recipe, records)
    assert status["bcq"] == "failed"
    assert {k for k, s in status.items() if s == "stale"} == {"finetune"} | per_algo(TEACHERS)
    assert graph.downstream(recipe, "bcq") == [k for k in graph.plan(recipe) if k in {"finetune"} | per_algo(TEACHERS)]


def test_a_re_run_upstream_stales_what_read_the_earlier_run(recipe):
    """`--force` with the same recipe: the digest is today's, but the records downstream read the
    earlier run (code, or a failure, may have changed what it wrote)."""
    records = done_records(recipe)
    records["relabel"] = {**records["relabel"], "run": "run-relabel-again"}
    stale = {k for k, s in graph.status(recipe, records).items() if s == "stale"}
    assert stale == {"finetune"} | per_algo(RELABELLED)


def test_the_plan_is_topological_and_in_the_declared_order(recipe):
    keys = graph.plan(recipe)
    assert keys[:4] == ["collect", "bcq", "reward", "relabel"] and keys[-1] == "finetune"
    for i, k in enumerate(keys):
        assert set(graph.needs(recipe, k)) <= set(keys[:i]), k
    plain = with_key(recipe, "finetune.enabled", False)
    assert "finetune" not in graph.plan(plain)
    assert graph.plan(with_key(plain, "stages", ["bcq", "collect"])) == ["collect", "bcq"]


def test_keys_added_since_stores_were_made_leave_their_digests_alone_at_the_default():
    """The smoke recipe's digests as the code before the MetaGenRL and inference-loss keys made them
    (revision 38443e7): a store made then stays fresh; setting a new key stales what reads it."""
    from conftest import SMOKE
    r = load(SMOKE)[0]
    assert graph.digest(r, "bcq") == graph.digest(load(SMOKE, ["bcq.relabelled=false"])[0], "bcq")
    assert {k: graph.digest(r, k) for k in ("collect", "distill/mbml", "distill/neither", "eval/mbml")} == {
        "collect": "d8f0871b9129b524", "distill/mbml": "6834ea6898e29d97",
        "distill/neither": "4485b592e0736478", "eval/mbml": "e8fe5abe5326259b"}
    for key in ("bcq.relabelled=true", "distill.dml_beta=2.0", "distill.inference_loss=infonce", "distill.metagenrl_window=10"):
        assert graph.digest(load(SMOKE, [key])[0], "distill/mbml") != "6834ea6898e29d97", key
    assert graph.digest(load(SMOKE, ["distill.dml_beta=2.0"])[0], "collect") == "d8f0871b9129b524"


def test_teachers_from_every_task_run_after_relabel_and_read_the_reward_models(recipe):
    """`bcq.relabelled`: bcq needs relabel, so the plan puts it after reward and relabel, and a change to
    the reward models stales the teachers and everything they teach."""
    r = with_key(recipe, "bcq", dataclasses.replace(recipe.bcq, relabelled=True))
    assert graph.plan(r)[:4] == ["collect", "reward", "relabel", "bcq"]
    assert graph.needs(r, "bcq") == ("collect", "relabel")
    reward = with_key(r, "reward", dataclasses.replace(r.reward, steps=r.reward.steps + 1))
    moved = {k for k in graph.plan(r) if graph.digest(r, k) != graph.digest(reward, k)}
    assert moved == {"reward", "relabel", "bcq", "finetune"} | per_algo(TEACHERS) | per_algo(RELABELLED)
