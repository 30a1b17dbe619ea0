"""The task-inference losses of issue 38 on toy embeddings worked by hand: FOCAL's distance-metric loss
(`dml`) and CORRO's InfoNCE (`infonce`) — known values, the sign of their gradients, the invariances
their papers rely on — and how `distill.inference_loss` and the algorithm names choose them."""
from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch

from mbml_cli.algos import inference_loss as il, mbml
from mbml_cli.algos.data import TaskData
from mbml_cli.algos.registry import ALGOS, INFERENCE_LOSSES, LOSS_NAMES
from mbml_cli.recipe.config import DistillConfig, Recipe


# ---- dml: FOCAL's distance-metric loss ------------------------------------------------------------
def toy_means() -> torch.Tensor:
    """Two tasks, two contexts each, in 1-D: task 0 at 0 and 1, task 1 at 3 and 5 → (K, n, L) = (2, 2, 1)."""
    return torch.tensor([[[0.0], [1.0]], [[3.0], [5.0]]])


def test_dml_known_value():
    # positives: (0, 1) → 1², (3, 5) → 2²: mean 2.5
    # negatives: distances 3, 5, 2, 4; with β = 1, n = 2, ε = 0.1: mean of 1 / (d² + 0.1)
    push = (1 / 9.1 + 1 / 25.1 + 1 / 4.1 + 1 / 16.1) / 4
    assert il.dml_loss(toy_means(), 1.0, 2.0, 0.1).item() == pytest.approx(2.5 + push, rel=1e-6)
    # n = 1 and β = 2: 2 / (d + 0.1)
    push1 = 2 * (1 / 3.1 + 1 / 5.1 + 1 / 2.1 + 1 / 4.1) / 4
    assert il.dml_loss(toy_means(), 2.0, 1.0, 0.1).item() == pytest.approx(2.5 + push1, rel=1e-6)


def test_dml_gradient_pulls_positives_and_pushes_negatives():
    z = toy_means().requires_grad_(True)
    il.dml_loss(z, 1.0, 2.0, 0.1).backward()
    after = (z - 0.05 * z.grad).detach()
    d = lambda m, a, b: (m[a] - m[b]).norm().item()
    for a, b in (((0, 0), (0, 1)), ((1, 0), (1, 1))):                       # same task: nearer
        assert d(after, a, b) < d(toy_means(), a, b)
    # task 1's contexts are pulled together harder than they are pushed from task 0, but the nearest
    # negative pair (1 and 3) is pushed apart
    assert d(after, (0, 1), (1, 0)) > d(toy_means(), (0, 1), (1, 0))


def test_dml_reads_only_distances():
    """Translating and rotating every z leaves it unchanged (it is a function of ‖z_a − z_b‖ only)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 2, generator=g)
    c, s = math.cos(0.7), math.sin(0.7)
    moved = z @ torch.tensor([[c, -s], [s, c]]) + torch.tensor([5.0, -2.0])
    assert il.dml_loss(moved, 1.0, 2.0, 0.1).item() == pytest.approx(il.dml_loss(z, 1.0, 2.0, 0.1).item(), rel=1e-5)


def test_dml_class_uses_the_posterior_means_of_n_contexts():
    """One transition per context with unit variance: the posterior mean is the factor's mean."""
    cfg = mbml.MBMLConfig.of(Recipe(distill=DistillConfig(n_contexts=2)))
    loss = il.LOSSES["dml"](cfg)
    assert loss.n_contexts == 2 and not loss.relabelled
    mu = toy_means().unsqueeze(2)                                            # (K, n, T = 1, L)
    c = il.Contexts(None, mu, torch.ones_like(mu))
    assert loss(c)["loss_dml"].item() == pytest.approx(il.dml_loss(toy_means(), 1.0, 2.0, 0.1).item(), rel=1e-6)


# ---- infonce: CORRO's InfoNCE -----------------------------------------------------------------------
def test_infonce_known_value():
    """Anchor (1, 0), positive (1, 0), negatives (0, 1) and (−1, 0); τ = 0.5: logits 2, 0, −2."""
    a, p = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    n = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])
    both = torch.tensor([[True, True]])
    value = il.infonce_loss(a, p, n, both, 0.5).item()
    assert value == pytest.approx(math.log(1 + math.exp(-2) + math.exp(-4)), rel=1e-6)
    # an ineligible negative leaves the denominator (Eq. 7's mask)
    first = torch.tensor([[True, False]])
    assert il.infonce_loss(a, p, n, first, 0.5).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)


def test_infonce_is_invariant_to_scale_and_order_of_negatives():
    """S is a cosine: scaling any embedding changes nothing; the negatives are a set."""
    g = torch.Generator().manual_seed(1)
    a, p, n = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), torch.randn(5, 4, 3, generator=g)
    mask = torch.rand(5, 4, generator=g) > 0.3
    base = il.infonce_loss(a, p, n, mask, 0.1).item()
    assert il.infonce_loss(3 * a, 0.2 * p, 7 * n, mask, 0.1).item() == pytest.approx(base, rel=1e-5)
    order = torch.tensor([2, 0, 3, 1])
    assert il.infonce_loss(a, p, n[:, order], mask[:, order], 0.1).item() == pytest.approx(base, rel=1e-5)


