"""Final or best BCQ checkpoints: which are the better teachers? Not a test.

    python bench/teachers.py RUN [--episodes 10] [--json FILE]

`mbml bcq` scores only the final checkpoints (the stage records' `fraction`). The `best` ones were
picked on the `eval_every` evaluations, which are few episodes each, so they are scored here again on
fresh episodes by the stage's own `final_report` (at least `--episodes` episodes on every training
task, with a random policy's return measured beside it; all K tasks at once rather than per shard,
so the `final` row is near the stage records, not equal to them), and each prints its mean return,
the fraction of the way from random to the batch's best episode, and how many tasks reach 0.8.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from mbml_cli.core import layout
from mbml_cli.run import stages
from mbml_cli.run.loaders import load_bcq
from mbml_cli.run.pipeline.bcq import final_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--json", help="write each checkpoint's returns and fractions to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ctx = stages.open_run(args.run, mode="r")                       # a reader: no writer lock
    r = ctx.recipe
    params = ctx.tasks("train")
    envs = [ctx.dist.make_env(p, r.env.horizon) for p in params]
    recs = [ctx.store.stage(layout.stage_key("bcq", i)) for i in range(len(params))]
    print(f"{args.run}: {len(params)} training tasks, {args.episodes} episodes each; "
          f"the stage records' final fractions: {np.round([rec['fraction'] for rec in recs], 2).tolist()}")
    out = {"run": args.run, "episodes": args.episodes, "record_fractions": [rec["fraction"] for rec in recs]}
    for which in ("final", "best"):
        model = load_bcq(ctx.store, r, which)
        rows = final_report(model, envs, ctx.store, list(range(len(params))), r.seed, args.episodes)
        ret, frac = (np.array([row[k] for row in rows]) for k in ("bcq_return", "fraction"))
        at = int((frac >= 0.8).sum())
        print(f"{which:5s}  return {ret.mean():8.2f}  fraction mean {frac.mean():.2f}, "
              f"tasks ≥ 0.8: {at}/{len(frac)}  per task {np.round(frac, 2).tolist()}")
        out[which] = {"returns": ret.tolist(), "fractions": frac.tolist(), "fraction_mean": float(frac.mean()),
                      "tasks_at_0.8": at,
                      "random": [row["random_return"] for row in rows],
                      "best_batch": [row["best_batch_return"] for row in rows]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
