"""The one checkpoint format: modules, Adam states, generators and accumulators round-trip exactly
through a store (packed into one array per dtype, or one array per tensor as earlier versions wrote
them), and distill checkpoints written with '.' separators (mbml ≤ 0.1.0) still load."""
import numpy as np
import pytest
import torch

from conftest import random_batch
from mbml_cli.core import checkpoint
from mbml_cli.algos import sac
from mbml_cli.core.store import Store
from mbml_cli.errors import StoreError

pytestmark = pytest.mark.usefixtures("one_thread")
K, OBS, ACT = 2, 4, 2


def trained(seed: int):
    torch.manual_seed(seed)
    agent = sac.SAC(K, OBS, ACT, [8])
    opt = sac.SACOptimisers(agent, 1e-3)
    sac.update(agent, opt, random_batch(8, K, 16, OBS, ACT), 0.99, 0.005)
    return agent, opt


def assert_same_optimisers(opt, fresh):
    for (name, a), (_, b) in zip(opt.items(), fresh.items()):
        sa, sb = a.state_dict()["state"], b.state_dict()["state"]
        assert sa.keys() == sb.keys() and sa
        for idx in sa:
            for key in sa[idx]:
                assert torch.equal(torch.as_tensor(sa[idx][key]), torch.as_tensor(sb[idx][key])), (name, idx, key)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "one array per tensor"])
def test_training_state_round_trips_through_a_store(tmp_path, packed):
    agent, opt = trained(4)
    gen = torch.Generator().manual_seed(3)
    torch.rand(5, generator=gen)
    acc = {"loss": torch.tensor([1.5, 2.5], dtype=torch.float64)}
    store = Store.create(tmp_path / "s.zarr", {})
    state = checkpoint.training_state({"sac": agent}, dict(opt.items()), {"rng": gen}, acc)
    save = checkpoint.save if packed else Store.save_weights          # the latter: how earlier versions wrote it
    save(store, "models/x/checkpoint/all", state, {"t": 7})
    arrays, _ = store.load_weights("models/x/checkpoint/all")
    assert sorted(arrays) == (["packed/float32", "packed/float64", "packed/uint8"] if packed else sorted(state))
    tensors, meta = checkpoint.load(store, "models/x/checkpoint/all")
    assert sorted(tensors) == sorted(state)
    fresh_agent, fresh_opt = trained(5)                     # other weights, other Adam state
    fresh_gen = torch.Generator().manual_seed(99)
    got = checkpoint.load_training_state(tensors, {"sac": fresh_agent}, dict(fresh_opt.items()),
                                         {"rng": fresh_gen}, {"loss": None})
    assert meta == {"t": 7}
    assert torch.equal(got["loss"], acc["loss"])
    for k, v in agent.state_dict().items():
        assert torch.equal(fresh_agent.state_dict()[k], v), k
    assert_same_optimisers(opt, fresh_opt)
    assert torch.equal(torch.rand(3, generator=fresh_gen), torch.rand(3, generator=gen))


def test_old_distill_checkpoint_keys_are_upgraded():
    agent, opt = trained(4)
    gen = torch.Generator().manual_seed(1)
    new = checkpoint.training_state({"policy": agent}, dict(opt.items()), {"rng": gen}, {})
    old = {}                                                # the layout `pipeline/distill.py` used to write
    for key, value in new.items():
        if key.startswith("opt/"):
            key = key.replace("/", ".")
        elif key.startswith("policy/"):
            key = "policy." + key[len("policy/"):]
        old[key] = value
    assert "opt.actor.0.exp_avg" in old and "policy.log_alpha" in old
    assert checkpoint.upgrade(old, {"policy": agent}, dict(opt.items())) == new
    fresh_agent, fresh_opt = trained(6)
    checkpoint.load_training_state(old, {"policy": fresh_agent}, dict(fresh_opt.items()),
                                   {"rng": torch.Generator()}, {})
    for k, v in agent.state_dict().items():
        assert torch.equal(fresh_agent.state_dict()[k], v), k
    assert_same_optimisers(opt, fresh_opt)


@pytest.mark.parametrize("damage", ["offset", "dtype", "shape"])
def test_a_damaged_packed_index_is_one_line(tmp_path, damage):
    store = Store.create(tmp_path / "s.zarr", {})
    checkpoint.save(store, "models/x/checkpoint/all", {"w": torch.ones(3, 2), "step": torch.tensor(4)}, {"t": 1})
    arrays, meta = store.load_weights("models/x/checkpoint/all")
    name, dtype, shape, offset = meta["packed"][0]
    meta["packed"][0] = {"offset": [name, dtype, shape, 5], "dtype": [name, "float16", shape, offset],
                         "shape": [name, dtype, "x", offset]}[damage]
    store.save_weights("models/x/checkpoint/all", arrays, meta)
    with pytest.raises(StoreError, match="models/x/checkpoint/all: damaged checkpoint index") as e:
        checkpoint.load(store, "models/x/checkpoint/all")
    assert "\n" not in str(e.value)


def test_packed_tensors_keep_their_values_and_shapes(tmp_path):
    store = Store.create(tmp_path / "s.zarr", {})
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(2.5), "c": torch.zeros(0, 4),
             "n": torch.tensor([3, 4], dtype=torch.int64), "d": torch.tensor([1.0, -1.0])}
    checkpoint.save(store, "models/x/checkpoint/all", state, {})
    tensors, meta = checkpoint.load(store, "models/x/checkpoint/all")
    assert meta == {} and list(tensors) == list(state)
    for k, v in state.items():
        assert tensors[k].dtype == v.numpy().dtype and np.array_equal(tensors[k], v.numpy()), k
