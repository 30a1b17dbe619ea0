"""`mbml collect` / `mbml bcq` on the smoke recipe: what lands in the store, exact resume after a
SIGKILL, and shards."""
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mbml_cli import envs
from mbml_cli.api import Run
from mbml_cli.run.loaders import load_bcq
from mbml_cli.errors import StageError
from mbml_cli.run.stages import open_run, run_stage
from mbml_cli.core.store import Store
from conftest import ROOT, SMOKE

# 300 steps, checkpoints at 90, 180, 270: mid-episode (H = 20), across the random → policy switch (100)
COLLECT = ["threads=1", "collect.steps=300", "collect.checkpoint_every=90", "collect.log_every=30"]
BCQ = ["threads=1", "bcq.iterations=60", "bcq.checkpoint_every=20", "bcq.eval_every=30"]
COLUMNS = {"obs": (np.float32, (2,)), "act": (np.float32, (2,)), "rew": (np.float32, ()),
           "next_obs": (np.float32, (2,)), "terminal": (np.bool_, ()), "truncated": (np.bool_, ()),
           "info": (np.float32, (0,))}

# Run the CLI in a child that SIGKILLs itself when it starts writing its N-th checkpoint: by then the
# rows since the previous checkpoint are already flushed, so the resume must roll them back.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from mbml_cli.core.store import Store
    kill_at, seen, save = int(sys.argv[1]), [0], Store.save_weights
    def killing_save(self, path, *args, **kwargs):
        if "/checkpoint/" in path:
            seen[0] += 1
            if seen[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return save(self, path, *args, **kwargs)
    Store.save_weights = killing_save
    from mbml_cli.views.cli import app
    app(sys.argv[2:])
""")


def run(target, name, overrides, **options):
    ctx = open_run(str(target), overrides)
    run_stage(ctx, name, **options)
    return ctx


def killed(kill_at: int, *cli_args: str) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLER, str(kill_at), *cli_args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """The smoke recipe's collect, never interrupted."""
    path = tmp_path_factory.mktemp("a") / "run.zarr"
    run(SMOKE, "collect", COLLECT + [f"store={path}"])
    return path


def test_collect_writes_typed_batches(collected):
    store = Store.open(collected)
    dist = envs.get("point_goal")
    tasks = store.read_array("tasks/train")
    assert store.stage("collect")["status"] == "done"
    for i in range(3):
        rows = store.read_rows(f"data/train/{i}")
        assert set(rows) == set(COLUMNS)
        for name, (dtype, shape) in COLUMNS.items():
            assert rows[name].dtype == dtype and rows[name].shape == (300,) + shape, name
        # point_goal never terminates; the time limit cuts every 20th step, and the next row restarts
        assert not rows["terminal"].any()
        assert np.array_equal(np.flatnonzero(rows["truncated"]), np.arange(19, 300, 20))
        starts = np.arange(0, 300, 20)
        assert np.all(rows["obs"][starts] == 0)
        inner = np.setdiff1d(np.arange(1, 300), starts)
        assert np.array_equal(rows["obs"][inner], rows["next_obs"][inner - 1])
        assert np.abs(rows["act"][:100]).max() <= 1 and np.abs(rows["act"]).max() <= 1
        want = dist.reward(rows["obs"], rows["act"], rows["next_obs"], rows["info"], tasks[i])
        assert np.allclose(rows["rew"], want, atol=1e-5)
        assert store.has_weights(f"models/collect/sac/{i}")
        assert store.stage(f"collect/{i}")["status"] == "done"
    raw = store.metrics("collect", "train")                          # a per-task metric: one (rows, K) column
    assert raw["critic_loss"].shape == raw["return"].shape == (10, 3) and raw["step"].shape == (10,)
    metrics = Run(store).metrics("collect", "train")                 # read as a column per task
    assert np.array_equal(metrics["step"], np.arange(30, 301, 30))
    assert {"return_0", "critic_loss_2", "actor_loss_1", "alpha_0"} <= set(metrics)
    assert np.isfinite(metrics["critic_loss_0"][-3:]).all()        # updates ran after the random steps
    assert not store.exists("models/collect/checkpoint/all")         # removed once done


def test_collect_sigkill_then_resume_gives_the_same_batches(collected, tmp_path):
    path = tmp_path / "run.zarr"
    killed(3, "collect", SMOKE, *sum((["--set", s] for s in COLLECT + [f"store={path}"]), []))
    store = Store.open(path)
    assert store.stage("collect")["status"] == "running"
    assert store.load_weights("models/collect/checkpoint/all")[1]["step"] == 180
    assert store.rows("data/train/0") == 270               # flushed past the checkpoint, then killed
    run(SMOKE, "collect", COLLECT + [f"store={path}"])      # the same command again: resumes at 180
    a, b = Store.open(collected), Store.open(path)
    assert b.stage("collect")["status"] == "done"
    for i in range(3):
        ra, rb = a.read_rows(f"data/train/{i}"), b.read_rows(f"data/train/{i}")
        for name in COLUMNS:
            assert np.array_equal(ra[name], rb[name]), (i, name)      # transition for transition
        wa, wb = a.load_weights(f"models/collect/sac/{i}")[0], b.load_weights(f"models/collect/sac/{i}")[0]
        for name in wa:
            assert np.array_equal(wa[name], wb[name]), (i, name)
    ma, mb = a.metrics("collect", "train"), b.metrics("collect", "train")
    for name in ma:
        if name != "env_steps_per_s":
            assert np.array_equal(ma[name], mb[name], equal_nan=True), name


def test_bcq_sigkill_then_resume_gives_the_same_weights(collected, tmp_path):
    plain, broken = tmp_path / "plain.zarr", tmp_path / "broken.zarr"
    shutil.copytree(collected, plain)
    shutil.copytree(collected, broken)
    run(plain, "bcq", BCQ)
    killed(2, "bcq", str(broken), *sum((["--set", s] for s in BCQ), []))   # at the checkpoint of it 40
    assert Store.open(broken).load_weights("models/bcq/checkpoint/all")[1]["step"] == 20
    run(broken, "bcq", BCQ)
    a, b = Store.open(plain), Store.open(broken)
    for which in ("final", "best"):
        for i in range(3):
            wa, ma = a.load_weights(f"models/bcq/{which}/{i}")
            wb, mb = b.load_weights(f"models/bcq/{which}/{i}")
            assert ma["iteration"] == mb["iteration"] and ma["return"] == mb["return"]
            for name in wa:
                assert np.array_equal(wa[name], wb[name]), (which, i, name)
    ea, eb = Run(a).metrics("bcq", "eval"), Run(b).metrics("bcq", "eval")
    assert np.array_equal(ea["iteration"], [30, 60]) and set(ea) == {"iteration", "return_0", "return_1", "return_2"}
    for name in ea:
        assert np.array_equal(ea[name], eb[name]), name
    model = load_bcq(b, b.recipe)
    assert model.n_tasks == 3 and model.act(np.zeros((3, 2), np.float32)).shape == (3, 2)
    final_meta = b.load_weights("models/bcq/final/0")[1]
    assert {"random_return", "best_batch_return", "bcq_return", "fraction"} <= set(final_meta)


def test_mujoco_resume_replays_the_unfinished_episode(tmp_path):
    """halfcheetah_vel: an interruption mid-episode (an exception at the 2nd checkpoint, status
    "failed") resumes by replaying the stored actions through a reset MuJoCo env."""
    recipe = str(ROOT / "recipes" / "halfcheetah_vel.yaml")
    common = ["threads=1", "env.n_train=2", "env.horizon=25", "collect.steps=60", "collect.random_steps=20",
              "collect.hidden=[8]", "collect.batch_size=8", "collect.checkpoint_every=18", "collect.log_every=30"]
    plain, broken = tmp_path / "plain.zarr", tmp_path / "broken.zarr"
    run(recipe, "collect", common + [f"store={plain}"])
    save, seen = Store.save_weights, [0]

    def failing_save(self, path, *args, **kwargs):
        if "/checkpoint/" in path:
            seen[0] += 1
            if seen[0] == 2:
                raise RuntimeError("interrupted")
        return save(self, path, *args, **kwargs)

    Store.save_weights = failing_save
    try:
        with pytest.raises(RuntimeError):
            run(recipe, "collect", common + [f"store={broken}"])
    finally:
        Store.save_weights = save
    assert Store.open(broken).stage("collect")["status"] == "failed"
    run(recipe, "collect", common + [f"store={broken}"])     # resumes at step 18 (episode 0, step 18)
    a, b = Store.open(plain), Store.open(broken)
    for i in range(2):
        ra, rb = a.read_rows(f"data/train/{i}"), b.read_rows(f"data/train/{i}")
        assert rb["info"].shape == (60, 1) and rb["info"].dtype == np.float32
        for name in ra:
            assert np.array_equal(ra[name], rb[name]), (i, name)
        assert np.array_equal(np.flatnonzero(rb["truncated"]), [24, 49])
        task = a.read_array("tasks/train")[i]
        want = envs.get("halfcheetah_vel").reward(rb["obs"], rb["act"], rb["next_obs"], rb["info"], task)
        assert np.allclose(rb["rew"], want, atol=1e-4)


def test_shards_write_only_their_tasks_and_finish_the_stage_together(tmp_path):
    path = tmp_path / "run.zarr"
    small = ["threads=1", "collect.steps=40", "collect.random_steps=20", "collect.checkpoint_every=20",
             "collect.log_every=20", f"store={path}"]
    run(SMOKE, "collect", small, tasks=[0, 2])
    store = Store.open(path)
    assert store.stage("collect")["status"] == "partial" and "1" in store.stage("collect")["message"]
    assert store.rows("data/train/0") == store.rows("data/train/2") == 40 and not store.exists("data/train/1")
    assert store.exists("metrics/collect/train_0-2") and not store.exists("metrics/collect/train")
    with pytest.raises(StageError, match="collect"):
        run(path, "bcq", ["bcq.iterations=4"])                   # bcq needs every task collected
    run(path, "collect", [], tasks=[1])
    store = Store.open(path)
    assert store.stage("collect")["status"] == "done" and store.rows("data/train/1") == 40
    assert all(store.stage(f"collect/{i}")["status"] == "done" for i in range(3))
    run(path, "bcq", ["bcq.iterations=4", "bcq.eval_every=4"], tasks=[1])
    store = Store.open(path)
    assert store.stage("bcq")["status"] == "partial"
    assert store.has_weights("models/bcq/final/1") and not store.exists("models/bcq/final/0")
    assert store.exists("metrics/bcq/eval_1")
    run(path, "bcq", [])                                        # the rest: tasks 0 and 2
    store = Store.open(path)
    assert store.stage("bcq")["status"] == "done" and store.exists("metrics/bcq/eval_0-2")
    assert load_bcq(store, store.recipe).n_tasks == 3


def test_common_noise_gives_every_task_the_same_draws_and_a_batch_independent_of_its_shard(tmp_path):
    small = ["threads=1", "collect.steps=40", "collect.random_steps=20", "collect.checkpoint_every=20",
             "collect.log_every=20", "collect.common_noise=true"]
    full, shard = tmp_path / "full.zarr", tmp_path / "shard.zarr"
    run(SMOKE, "collect", small + [f"store={full}"])
    run(SMOKE, "collect", small + [f"store={shard}"], tasks=[2])
    a, b = Store.open(full), Store.open(shard)
    rows = [a.read_rows(f"data/train/{i}") for i in range(3)]
    # the random phase: the same reset states and the same uniform actions in every task
    for r in rows[1:]:
        assert np.array_equal(r["act"][:20], rows[0]["act"][:20]) and np.array_equal(r["obs"][:20], rows[0]["obs"][:20])
    assert not np.array_equal(rows[1]["rew"][:20], rows[0]["rew"][:20])            # but each task's own reward
    assert not np.array_equal(rows[1]["act"][20:], rows[0]["act"][20:])            # and, once SAC learns, its own actions
    # task 2 alone (a shard of one) gets the batch it gets among all three
    alone = b.read_rows("data/train/2")
    for name in rows[2]:
        assert np.allclose(alone[name], rows[2][name], atol=1e-5), name
    # the default keeps independent streams: the tasks' random actions differ
    plain = tmp_path / "plain.zarr"
    run(SMOKE, "collect", small[:-1] + [f"store={plain}"])
    p = Store.open(plain)
    assert not np.array_equal(p.read_rows("data/train/1")["act"][:20], p.read_rows("data/train/0")["act"][:20])
