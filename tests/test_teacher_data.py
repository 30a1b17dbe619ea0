"""Teachers from every task's data (`bcq.relabelled`): the pool of other tasks' relabelled transitions
each teacher draws from (`data.RelabelledPool`), and its mini-batches' two sources (`data.MixedBatches`)."""
from __future__ import annotations

import torch

from mbml_cli.algos.data import MixedBatches, RelabelledPool, TaskData


def toy(K=3, N=4, sizes=(4, 3, 2), d=2):
    """Task k's row n holds obs (k, n), reward 100k + n; relabelled reward of task i on it: 1000i + 10k + n."""
    k, n = torch.meshgrid(torch.arange(K), torch.arange(N), indexing="ij")
    obs = torch.stack([k, n], -1).float()
    data = TaskData(obs=obs, act=obs.clone(), rew=(100 * k + n).float(), next_obs=obs + 0.5,
                    terminal=(n == 1).float(), info=torch.zeros(K, N, 1), sizes=torch.tensor(sizes))
    i = torch.arange(K)[:, None, None]
    mean = (1000 * i + 10 * k[None] + n[None]).float()                  # (K, K, N)
    return data, mean


def test_the_pool_holds_exactly_the_eligible_rows_with_the_teachers_relabelled_reward():
    data, mean = toy()
    mask = torch.zeros(3, 3, 4, dtype=torch.bool)
    mask[0, 1, :3] = True                  # teacher 0 may borrow task 1's three rows
    mask[0, 2, 1] = True                   # and task 2's row 1
    mask[2, 0, 3] = True                   # teacher 2: task 0's row 3; teacher 1: nothing eligible
    pool = RelabelledPool.build(data, [0, 1, 2], mean, mask)
    assert pool.counts.tolist() == [4, 3, 1]
    assert pool.rows[0, :4].tolist() == [4, 5, 6, 9]                    # flat j·N + n, in order
    assert pool.rows[1, :3].tolist() == [4, 5, 6]                       # teacher 1 falls back to its own rows
    assert pool.rows[2, :1].tolist() == [3]
    g = torch.Generator().manual_seed(0)
    b = pool.sample(data, 200, g)
    assert b["obs"].shape == (3, 200, 2) and b["rew"].shape == (3, 200) and b["terminal"].shape == (3, 200)
    src_task, src_row = b["obs"][..., 0].long(), b["obs"][..., 1].long()
    expect = {0: {(1, 0), (1, 1), (1, 2), (2, 1)}, 1: {(1, 0), (1, 1), (1, 2)}, 2: {(0, 3)}}
    for i in range(3):
        assert set(zip(src_task[i].tolist(), src_row[i].tolist())) == expect[i]
    # the teacher's relabelled reward on borrowed rows; its own true reward on its own rows (teacher 1)
    assert torch.equal(b["rew"][0], 1000 * 0 + 10 * src_task[0] + src_row[0] + 0.0)
    assert torch.equal(b["rew"][1], 100 * src_task[1] + src_row[1] + 0.0)
    assert torch.equal(b["rew"][2], 2000 + 10 * src_task[2] + src_row[2] + 0.0)
    assert torch.equal(b["terminal"], (src_row == 1).float())         # the stored terminal flag
    assert torch.equal(b["next_obs"], b["obs"] + 0.5)                  # no prediction: the stored s′


def test_predicted_next_states_replace_the_stored_ones():
    data, mean = toy()
    mask = torch.zeros(3, 3, 4, dtype=torch.bool)
    mask[1, 0, :] = True
    pred = -torch.ones(3, 3, 4, 2) * torch.arange(3)[:, None, None, None]     # teacher i predicts −i
    pool = RelabelledPool.build(data, [1], mean, mask, pred)                   # a shard: teacher 1 only
    b = pool.sample(data, 50, torch.Generator().manual_seed(1))
    assert b["obs"].shape == (1, 50, 2) and set(b["obs"][0, :, 0].tolist()) == {0.0}
    assert torch.equal(b["next_obs"], -torch.ones(1, 50, 2))


def test_a_mixed_mini_batch_is_the_own_share_then_the_relabelled_share():
    data, mean = toy()
    mask = ~torch.eye(3, dtype=torch.bool)[:, :, None] & (torch.arange(4) < data.sizes[None, :, None])
    mixed = MixedBatches(data, data, RelabelledPool.build(data, [0, 1, 2], mean, mask), share=0.25)
    b = mixed.sample(8, torch.Generator().manual_seed(2))
    assert set(b) == {"obs", "act", "rew", "next_obs", "terminal"} and b["obs"].shape == (3, 8, 2)
    task = b["obs"][..., 0].long()
    assert torch.equal(task[:, :6], torch.arange(3)[:, None].expand(3, 6))        # 6 own rows
    assert (task[:, 6:] != torch.arange(3)[:, None]).all()                          # 2 borrowed ones
    assert (b["obs"][..., 1] < data.sizes[task]).all()                              # never the padding


