"""Throughput of each stage's update (issue 35): how fast, how close to the GEMM peak, how much outside torch.

    python bench/throughput.py [--recipe recipes/halfcheetah_vel_cpu.yaml] [--paper-recipe recipes/halfcheetah_vel.yaml]
                               [--updates 30] [--paper-updates 3] [--no-paper] [--threads 1] [--json FILE]
                               [--reference PATH/TO/sfujim/BCQ]

For collect (one step of K environments with the SAC actors + `updates_per_step` SAC updates), bcq,
reward (one ensemble step), distill (one MBML trainer step) and eval (the distilled policy acting on
T states + T environment steps), at each recipe's sizes, on random data built by
`run.preflight.Probe` (collect and bcq at one shard's tasks, as the stage runs them), it measures in
the same run:

- updates per second, and time per task-update (time per update / K, the K tasks batched);
- GFLOP/s: the matmul FLOPs of one update from `torch.utils.flop_counter.FlopCounterMode` (it counts
  bmm/baddbmm/mm/addmm forward and backward; checked against 2·K·B·in·out per product), divided by
  the time per update; and as a fraction of the GEMM peak *at the same shapes*: every matmul of one
  update is recorded (op, shapes, strides — the backward's transposed layouts included) and replayed
  alone in a loop; peak = the update's FLOPs / the replay's time. A 1024³ `mm` gives the machine's
  ceiling for reference;
- the share of time outside torch ops (Python, host syncs, the environment): 1 − Σ self CPU time of
  the `aten::` ops in `torch.profiler` over several updates / the same updates' wall time, both under
  the profiler ("prof": the profiler's per-op overhead lands in the gaps, so an upper bound) and
  against the unprofiled wall time ("wall": the ops' self times are inflated by the profiler, so a
  lower bound, 0% when they exceed it); and for collect/eval the environments' share (Probe's env
  step × steps), which is part of "outside".

Beside these, BCQ per task-iteration: ours batched with K = 10 and with K = 1, d3rlpy 2.8.1's BCQ
(bench/requirements.txt; skipped with the reason if it cannot be imported) and, with `--reference`,
Fujimoto's reference BCQ (github.com/sfujim/BCQ, continuous_BCQ/BCQ.py: not on PyPI, never copied
here), its `train(replay_buffer, iterations)` on random data at the same sizes (its fixed 400-300 /
750-750 layers resized to the recipe's). Not a test; numbers depend on the machine's load.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from mbml_cli.recipe.load import load, resolve
from mbml_cli.run.preflight import Probe

import peers                                       # bench/peers.py: the reference BCQ

ROOT = Path(__file__).resolve().parent.parent
GEMMS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
         torch.ops.aten.baddbmm.default}


# ---- measuring one update ------------------------------------------------------------------------------
@dataclass
class Row:
    recipe: str
    stage: str
    K: int
    what: str                       # what one "update" is
    updates: int
    s_per_update: float = 0.0
    updates_per_s: float = 0.0
    ms_per_task_update: float = 0.0
    gflop_per_update: float = 0.0
    gflop_s: float = 0.0
    peak_gflop_s: float = 0.0       # the same GEMMs replayed alone
    of_peak: float = 0.0
    outside_prof: float = 0.0       # 1 − aten self time / profiled wall time
    outside_wall: float = 0.0       # 1 − aten self time / unprofiled wall time
    env_share: float | None = None
    gemm_shapes: list = field(default_factory=list)


class GemmRecorder(TorchDispatchMode):
    """Records every matmul's op and its tensors' (shape, stride) while active."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in GEMMS:
            meta = lambda a: ("T", tuple(a.shape), tuple(a.stride())) if isinstance(a, torch.Tensor) else a
            self.calls[(func, tuple(meta(a) for a in args), tuple(sorted((k, meta(v)) for k, v in kwargs.items())))] += 1
        return func(*args, **kwargs)


def gemm_flops(func, args) -> float:
    """2·(batch)·n·k·m of one recorded matmul."""
    shapes = [a[1] for a in args if isinstance(a, tuple) and a and a[0] == "T"]
    a, b = shapes[-2], shapes[-1]
    return 2.0 * float(np.prod(a)) * b[-1]


