"""The one checkpoint format: modules, Adam states, generators and accumulators round-trip exactly
through a store, and distill checkpoints written with '.' separators (mbml ≤ 0.1.0) still load."""
import pytest
import torch

from conftest import random_batch
from mbml_cli.core import checkpoint
from mbml_cli.algos import sac
from mbml_cli.core.store import Store

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


def test_training_state_round_trips_through_a_store(tmp_path):
    agent, opt = trained(4)
    gen = torch.Generator().manual_seed(3)
    torch.rand(5, generator=gen)
    acc = {"loss": torch.tensor([1.5, 2.5], dtype=torch.float64)}
    store = Store.create(tmp_path / "s.zarr", {})
    store.save_weights("models/x/checkpoint/all", checkpoint.training_state({"sac": agent}, dict(opt.items()),
                                                                           {"rng": gen}, acc), {"t": 7})
    tensors, meta = store.load_weights("models/x/checkpoint/all")
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
