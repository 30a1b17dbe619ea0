"""What a new user trips over (issue 11): typos that write nothing, Ctrl-C / SIGTERM recorded as
`interrupted` and resumed, the pre-flight refusal, repeating from a lock file, the dashboard on a
path that is no store, `eval --unseen` apart from the test evaluation, `info` in pipeline order,
the recent-rate progress, and the CUDA update loops without per-step host transfers."""
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, SMOKE, runner
from mbml_cli.core import layout
from mbml_cli.views.cli import app
from mbml_cli.read import snapshot as reader
from mbml_cli.run.progress import RecentRate
from mbml_cli.core.store import Store

CLI = [sys.executable, "-m", "mbml_cli.views.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def mbml(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def store_copy(smoke_run, tmp_path):
    path = tmp_path / "copy.zarr"
    shutil.copytree(smoke_run, path)
    return path


@pytest.mark.parametrize("command", ["distill", "eval", "probe"])
def test_a_mistyped_algo_writes_nothing_and_suggests(store_copy, command):
    before = Store.open(store_copy).stages()
    result = mbml(command, store_copy, "--algo", "nether")
    assert result.exit_code == 2
    assert "--algo nether: unknown algorithm (did you mean 'neither'?)" in result.output
    assert Store.open(store_copy).stages() == before
    assert not Store.open(store_copy).exists(layout.STAGE(layout.stage_key(command, "nether")))


def test_missing_recipe_suggests_the_yaml_file():
    for args in (["run", ROOT / "recipes" / "smoke"], ["collect", ROOT / "recipes" / "smoke"]):
        result = mbml(*args)
        assert result.exit_code == 2 and "did you mean" in result.output and "smoke.yaml?" in result.output


def test_dash_on_a_path_that_is_no_store_exits_2(tmp_path):
    result = mbml("dash", tmp_path / "nothing.zarr")
    assert result.exit_code == 2 and "no such store" in result.output


def test_repeating_from_a_lock_file_never_shows_the_old_run(store_copy, tmp_path):
    locked = mbml("lock", store_copy)
    assert locked.exit_code == 0
    doc = yaml.safe_load(locked.output)
    doc["store"] = str(store_copy)
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = mbml("run", path)
    assert result.exit_code == 2
    assert "to repeat it, give a new store" in result.output and "--store" in result.output


def test_info_in_pipeline_order_with_per_task_rows_folded(smoke_run):
    result = mbml("info", smoke_run)
    assert result.exit_code == 0
    rows = [line.split("│")[1].strip() for line in result.output.splitlines() if line.startswith("│")]
    stages = [r for r in rows if r and not r.isdigit() and r not in ("train",)]
    order = [s.split("/")[0] for s in stages]
    assert order[:4] == ["collect", "bcq", "reward", "relabel"] and order.index("distill") < order.index("eval")
    assert not any(s.split("/")[-1].isdigit() for s in stages)           # no collect/0, bcq/1, ...
    assert "3/3" in result.output


def test_eval_unseen_names_its_store_and_keeps_its_own_record(store_copy):
    store = Store.open(store_copy)
    test_record = store.stage(layout.stage_key("eval", "mbml"))
    result = mbml("eval", store_copy, "--unseen", "2", "--set", "threads=1")
    assert result.exit_code == 0, result.output
    assert f"store: {store_copy}" in result.output
    store = Store.open(store_copy)
    assert store.stage(layout.stage_key("eval", "mbml")) == test_record
    assert store.stage(layout.stage_key("eval", "mbml-unseen"))["status"] == "done"
    assert store.read_array(layout.EVALUATION("mbml", "unseen") + "/returns").shape[0] == 2


def test_dashboard_opens_on_the_recipe_first_algorithm(smoke_run):
    snap = reader.read_snapshot(Store.open(smoke_run))
    assert snap.recipe["algos"][0] == "mbml"
    assert reader.default_table(snap) == "distill/mbml"


def test_recent_rate_follows_the_last_window_not_the_mean():
    now = [0.0]
    rate = RecentRate(total=1000, window=10.0, clock=lambda: now[0])
    for step in range(1, 101):                 # fast phase: 100 steps/s for 1 s
        now[0] += 0.01
        rate.update(step)
    for step in range(101, 131):               # then 1 step/s for 30 s
        now[0] += 1.0
        rate.update(step)
    assert rate.rate == pytest.approx(1.0, rel=0.05)
    assert rate.eta == pytest.approx(870.0, rel=0.05)


def test_preflight_refuses_a_long_cpu_run_without_a_terminal(tmp_path):
    recipe = tmp_path / "big.yaml"
    recipe.write_text(f"extends: {SMOKE}\ndevice: cpu\ncollect: {{steps: 100000000}}\nstore: {tmp_path / 'big.zarr'}\n")
    (tmp_path / "big_cpu.yaml").write_text(f"extends: {SMOKE}\n")
    result = subprocess.run(CLI + ["run", str(recipe)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=ENV, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "big_cpu.yaml" in lines[0] and "--yes" in lines[0]
    assert "pre-flight" in result.stderr and "collect" in result.stderr
    assert not (tmp_path / "big.zarr").exists()                          # no half-made store


def foreground_ctrl_c() -> None:
    """In the child before exec: SIGINT as in a terminal's foreground job. A shell script starts a
    background command with SIGINT ignored (POSIX), and Python then installs no KeyboardInterrupt
    handler, so a test run from such a script (`bash .ci/run &`) sent its signal to a process that
    kept collecting, and timed out."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, code, line", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_interrupt_is_recorded_and_run_resumes(tmp_path, sig, code, line):
    store = tmp_path / "run.zarr"
    # long enough that the run is still going when the test, reading its lines late on a loaded
    # machine, sends the signal
    args = CLI + ["run", SMOKE, "--store", str(store), "--set", "threads=1", "--set", "collect.steps=6000",
                  "--set", "collect.log_every=100", "--set", "stages=[collect]"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, preexec_fn=foreground_ctrl_c)
    for progress in proc.stderr:               # a plain line per log interval without a terminal
        if "collect all 600/6000" in progress:
            break
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code
    assert err.strip().splitlines()[-1] == f"{line}: run the same command again to resume"
    record = Store.open(store).stage("collect")
    assert record["status"] == "interrupted" and record["progress"] >= 0.1
    again = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=ENV, timeout=900)
    assert again.returncode == 0, again.stderr
    assert Store.open(store).stage("collect")["status"] == "done"
    assert Store.open(store).rows(layout.BATCH("train", 0)) == 6000


def test_a_running_record_whose_process_is_gone_reads_interrupted(store_copy):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store = Store.open(store_copy, mode="r+")
    store.set_stage("bcq", status="running", **{**layout.holder(), "pid": gone.pid})
    assert layout.record_status(store.stage("bcq")) == "interrupted"
    assert layout.record_status({"status": "running", **layout.holder()}) == "running"    # this process
    result = mbml("info", store_copy)
    assert any("bcq" in line and "interrupted" in line for line in result.output.splitlines())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_update_loops_make_no_host_transfer(tmp_path):
    """SAC, BCQ and MBML updates on the GPU with generators on the GPU: any synchronising host copy
    inside the loop raises (torch.cuda.set_sync_debug_mode)."""
    from mbml_cli.algos import bcq, sac
    from mbml_cli.algos.mbml import Relabelled, Teachers
    from mbml_cli.recipe.config import Recipe
    from mbml_cli.algos.data import TaskData
    from mbml_cli.run.pipeline.distill import build_trainer
    dev = torch.device("cuda")
    K, N, OBS, ACT = 3, 256, 4, 2
    g = torch.Generator(device=dev).manual_seed(0)
    r = lambda *s: torch.randn(*s, device=dev, generator=g)
    data = TaskData(r(K, N, OBS), r(K, N, ACT).clamp(-1, 1), r(K, N), r(K, N, OBS), torch.zeros(K, N, device=dev),
                    torch.zeros(K, N, 0, device=dev), torch.full((K,), N, device=dev))
    recipe = Recipe()
    recipe.distill.q_hidden = recipe.distill.g_hidden = recipe.distill.xi_hidden = [32, 32]
    agent = sac.SAC(K, OBS, ACT, [32]).to(dev)
    opt = sac.SACOptimisers(agent, 3e-4)
    model = bcq.BCQ(K, OBS, ACT, recipe.bcq).to(dev)
    tr = bcq.BCQTrainer(model, 3e-4)
    rel = Relabelled(torch.zeros(K, K, N, device=dev), ~torch.eye(K, dtype=torch.bool, device=dev)[:, :, None].expand(-1, -1, N))
    trainer = build_trainer(recipe, "mbml", data, dev, Teachers.from_bcq(model), rel)
    acc = torch.zeros(K, dtype=torch.float64, device=dev)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            acc += sac.update(agent, opt, data.sample(64, g), 0.99, 0.005, generator=g)["critic_loss"].double()
            noise = bcq.sample_noise(K, 64, model.vae.latent_dim, recipe.bcq.n_candidates, g, dev)
            bcq.update(tr, data.sample(64, g), recipe.bcq, noise)
            trainer.step(g)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert np.isfinite(acc.cpu().numpy()).all()
    result = runner.invoke(app, ["run", SMOKE, "--store", str(tmp_path / "gpu.zarr"), "--set", "device=cuda"])
    assert result.exit_code == 0, result.output