def replay_seconds(calls: Counter, min_seconds: float = 0.2) -> float:
    """Seconds for one pass over the recorded matmuls (each replayed alone on fresh tensors of the same
    shapes and strides, weighted by how often it occurred)."""
    total = 0.0
    for (func, args, kwargs), count in calls.items():
        make = lambda a: torch.empty_strided(a[1], a[2]).normal_() if isinstance(a, tuple) and a and a[0] == "T" else a
        targs, tkw = [make(a) for a in args], {k: make(v) for k, v in kwargs}
        with torch.no_grad():
            func(*targs, **tkw)
            n, t0 = 0, time.perf_counter()
            while n < 3 or time.perf_counter() - t0 < min_seconds / max(len(calls), 1):
                func(*targs, **tkw)
                n += 1
        total += count * (time.perf_counter() - t0) / n
    return total


def aten_self_seconds(step: Callable[[], object], n: int) -> tuple[float, float]:
    """(Σ self CPU seconds of aten ops, wall seconds) over n calls of `step` under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        wall = time.perf_counter() - t0
    aten = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("aten::"))
    return aten / 1e6, wall


def measure(row: Row, step: Callable[[], object], env_s: float = 0.0) -> Row:
    """Fill `row` from `step` (one update): timing, FLOPs, peak at its shapes, profiler split."""
    for _ in range(2):                                          # warm-up (allocator, lazy init)
        step()
    t0 = time.perf_counter()
    for _ in range(row.updates):
        step()
    t = (time.perf_counter() - t0) / row.updates
    row.s_per_update, row.updates_per_s, row.ms_per_task_update = t, 1 / t, 1e3 * t / row.K
    with FlopCounterMode(display=False) as fc, GemmRecorder() as rec:
        step()
    flops = float(fc.get_total_flops())
    recorded = sum(count * gemm_flops(func, args) for (func, args, _), count in rec.calls.items())
    if abs(recorded - flops) > 1e-6 * max(flops, 1):
        print(f"  note: {row.stage}: FlopCounterMode {flops:.3e} FLOPs, recorded GEMMs {recorded:.3e}", flush=True)
    row.gflop_per_update = flops / 1e9
    row.gflop_s = flops / t / 1e9
    row.peak_gflop_s = recorded / replay_seconds(rec.calls) / 1e9 if recorded else 0.0
    row.of_peak = row.gflop_s / row.peak_gflop_s if row.peak_gflop_s else 0.0
    row.gemm_shapes = sorted({f"{f.__name__.split('.')[0]}{[a[1] for a in args if isinstance(a, tuple) and a and a[0] == 'T']}"
                              for (f, args, _) in rec.calls})
    aten, wall = aten_self_seconds(step, max(2, min(row.updates, 10)))
    n_prof = max(2, min(row.updates, 10))
    row.outside_prof = max(0.0, 1 - aten / wall)
    row.outside_wall = max(0.0, 1 - aten / (n_prof * t))
    row.env_share = env_s / t if env_s else None
    return row


# ---- the stages ------------------------------------------------------------------------------------------
def stage_steps(p: Probe, r) -> list[tuple[str, Probe, str, Callable[[], object], float, Callable[[], None]]]:
    """(stage, probe, what, step, env seconds per step, close) of each stage at `r`'s sizes."""
    from mbml_cli.algos import bcq, sac
    from mbml_cli.algos.mbml import Relabelled, Teachers
    from mbml_cli.algos.reward_model import EnsembleModel, make_split, train_ensemble
    from mbml_cli.run.pipeline.collect import act, sac_updates
    from mbml_cli.run.pipeline.distill import build_trainer
    from mbml_cli.run.pipeline.online import LockstepEnvs
    out = []

    # collect: K envs stepped with the SAC actors, then updates_per_step SAC updates (Probe.collect_step, looped)
    s, c = p.shard(), r.collect
    capacity = 10_000
    tasks = s.dist.tasks("train", s.K, r.seed)
    lock = LockstepEnvs([s.dist.make_env(t, s.H) for t in tasks], capacity, s.device,
                        seed_of=lambda k, e: 1000 * k + e, paths=[""] * s.K, labels=[""] * s.K,
                        n_info=len(s.dist.info_names))
    agent = sac.SAC(s.K, s.obs_dim, s.act_dim, c.hidden).to(s.device)
    opt = sac.SACOptimisers(agent, c.lr)
    lock.start()
    for _ in range(4):
        lock.step(act(agent, lock.obs, s.gen, random=True))

    def collect():
        if lock.t >= capacity - 1:
            lock.t = 4                                          # reuse the rows: the timing does not care
        lock.step(act(agent, lock.obs, s.gen, random=False))
        sac_updates(agent, opt, lock, c, s.gen)
    out.append(("collect", s, f"{s.K} env steps + {c.updates_per_step} SAC update", collect,
                s.K * p.env_step(), lock.close))

    # bcq: one batched update (Probe.bcq_update)
    b = r.bcq
    model = s.bcq_model()
    tr = bcq.BCQTrainer(model, b.lr)

    def bcq_step():
        noise = bcq.sample_noise(s.K, b.batch_size, model.vae.latent_dim, b.n_candidates, s.gen, s.device)
        bcq.update(tr, s.data.sample(b.batch_size, s.gen), b, noise)
    out.append(("bcq", s, "1 update", bcq_step, 0.0, lambda: None))

    # reward: one ensemble step (Probe.reward_step)
    rc = r.reward
    ens = EnsembleModel(p.K, rc.ensemble_size, p.obs_dim, p.act_dim, rc.hidden, 1, False).to(p.device)
    split = make_split(p.data.sizes, rc.holdout, p.gen)
    one = type(rc)(**{**rc.__dict__, "steps": 1})
    out.append(("reward", p, f"1 step, {rc.ensemble_size} members",
                lambda: train_ensemble(ens, p.data.obs, p.data.act, p.data.rew[..., None], split, one, p.gen),
                0.0, lambda: None))

    # distill: one MBML trainer step (Probe.distill_step)
    teachers = Teachers.from_bcq(p.bcq_model().eval())
    N = p.data.obs.shape[1]
    rel = Relabelled(torch.zeros(p.K, p.K, N), ~torch.eye(p.K, dtype=torch.bool)[:, :, None].expand(-1, -1, N))
    trainer = build_trainer(r, "mbml", p.data, p.device, teachers, rel)
    out.append(("distill", p, "1 mbml step", lambda: trainer.step(p.gen), 0.0, lambda: None))

    # eval: the distilled policy acting on T states, then T env steps (run_episode's inner loop)
    T = r.env.n_test * r.eval.repeats
    envs = [p.dist.make_env(t, p.H) for t in np.tile(p.dist.tasks("test", r.env.n_test, r.seed), (r.eval.repeats, 1))]
    obs = np.stack([e.reset(seed=i)[0] for i, e in enumerate(envs)]).astype(np.float32)
    z = torch.zeros(T, r.distill.latent_dim)

    def eval_step():
        with torch.no_grad():
            a = trainer.policy.act(torch.as_tensor(obs), z, p.gen).numpy()
        for k, env in enumerate(envs):
            nxt, _, term, trunc, _ = env.step(a[k])
            obs[k] = env.reset()[0] if term or trunc else nxt
    out.append(("eval", p, f"act on {T} states + {T} env steps", eval_step, T * p.env_step(),
                lambda: [e.close() for e in envs]))
    return out