def test_infonce_gradient_moves_the_anchor_to_the_positive_and_from_the_negatives():
    a = torch.tensor([[1.0, 1.0]], requires_grad=True)
    p, n = torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.0, 1.0]]])
    il.infonce_loss(a, p, n, torch.tensor([[True]]), 0.1).backward()
    after = (a - 0.1 * a.grad).detach()
    cos = lambda u, v: torch.nn.functional.cosine_similarity(u, v, dim=-1).item()
    assert cos(after, p) > cos(a.detach(), p)
    assert cos(after, n[:, 0]) < cos(a.detach(), n[:, 0])


def test_infonce_anchors_without_eligible_negatives_leave_the_mean():
    a, p = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    n = torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]])
    only_first = torch.tensor([[True], [False]])
    assert il.infonce_loss(a, p, n, only_first, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    assert il.infonce_loss(a, p, n, torch.zeros(2, 1, dtype=torch.bool), 1.0).item() == 0.0


class RewardEncoder(torch.nn.Module):
    """A toy q_φ whose per-transition mean is (r, 1 − r): only the reward tells transitions apart."""

    def factors(self, obs, act, rew, next_obs):
        mu = torch.stack([rew, 1 - rew], -1)
        return mu, torch.ones_like(mu)


def test_infonce_class_anchor_positive_and_negatives():
    """K = 2 tasks, T = 2. Own transitions: task 0's embed as (1, 0), task 1's as (0, 1).
    c_{0→1} (task 0's (s, a) with R̂_1) has reward 0.5 → (0.5, 0.5); c_{1→0} has reward 1 → (1, 0).
    Anchor task 0: positive (1, 0), negative (0.5, 0.5): cosines 1 and 1/√2.
    Anchor task 1: positive (0, 1), negative (1, 0): cosines 1 and 0."""
    K, T, tau = 2, 2, 0.5
    own = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(K, 1, 1, 2).expand(K, 1, T, 2)
    rew = torch.zeros(K, K, T)
    rew[1, 0], rew[0, 1] = 0.5, 1.0                                          # [i, j]: task j's data, R̂_i
    pairs = {"obs": torch.zeros(K, K, T, 1), "act": torch.zeros(K, K, T, 1), "rew": rew,
             "next_obs": torch.zeros(K, K, T, 1)}
    eligible = ~torch.eye(K, dtype=torch.bool).unsqueeze(-1).expand(K, K, T)
    cfg = mbml.MBMLConfig.of(Recipe(distill=DistillConfig(infonce_temperature=tau)))
    loss = il.LOSSES["infonce"](cfg)
    out = loss(il.Contexts(RewardEncoder(), own, torch.ones_like(own), pairs, eligible))
    task0 = math.log(1 + math.exp((1 / math.sqrt(2) - 1) / tau))
    task1 = math.log(1 + math.exp((0 - 1) / tau))
    assert out["loss_infonce"].item() == pytest.approx((task0 + task1) / 2, rel=1e-5)
    assert out["valid_pairs"].item() == 1.0


# ---- choosing a loss -----------------------------------------------------------------------------------
def test_recipe_choices_are_the_losses():
    (f,) = [f for f in fields(DistillConfig) if f.name == "inference_loss"]
    assert f.metadata["choices"] == list(INFERENCE_LOSSES) and f.default == "triplet"
    assert set(INFERENCE_LOSSES.values()) <= set(il.LOSSES)
    assert set(LOSS_NAMES) == set(il.LOSSES)                     # every loss has a name in the report


def test_the_named_algorithms_and_the_recipe_key():
    assert ALGOS["mbml"].variant.loss == "relabelled_triplet" and ALGOS["mbml"].variant.loss_from_recipe
    assert ALGOS["mbml_dml"].variant.loss == "dml" and ALGOS["mbml_infonce"].variant.loss == "infonce"
    assert not any(ALGOS[a].variant.loss_from_recipe for a in ("mbml_dml", "mbml_infonce", "no_relabel", "neither"))
    # only the loss differs from the full model; each has its own random streams
    for a in ("mbml_dml", "mbml_infonce"):
        assert ALGOS[a].variant.relabel_context and ALGOS[a].needs == ALGOS["mbml"].needs
    assert len({s.salt for s in ALGOS.values()}) == len(ALGOS)


from test_inference_loss import ACT, K, N, OBS, toy_inputs  # noqa: E402 - the same toy batches and teachers


def trainer(algo: str, **distill):
    data, teachers, g = toy_inputs()
    rel = mbml.Relabelled(torch.randn(K, K, N, generator=g),
                          (torch.rand(K, K, N, generator=g) > 0.3) & ~torch.eye(K, dtype=torch.bool).unsqueeze(-1))
    recipe = Recipe(distill=DistillConfig(q_hidden=[8], g_hidden=[8], xi_hidden=[8], encoder_hidden=[8], latent_dim=3,
                                          context_size=6, batch_size=5, n_contexts=2, **distill))
    torch.manual_seed(0)
    return ALGOS[algo].build_trainer(recipe, data, "cpu", teachers, rel)


@pytest.mark.parametrize("algo, key", [("mbml_dml", "loss_dml"), ("mbml_infonce", "loss_infonce")])
def test_a_step_of_each_named_loss_trains_the_encoder(algo, key):
    t = trainer(algo)
    before = [p.detach().clone() for p in t.policy.encoder.parameters()]
    out = t.step(torch.Generator().manual_seed(1))
    assert out[key].item() > 0 and math.isfinite(out["total"].item())
    assert "loss_triplet" not in out
    assert any(not torch.equal(a, b) for a, b in zip(before, t.policy.encoder.parameters()))


@pytest.mark.parametrize("choice, key", [("dml", "loss_dml"), ("infonce", "loss_infonce"), ("hardest", "loss_triplet")])
def test_inference_loss_key_sets_the_full_models_loss(choice, key):
    out = trainer("mbml", inference_loss=choice).step(torch.Generator().manual_seed(1))
    assert key in out and out[key].item() > 0
    # the named algorithm with the same loss computes the same step from the same draws
    if choice != "hardest":
        named = trainer(f"mbml_{choice}").step(torch.Generator().manual_seed(1))
        assert named["total"].item() == out["total"].item()


def test_the_default_is_the_relabelled_triplet():
    default = trainer("mbml").step(torch.Generator().manual_seed(1))
    explicit = trainer("mbml", inference_loss="triplet").step(torch.Generator().manual_seed(1))
    assert default["loss_triplet"].item() > 0
    assert all(default[k].item() == explicit[k].item() for k in default)


# ---- the report: the losses side by side ---------------------------------------------------------------
def entry(best: float, loss: str | None) -> dict:
    stat = {"per_seed": [best], "n": 1, "mean": best, "std": 0.0, "ci95": [best, best]}
    return {"loss": loss, "best": stat, "last": stat, "probe": stat,
            "curve": {"epoch": [1, 2], "mean": [best - 1, best], "std": [0.1, 0.1], "per_seed": [[best - 1, best]]}}


def test_report_groups_the_grid_over_inference_loss_and_the_named_algorithms(tmp_path):
    """Two conditions that differ only in distill.inference_loss make one comparison, `mbml` named by its
    loss; a third with another margin is its own; a named algorithm comes from the first condition."""
    import json
    from PIL import Image
    from mbml_cli.views.report import tables, figures
    from mbml_cli.views.report.gather import loss_comparisons
    recipe = lambda loss, margin=2.0: {"name": "toy", "distill": {"inference_loss": loss, "margin": margin}}
    groups = [{"recipe": recipe("triplet")}, {"recipe": recipe("dml")}, {"recipe": recipe("triplet", 1.0)}]
    runs = [{"store": "s", "seed": 0, "revision": None}]
    conditions = [
        {"label": "toy distill.inference_loss=triplet", "name": "toy", "runs": runs,
         "algos": {"mbml": entry(-10, "triplet"), "mbml_dml": entry(-12, "dml"), "contextual_bcq": entry(-30, None)}},
        {"label": "toy distill.inference_loss=dml", "name": "toy", "runs": runs,
         "algos": {"mbml": entry(-11, "dml"), "mbml_dml": entry(-99, "dml")}},
        {"label": "toy margin", "name": "toy", "runs": runs, "algos": {"mbml": entry(-5, "triplet")}}]
    (comp,) = loss_comparisons(groups, conditions)                  # the third has one loss only
    assert list(comp["algos"]) == ["mbml", "mbml_dml", "mbml (dml)"]       # no baseline among them
    assert comp["algos"]["mbml_dml"]["best"]["mean"] == -12 and comp["algos"]["mbml_dml"]["condition"].endswith("triplet")
    assert comp["algos"]["mbml (dml)"]["algo"] == "mbml" and comp["label"] == "toy (distill.inference_loss = triplet, dml)"
    table = tables.losses_table(comp)
    assert table.splitlines()[2].startswith("| mbml | triplet | -10.00 ± 0.00 | [-10.00, -10.00]")   # best first
    assert table.splitlines()[4].startswith("| mbml_dml | dml | -12.00")
    path = figures.loss_curves(comp, tmp_path / "losses.png")
    curves = json.loads(Image.open(path).info["mbml"])["curves"]
    colours = {c["label"]: c["color"] for c in curves}
    assert colours["mbml (dml)"] == colours["mbml_dml"] == figures.COLOURS["mbml_dml"]
    text = tables.markdown({"conditions": [], "losses": [comp]}, None, {comp["label"]: "losses.png"})
    assert "## Task-inference losses side by side" in text and "![task-inference losses](losses.png)" in text
