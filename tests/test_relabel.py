"""Relabelling (Eq. 7): shapes, the eligibility mask, eligible fractions, and the relabelled
contexts the MBML step draws from them."""
from __future__ import annotations

import numpy as np
import torch

from mbml_cli.algos.mbml import Relabelled, pick_relabelled, relabelled_pairs
from mbml_cli.algos.reward_model import EnsembleModel, predict_chunked
from mbml_cli.algos.data import TaskData
from mbml_cli.run.pipeline.relabel import relabel_all

K, N, OBS, ACT = 3, 30, 2, 2
SIZES = [30, 22, 17]


def fake_data(seed=0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(K, N, OBS, generator=g)
    act = torch.rand(K, N, ACT, generator=g) * 2 - 1
    sizes = torch.tensor(SIZES)
    pad = torch.arange(N)[None, :] >= sizes[:, None]
    obs[pad], act[pad] = 0.0, 0.0
    return TaskData(obs=obs, act=act, rew=-obs.norm(dim=-1), next_obs=obs + 0.1 * act,
                    terminal=torch.zeros(K, N), info=torch.zeros(K, N, 0), sizes=sizes)


def ensemble(members: int) -> EnsembleModel:
    torch.manual_seed(1)
    return EnsembleModel(K, members, OBS, ACT, 8, 1)


def test_shapes_mask_and_fractions():
    data, model = fake_data(), ensemble(5)
    out = relabel_all(data, model, std_threshold=0.3)
    assert out["mean"].shape == out["std"].shape == out["mask"].shape == (K, K, N)
    assert out["eligible"].shape == (K, K) and out["mask"].dtype == bool
    real = np.arange(N)[None, None, :] < np.array(SIZES)[None, :, None]
    offdiag = ~np.eye(K, dtype=bool)[:, :, None]
    assert np.array_equal(out["mask"], (out["std"] < 0.3) & real & offdiag)
    assert not out["mask"][np.arange(K), np.arange(K)].any()          # own transitions keep their reward
    assert not out["mask"][:, 2, SIZES[2]:].any()                     # padding is never eligible
    frac = out["mask"].sum(-1) / np.array(SIZES)[None, :]
    np.testing.assert_allclose(out["eligible"], frac)
    assert 0 < out["mask"].sum() < out["mask"].size                    # the threshold does cut somewhere
    # entry (i, j, n) is R̂_i on task j's row n
    m, s = predict_chunked(model, data.obs[1, :SIZES[1]], data.act[1, :SIZES[1]])
    np.testing.assert_allclose(out["mean"][:, 1, :SIZES[1]], m[..., 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["std"][:, 1, :SIZES[1]], s[..., 0].numpy(), rtol=1e-6)


def test_single_member_is_always_certain():
    out = relabel_all(fake_data(), ensemble(1), std_threshold=1e-9)
    assert np.all(out["std"] == 0)
    np.testing.assert_allclose(out["eligible"], 1 - np.eye(K))


def test_next_state_models_add_their_own_threshold():
    data = fake_data()
    torch.manual_seed(2)
    ns = EnsembleModel(K, 4, OBS, ACT, 8, OBS, residual=True)
    out = relabel_all(data, ensemble(4), ns, std_threshold=1e9, next_state_threshold=0.05)
    assert out["next_obs"].shape == (K, K, N, OBS) and out["next_std"].shape == (K, K, N)
    real = np.arange(N)[None, None, :] < np.array(SIZES)[None, :, None]
    assert np.array_equal(out["mask"], (out["next_std"] < 0.05) & real & ~np.eye(K, dtype=bool)[:, :, None])


def test_relabelled_contexts_of_the_step():
    data = fake_data()
    out = relabel_all(data, ensemble(5), std_threshold=0.3)
    rel = Relabelled(torch.from_numpy(out["mean"]), torch.from_numpy(out["mask"]))
    T = 6
    idx = torch.stack([torch.arange(T) * 2 + k for k in range(K)])                # rows of each task j
    own = {f: torch.stack([getattr(data, f)[j, idx[j]] for j in range(K)]) for f in ("obs", "act", "rew", "next_obs")}
    pairs, elig = relabelled_pairs(rel, own, idx)
    assert pairs["obs"].shape == (K, K, T, OBS) and pairs["rew"].shape == elig.shape == (K, K, T)
    for i in range(K):
        for j in range(K):
            assert torch.equal(pairs["obs"][i, j], data.obs[j, idx[j]])            # task j's (s, a) ...
            assert torch.equal(pairs["rew"][i, j], rel.mean[i, j, idx[j]])         # ... with R̂_i's reward
            assert torch.equal(elig[i, j], rel.mask[i, j, idx[j]])
    picked, pmask = pick_relabelled(pairs, elig, 4, torch.Generator().manual_seed(0))
    assert picked["rew"].shape == pmask.shape == (K, 4)
    for i in range(K):
        n_elig = int(elig[i].sum())
        assert int(pmask[i].sum()) == min(4, n_elig)                               # eligible ones first
        cand = {float(r) for r in pairs["rew"][i][elig[i]]}
        assert {float(r) for r in picked["rew"][i][pmask[i]]} <= cand
