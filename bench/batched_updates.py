"""Throughput of the batched K-task SAC and BCQ updates against K sequential single-task runs of the
same code, and of collection (environment steps per second) against the raw simulator. Not a test.

    python bench/batched_updates.py [--tasks 10] [--seconds 3] [--threads 0] [--skip-paper]

For each network size (the paper's, docs/design.md §4, and the CPU recipe's, recipes/halfcheetah_vel_cpu.yaml)
it times, in the same run, one update of a K-task batched module (`algos.sac.update` /
`algos.bcq.update` on (K, B, ·) inputs) and K updates of K one-task modules (the same function on
(1, B, ·) inputs), with halfcheetah_vel's dimensions (obs 17, act 6). The ratio is the speed-up of
batching: sequential seconds per K task-updates / batched seconds per K task-updates.
Collection runs `mbml collect` (the real stage) on the CPU recipe for a few hundred steps per task
into a temporary store, with random actions only and with one SAC update per step, and compares
its environment steps per second with stepping one environment with random actions.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mbml_cli import envs
from mbml_cli.algos import bcq, sac
from mbml_cli.recipe.config import BCQConfig
from mbml_cli.recipe.load import load, resolve

ROOT = Path(__file__).resolve().parent.parent
OBS, ACT = 17, 6          # halfcheetah_vel


def batch(k: int, b: int) -> dict[str, torch.Tensor]:
    return {"obs": torch.randn(k, b, OBS), "act": torch.rand(k, b, ACT) * 2 - 1, "rew": torch.randn(k, b),
            "next_obs": torch.randn(k, b, OBS), "terminal": torch.zeros(k, b)}


def timed(fn, seconds: float, min_calls: int = 2) -> float:
    """Seconds per call of `fn` (after one warm-up call), over about `seconds`."""
    fn()
    n, start = 0, time.perf_counter()
    while n < min_calls or time.perf_counter() - start < seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n


def sac_case(K: int, hidden: list[int], b: int, seconds: float) -> tuple[float, float]:
    torch.manual_seed(0)
    batched = sac.SAC(K, OBS, ACT, hidden)
    opt = sac.SACOptimisers(batched, 3e-4)
    data = batch(K, b)
    singles = [sac.SAC(1, OBS, ACT, hidden) for _ in range(K)]
    opts = [sac.SACOptimisers(s, 3e-4) for s in singles]
    one = [{name: v[k:k + 1] for name, v in data.items()} for k in range(K)]
    t_batched = timed(lambda: sac.update(batched, opt, data, 0.99, 0.005), seconds)
    t_seq = timed(lambda: [sac.update(s, o, d, 0.99, 0.005) for s, o, d in zip(singles, opts, one)], seconds)
    return t_batched, t_seq


def bcq_case(K: int, cfg: BCQConfig, seconds: float) -> tuple[float, float]:
    torch.manual_seed(0)
    batched = bcq.BCQTrainer(bcq.BCQ(K, OBS, ACT, cfg), cfg.lr)
    data = batch(K, cfg.batch_size)
    singles = [bcq.BCQTrainer(bcq.BCQ(1, OBS, ACT, cfg), cfg.lr) for _ in range(K)]
    one = [{name: v[k:k + 1] for name, v in data.items()} for k in range(K)]
    t_batched = timed(lambda: bcq.update(batched, data, cfg), seconds)
    t_seq = timed(lambda: [bcq.update(s, d, cfg) for s, d in zip(singles, one)], seconds)
    return t_batched, t_seq


def raw_env_rate(name: str, horizon: int, seconds: float) -> float:
    dist = envs.get(name)
    env = dist.make_env(dist.tasks("train", 1, 0)[0], horizon)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, ACT).astype(np.float32))
            if term or trunc:
                env.reset()
        n += 100
    return n / (time.perf_counter() - start)


def collect_rate(recipe_path: Path, K: int, steps: int, random_steps: int, log_every: int, threads: int) -> float:
    """Steady-state environment steps per second (all K tasks) of the real `collect` stage: the median
    of its own `env_steps_per_s` metric over the log intervals after the first (start-up excluded;
    a metric row with K·4 columns costs ~0.3 s of zarr writes, included as in a real run)."""
    import contextlib
    import io

    from mbml_cli.run.stages import create_run, run_stage
    recipe, _ = load(recipe_path, [f"env.n_train={K}", f"collect.steps={steps}", f"collect.random_steps={random_steps}",
                                   f"collect.log_every={log_every}", f"collect.checkpoint_every={steps}",
                                   f"threads={threads}"])
    with tempfile.TemporaryDirectory() as tmp:
        recipe = resolve(recipe)
        recipe.store = str(Path(tmp) / "bench.zarr")
        ctx = create_run(recipe)
        with contextlib.redirect_stderr(io.StringIO()):
            run_stage(ctx, "collect")
        rates = ctx.store.metrics("collect", "train")["env_steps_per_s"]
        return float(np.median(rates[1:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10, help="K")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--skip-paper", action="store_true", help="skip the paper-size networks (slow on a CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    K = args.tasks
    cpu_recipe, _ = load(ROOT / "recipes" / "halfcheetah_vel_cpu.yaml")
    paper_recipe, _ = load(ROOT / "recipes" / "halfcheetah_vel.yaml")
    print(f"K = {K} tasks, obs {OBS}, act {ACT}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'update':<34} {'batched s':>10} {'K× single s':>12} {'task-upd/s':>11} {'ratio':>6}")
    cases = []
    for label, r in (("paper", paper_recipe), ("cpu recipe", cpu_recipe)):
        if label == "paper" and args.skip_paper:
            continue
        c = r.collect
        cases.append((f"SAC {label} {c.hidden} B={c.batch_size}", lambda c=c: sac_case(K, c.hidden, c.batch_size, args.seconds)))
        b = r.bcq
        cases.append((f"BCQ {label} vae{b.vae_hidden} B={b.batch_size}", lambda b=b: bcq_case(K, b, args.seconds)))
    for name, fn in cases:
        t_b, t_s = fn()
        print(f"{name:<34} {t_b:>10.4f} {t_s:>12.4f} {K / t_b:>11.1f} {t_s / t_b:>6.2f}", flush=True)

    H = cpu_recipe.env.horizon or envs.get(cpu_recipe.env.name).horizon
    raw = raw_env_rate(cpu_recipe.env.name, H, args.seconds)
    threads = args.threads or torch.get_num_threads()
    path = ROOT / "recipes" / "halfcheetah_vel_cpu.yaml"
    no_updates = collect_rate(path, K, 4000, 4000, 1000, threads)
    with_updates = collect_rate(path, K, 400, 1, 100, threads)
    print(f"\ncollection ({cpu_recipe.env.name}, K = {K}, H = {H}), environment steps per second over all tasks:")
    print(f"  raw simulator, one env, random actions      {raw:>9,.0f}")
    print(f"  collect, random actions (no updates)         {no_updates:>9,.0f}  ({no_updates / raw:.2f} × raw)")
    print(f"  collect, SAC with 1 update per step          {with_updates:>9,.0f}  ({with_updates / raw:.3f} × raw)")


if __name__ == "__main__":
    main()
