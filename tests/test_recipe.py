"""Recipes: every shipped recipe parses; extends and --set merge; bad input names file and key."""
import dataclasses
from pathlib import Path

import pytest

from mbml_cli.recipe import load as rc
from mbml_cli.recipe.config import Recipe

RECIPES = sorted(Path(__file__).resolve().parent.parent.joinpath("recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses(path):
    recipe, lock = rc.load(path)
    assert isinstance(recipe, Recipe) and lock == {}
    assert recipe.name == path.stem


def test_cpu_recipe_extends_paper_recipe():
    paper, _ = rc.load(RECIPES[0].parent / "halfcheetah_vel.yaml")
    cpu, _ = rc.load(RECIPES[0].parent / "halfcheetah_vel_cpu.yaml")
    assert cpu.env.name == paper.env.name == "halfcheetah_vel"
    assert cpu.env.horizon == 200 and paper.env.horizon == 1000
    assert cpu.bcq.phi == paper.bcq.phi == 0.05            # inherited
    assert cpu.distill.margin == paper.distill.margin == 2.0
    assert len(paper.distill.q_hidden) == 9 and paper.distill.q_hidden[0] == 1024


def test_set_overrides_and_resolve(tmp_path):
    r, _ = rc.load(RECIPES[0].parent / "smoke.yaml", ["distill.margin=3", "seed=4", "algos=[mbml]"])
    assert r.distill.margin == 3.0 and isinstance(r.distill.margin, float)
    assert r.seed == 4 and r.algos == ["mbml"]
    resolved = rc.resolve(r)
    assert resolved.store == "runs/smoke-s4.zarr" and resolved.env.horizon == 20


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, key, fragment", [
    ("name: x\ndistill: {margn: 2}\n", "distill.margn", "did you mean distill.margin?"),
    ("name: x\nseed: abc\n", "seed", "expected int"),
    ("name: x\nbcq: {phi: 1.5}\n", "bcq.phi", "out of range"),
    ("name: x\nenv: {name: cheetah}\n", "env.name", "unknown distribution"),
    ("name: x\nalgos: [mbml, nether]\n", "algos", "did you mean 'neither'"),
    ("name: x\nenv: {observation: small}\n", "env.observation", "not one of full, compact"),
    ("name: x\nenv: {name: point_goal, observation: compact}\n", "env.observation", "no 'compact' observation"),
    ("name: x\ncollect: 3\n", "collect", "expected a mapping"),
    ("name: x\nbcq: {actor_hidden: [64, 0]}\n", "bcq.actor_hidden", "positive integers"),
    ("name: x\nreward: {next_state: 1}\n", "reward.next_state", "expected bool"),
])
def test_errors_name_file_and_key(tmp_path, text, key, fragment):
    p = write(tmp_path, text)
    with pytest.raises(rc.RecipeError) as e:
        rc.load(p)
    assert e.value.key == key
    message = str(e.value)
    assert message.startswith(str(p)) and key in message and fragment in message
    assert "\n" not in message


def test_extends_chain_and_missing_parent(tmp_path):
    write(tmp_path, "name: base\nseed: 3\ndistill: {margin: 1.0, epochs: 7}\n", "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\ndistill: {epochs: 9}\n", "child.yaml")
    r, _ = rc.load(child)
    assert (r.name, r.seed, r.distill.margin, r.distill.epochs) == ("child", 3, 1.0, 9)
    orphan = write(tmp_path, "extends: nowhere.yaml\n", "orphan.yaml")
    with pytest.raises(rc.RecipeError, match="nowhere.yaml: no such recipe file"):
        rc.load(orphan)


def test_bad_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(rc.RecipeError, match="not valid YAML"):
        rc.load(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(rc.RecipeError, match="must be a mapping"):
        rc.load(write(tmp_path, "- a\n- b\n"))


def test_bad_set_syntax():
    with pytest.raises(rc.RecipeError, match="expected section.key=value"):
        rc.load(RECIPES[0].parent / "smoke.yaml", ["distill.margin"])


def test_every_field_documented():
    docs = rc.field_docs()
    assert len(docs) > 60
    assert all(text for _, text, _ in docs), [k for k, t, _ in docs if not t]


def test_readme_documents_every_recipe_key():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [key for key, _, _ in rc.field_docs() if f"`{key}`" not in readme]
    assert not missing, f"README recipe reference lacks {missing}"


def test_retired_keys_load_at_their_value_only(tmp_path):
    """Keys measured and removed (config.RETIRED) still load where they have the value every committed
    result had — older lock files and stored recipes list them; any other value is refused, naming
    the key."""
    from mbml_cli.recipe.config import RETIRED
    base = rc.to_dict(rc.load(RECIPES[0].parent / "smoke.yaml")[0])
    older = {**base, "distill": {**base["distill"], **RETIRED["distill"]}}
    assert rc.from_dict(older) == rc.from_dict(base)
    recipe = rc.from_dict(older)
    assert all(not hasattr(recipe.distill, k) for k in RETIRED["distill"])
    with pytest.raises(rc.RecipeError, match=r"distill\.q_loss.*retired"):
        rc.from_dict({**base, "distill": {**base["distill"], "q_loss": "teacher"}})
    with pytest.raises(rc.RecipeError, match=r"distill\.generator_steps.*retired"):
        rc.from_dict({**base, "distill": {**base["distill"], "generator_steps": True}})   # True == 1, not the int 1
    with pytest.raises(rc.RecipeError, match="unknown key"):
        rc.from_dict({**base, "distill": {**base["distill"], "q_losss": "standardised"}})