# ---- BCQ beside d3rlpy and the reference -----------------------------------------------------------------
def seconds_per_call(fn: Callable[[], object], n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def ours_bcq(r, K: int, n: int) -> float:
    """Seconds per task-iteration of our batched BCQ with K tasks."""
    from mbml_cli.algos import bcq
    p, b = Probe(r, torch.device("cpu"), K), r.bcq
    model = p.bcq_model()
    tr = bcq.BCQTrainer(model, b.lr)

    def step():
        noise = bcq.sample_noise(K, b.batch_size, model.vae.latent_dim, b.n_candidates, p.gen, p.device)
        bcq.update(tr, p.data.sample(b.batch_size, p.gen), b, noise)
    return seconds_per_call(step, n) / K


def d3rlpy_bcq(r, obs_dim: int, act_dim: int, n: int) -> tuple[float | None, str]:
    """Seconds per iteration of d3rlpy's BCQ (one task) at the recipe's sizes, or (None, why)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import d3rlpy                                       # gym 0.26 prints a deprecation notice
        import logging

        import structlog
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # its info lines
    except Exception as e:                                      # noqa: BLE001 - any import failure is reported
        return None, f"d3rlpy not importable ({type(e).__name__}: {e}); pip install -r bench/requirements.txt"
    b = r.bcq
    rng = np.random.default_rng(0)
    N, H = 2048, 200
    terminals = np.zeros(N, np.float32)
    timeouts = np.zeros(N, np.float32)
    timeouts[H - 1::H] = 1.0
    timeouts[-1] = 1.0
    dataset = d3rlpy.dataset.MDPDataset(rng.standard_normal((N, obs_dim)).astype(np.float32),
                                        rng.uniform(-1, 1, (N, act_dim)).astype(np.float32),
                                        rng.standard_normal(N).astype(np.float32), terminals, timeouts=timeouts)
    enc = d3rlpy.models.encoders.VectorEncoderFactory
    algo = d3rlpy.algos.BCQConfig(
        actor_encoder_factory=enc(hidden_units=list(b.actor_hidden)),
        critic_encoder_factory=enc(hidden_units=list(b.critic_hidden)),
        imitator_encoder_factory=enc(hidden_units=list(b.vae_hidden)),
        actor_learning_rate=b.lr, critic_learning_rate=b.lr, imitator_learning_rate=b.lr,
        batch_size=b.batch_size, gamma=b.gamma, tau=b.tau, lam=b.lmbda, n_critics=2,
        n_action_samples=b.n_candidates, action_flexibility=b.phi, beta=b.kl_weight,
    ).create(device="cpu:0")
    algo.build_with_dataset(dataset)
    return seconds_per_call(lambda: algo.update(dataset.sample_transition_batch(b.batch_size)), n), \
        f"d3rlpy {d3rlpy.__version__}: algo.update(dataset.sample_transition_batch(B))"


def reference_bcq(path: str, r, obs_dim: int, act_dim: int, n: int) -> tuple[float | None, str]:
    """Seconds per iteration of sfujim/BCQ's `train` (one task) at the recipe's sizes, or (None, why)."""
    try:
        pol = peers.reference_bcq(path, r.bcq, obs_dim, act_dim)
    except ValueError as e:
        return None, str(e)
    buf = peers.Buffer.random(obs_dim, act_dim)
    pol.train(buf, 2, batch_size=r.bcq.batch_size)
    t0 = time.perf_counter()
    pol.train(buf, n, batch_size=r.bcq.batch_size)
    return (time.perf_counter() - t0) / n, f"{peers.reference_module(path).FILE}: train(replay_buffer, {n}), " \
        "layers resized to the recipe's"


# ---- the run -----------------------------------------------------------------------------------------------
def machine_peak(n: int = 1024) -> float:
    """GFLOP/s of one n³ float32 mm: the machine's ceiling at these threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = seconds_per_call(lambda: a @ b, 5)
    return 2 * n ** 3 / t / 1e9


def run_recipe(path: Path, updates: int, label: str, reference: str | None) -> tuple[list[Row], list[dict]]:
    r = resolve(load(path)[0])
    p = Probe(r, torch.device("cpu"))
    rows = []
    for stage, probe, what, step, env_s, close in stage_steps(p, r):
        print(f"  {label}: {stage} ({updates} updates)…", file=sys.stderr, flush=True)
        try:
            rows.append(measure(Row(label, stage, probe.K, what, updates), step, env_s))
        finally:
            close()
    n = max(updates, 3)
    bcq_rows = [{"recipe": label, "impl": "ours, batched K=10", "ms_per_task_iteration": 1e3 * ours_bcq(r, 10, n),
                 "how": "bcq.update on (10, B, ·), / 10"},
                {"recipe": label, "impl": "ours, K=1", "ms_per_task_iteration": 1e3 * ours_bcq(r, 1, n),
                 "how": "bcq.update on (1, B, ·)"}]
    for impl, fn in (("d3rlpy BCQ", lambda: d3rlpy_bcq(r, p.obs_dim, p.act_dim, n)),
                     ("sfujim/BCQ (reference)", (lambda: reference_bcq(reference, r, p.obs_dim, p.act_dim, n))
                      if reference else (lambda: (None, "not run: pass --reference PATH to a checkout of sfujim/BCQ")))):
        print(f"  {label}: {impl}…", file=sys.stderr, flush=True)
        try:
            s, how = fn()
        except Exception as e:                                  # noqa: BLE001 - reported in the table
            s, how = None, f"failed: {type(e).__name__}: {e}"
        bcq_rows.append({"recipe": label, "impl": impl, "ms_per_task_iteration": None if s is None else 1e3 * s,
                         "how": how})
    return rows, bcq_rows


def tables(rows: list[Row], bcq_rows: list[dict], header: str):
    from rich.table import Table
    pct = lambda x: "" if x is None else f"{100 * x:.0f}%"
    t = Table("recipe", "stage", "K", "one update", "upd/s", "ms/task-upd", "GFLOP/upd", "GFLOP/s", "peak GFLOP/s",
              "of peak", "outside torch (prof | wall)", "env", title=header)
    for w in rows:
        t.add_row(w.recipe, w.stage, str(w.K), w.what, f"{w.updates_per_s:.1f}", f"{w.ms_per_task_update:.2f}",
                  f"{w.gflop_per_update:.3f}", f"{w.gflop_s:.1f}", f"{w.peak_gflop_s:.1f}", pct(w.of_peak),
                  f"{pct(w.outside_prof)} | {pct(w.outside_wall)}", pct(w.env_share))
    u = Table("recipe", "BCQ", "ms / task-iteration", "how", title="BCQ per task-iteration (one task's update)")
    for b in bcq_rows:
        ms = b["ms_per_task_iteration"]
        u.add_row(b["recipe"], b["impl"], "—" if ms is None else f"{ms:.2f}", b["how"])
    return t, u


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "halfcheetah_vel_cpu.yaml")
    parser.add_argument("--paper-recipe", type=Path, default=ROOT / "recipes" / "halfcheetah_vel.yaml")
    parser.add_argument("--updates", type=int, default=30, help="timed updates per stage")
    parser.add_argument("--paper-updates", type=int, default=0, help="timed updates at the paper's sizes (0: --updates)")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper's sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="write the same numbers here")
    parser.add_argument("--reference", help="a checkout of github.com/sfujim/BCQ (or its continuous_BCQ/BCQ.py)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    peak = machine_peak()
    load_avg = os.getloadavg()
    header = (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, load "
              f"{load_avg[0]:.2f}; 1024³ mm: {peak:.1f} GFLOP/s; peak = these updates' GEMMs replayed alone")
    print(header, file=sys.stderr)
    rows, bcq_rows = run_recipe(args.recipe, args.updates, args.recipe.stem, args.reference)
    if not args.no_paper:
        more = run_recipe(args.paper_recipe, args.paper_updates or args.updates, args.paper_recipe.stem, args.reference)
        rows, bcq_rows = rows + more[0], bcq_rows + more[1]
    from rich.console import Console
    console = Console(width=200)
    for t in tables(rows, bcq_rows, header):
        console.print(t)
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                         "loadavg_start": load_avg, "loadavg_end": os.getloadavg(),
                                         "mm_1024_gflop_s": peak, "stages": [asdict(w) for w in rows],
                                         "bcq": bcq_rows}, indent=1))


if __name__ == "__main__":
    main()
