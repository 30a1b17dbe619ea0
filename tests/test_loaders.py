"""Loading trained models from a store: the K BCQ teachers as one module."""
import pytest
import torch

from mbml_cli.core import layout
from mbml_cli.algos import bcq
from mbml_cli.recipe.config import BCQConfig, Recipe
from mbml_cli.run.loaders import load_bcq
from mbml_cli.algos.nets import task_state
from mbml_cli.core.store import Store

K, OBS, ACT = 3, 4, 2
CFG = BCQConfig(actor_hidden=[8, 8], critic_hidden=[8, 8], vae_hidden=[8, 8], n_candidates=4)


def test_load_bcq_round_trip(tmp_path):
    torch.manual_seed(4)
    recipe = Recipe()
    recipe.env.n_train = K
    recipe.bcq = CFG
    model = bcq.BCQ(K, OBS, ACT, CFG)
    store = Store.create(tmp_path / "run.zarr", {"recipe": {}})
    for k in range(K):
        store.save_weights(layout.BCQ("final", k), task_state(model, k), {"obs_dim": OBS, "act_dim": ACT})
    loaded = load_bcq(Store.open(store.path), recipe, "final")
    assert loaded.n_tasks == K
    for name, t in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    with pytest.raises(Exception, match="no BCQ weights"):
        load_bcq(store, recipe, "best")