def test_teachers_from_every_task_resume_exactly_after_a_kill_and_follow_the_reward_models(smoke_run, tmp_path):
    """`mbml bcq --set bcq.relabelled=true` on the smoke store: killed at a checkpoint and run again, it
    ends with the weights of an uninterrupted run; they differ from the own-batch teachers; and a
    forced relabel stales them (bcq reads relabel now)."""
    import shutil

    import numpy as np

    from conftest import SMOKE
    from mbml_cli.core.store import Store
    from mbml_cli.recipe import graph
    from mbml_cli.recipe.load import load
    from test_collect_resume import BCQ, killed, run
    opts = BCQ + ["bcq.relabelled=true"]
    plain, broken = tmp_path / "plain.zarr", tmp_path / "broken.zarr"
    shutil.copytree(smoke_run, plain)
    shutil.copytree(smoke_run, broken)
    run(plain, "bcq", opts)
    killed(2, "bcq", str(broken), *sum((["--set", s] for s in opts), []))
    run(broken, "bcq", opts)
    a, b, own = Store.open(plain), Store.open(broken), Store.open(smoke_run)
    for i in range(3):
        wa, wb, wo = (s.load_weights(f"models/bcq/final/{i}")[0] for s in (a, b, own))
        assert all(np.array_equal(wa[n], wb[n]) for n in wa), i
        assert not all(np.array_equal(wa[n], wo[n]) for n in wa), i
    recipe = load(SMOKE, opts)[0]
    fresh = lambda key: graph.freshness(recipe, Store.open(plain).stage)(key)
    assert fresh("relabel") and fresh("bcq")
    run(plain, "relabel", opts, force=True)
    assert fresh("relabel") and not fresh("bcq")


class EpisodesStore:
    """A stand-in store: task 0's batch holds 20 one-step episodes with returns 1, …, 20 (in a shuffled
    order), and its bcq record a teacher from before the best-10 % scale."""
    def read_rows(self, path, columns=None):
        import numpy as np
        rew = np.array([7, 3, 20, 1, 12, 19, 5, 9, 2, 14, 4, 6, 8, 10, 11, 13, 15, 16, 17, 18], np.float32)
        return {"rew": rew, "terminal": np.ones(20, bool), "truncated": np.zeros(20, bool)}

    def stage(self, key):
        return {"random_return": 1.5, "bcq_return": 15.0, "best_batch_return": 20.0, "fraction": 13.5 / 18.5}


def test_the_teacher_bar_counts_from_random_to_the_mean_of_the_best_tenth_of_episodes():
    from mbml_cli.read.batches import bar_tasks, batch_tops, teacher_report
    store = EpisodesStore()
    assert batch_tops(store, 0) == (20, (20 + 19) / 2)                    # the best, and the best 2 of 20 episodes
    assert batch_tops(store, 0, share=0.25)[1] == (20 + 19 + 18 + 17 + 16) / 5
    rec = teacher_report(store, 1)[0]                                    # added to a record from before
    assert rec["top10_batch_return"] == 19.5
    assert abs(rec["fraction_top10"] - (15 - 1.5) / (19.5 - 1.5)) < 1e-12 and rec["fraction_top10"] == 0.75
    assert rec["fraction"] == 13.5 / 18.5                                  # the old scale stays beside it
    assert [bar_tasks(n) for n in (10, 5, 3, 1)] == [8, 4, 3, 1]


def test_a_generator_of_the_own_rows_never_sees_the_relabelled_ones():
    """`bcq.relabelled_generator: own`: BCQ's VAE loss is the same whatever the borrowed rows' actions are;
    the critic's is not."""
    from conftest import random_batch
    from mbml_cli.algos import bcq
    from mbml_cli.recipe.config import BCQConfig
    cfg = BCQConfig(actor_hidden=[8], critic_hidden=[8], vae_hidden=[8], batch_size=6)
    batch = {**random_batch(0, 2, 6, 3, 2), "generator_rows": 4}
    other = {**batch, "act": torch.cat([batch["act"][:, :4], -batch["act"][:, 4:]], 1)}
    out = []
    for b in (batch, other):
        torch.manual_seed(0)
        model = bcq.BCQ(2, 3, 2, cfg)
        tr = bcq.BCQTrainer(model, 1e-3)
        out.append(bcq.update(tr, b, cfg, bcq.sample_noise(2, 6, model.vae.latent_dim, cfg.n_candidates,
                                                           torch.Generator().manual_seed(1))))
    assert torch.equal(out[0]["vae_loss"], out[1]["vae_loss"])
    assert not torch.equal(out[0]["critic_loss"], out[1]["critic_loss"])
    data, mean = toy()
    mask = ~torch.eye(3, dtype=torch.bool)[:, :, None] & (torch.arange(4) < data.sizes[None, :, None])
    mixed = MixedBatches(data, data, RelabelledPool.build(data, [0, 1, 2], mean, mask), 0.25, generator_own=True)
    assert mixed.sample(8, torch.Generator().manual_seed(2))["generator_rows"] == 6
