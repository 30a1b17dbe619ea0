"""BCQ teachers measured so that settings can be told apart. Not a test.

    python bench/teachers.py RUN [--episodes 10] [--json FILE]
    python bench/teachers.py RUN --train 0,1,2 [--set bcq.relabelled=true ...] [--episodes 10] [--json FILE]
    python bench/teachers.py RUN --train 0,1,2 --reference PATH/TO/sfujim/BCQ [--set ...]
    python bench/teachers.py --table A.json B.json+C.json ...  # the --train JSONs side by side (Markdown;
                                                               # B+C: one setting's seeds in two files)

Without `--train`: the store's own `final` and `best` checkpoints. `mbml bcq` scores only the final
ones (the stage records' fractions); the `best` ones were picked on the `eval_every` evaluations,
which are few episodes each. Both are scored here again on fresh episodes by the stage's own
`final_report` (all K tasks at once rather than per shard, so the `final` row is near the stage
records, not equal to them).

With `--train SEEDS`: BCQ teachers trained again on the store's batches (nothing is written to the
store), once per training seed, with the store's recipe and `--set` overrides (e.g. `bcq.relabelled=true`,
other sizes or iterations), by the stage's own code (`pipeline/bcq.BCQRun`: the same networks, data and
mini-batches). The training seed replaces the recipe's seed in BCQ's random streams (initialisation,
mini-batches, noise); the batches, tasks and relabelled rewards are the store's. Each is timed (seconds
per task-iteration, all K tasks in one batched network, one thread), its critics' mean Q is printed at
tenths of the run (has Q levelled off?), and its final teachers are scored on `--episodes` fresh
episodes per task. With `--reference`, Fujimoto's reference BCQ (bench/peers.py) is trained instead,
on each task's batch alone, at the recipe's widths and settings, and scored the same way (its
`select_action` draws 100 candidates, ours `bcq.n_candidates`).

Every score prints both scales of the teacher bar (`read/batches.py`): the fraction of the way from a
random policy to the batch's best episode, and to the mean of its best 10 % of episodes (the bar's
scale: ≥ 0.8 on ≥ 8 of 10 tasks).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
import torch

from mbml_cli.core import layout
from mbml_cli.read.batches import BAR, bar_tasks
from mbml_cli.run import stages
from mbml_cli.run.loaders import load_batches, load_bcq
from mbml_cli.run.pipeline.bcq import BCQRun, final_report
from mbml_cli.run.rollout import make_envs

import peers                                       # bench/peers.py: the reference BCQ


def summary(rows: list[dict]) -> dict:
    """Returns and both fractions of one set of K teachers."""
    ret, frac, top = (np.array([row[k] for row in rows]) for k in ("bcq_return", "fraction", "fraction_top10"))
    return {"returns": ret.tolist(), "fractions": frac.tolist(), "fractions_top10": top.tolist(),
            "return_mean": float(ret.mean()), "fraction_mean": float(frac.mean()),
            "fraction_top10_mean": float(top.mean()), "tasks_at_bar": int((frac >= BAR).sum()),
            "tasks_at_bar_top10": int((top >= BAR).sum()),
            "random": [row["random_return"] for row in rows], "best_batch": [row["best_batch_return"] for row in rows],
            "top10_batch": [row["top10_batch_return"] for row in rows]}


def line(label: str, s: dict) -> str:
    K = len(s["returns"])
    return (f"{label:10s} return {s['return_mean']:8.2f}  fraction (best) {s['fraction_mean']:.2f}, "
            f"(best 10 %) {s['fraction_top10_mean']:.2f}; tasks ≥ {BAR}: {s['tasks_at_bar']} / "
            f"{s['tasks_at_bar_top10']} of {K} (bar: {bar_tasks(K)})")


def score_checkpoints(ctx, envs, episodes: int) -> dict:
    out = {}
    for which in ("final", "best"):
        model = load_bcq(ctx.store, ctx.recipe, which)
        out[which] = summary(final_report(model, envs, ctx.store, list(range(len(envs))), ctx.recipe.seed, episodes))
        print(line(which, out[which]))
    return out


def train_once(ctx, seed: int, episodes: int) -> dict:
    """BCQ teachers for all K tasks trained with training seed `seed`; timed, Q tracked, scored."""
    ctx.recipe = dataclasses.replace(ctx.recipe, seed=seed)
    job = BCQRun(ctx, list(range(len(ctx.tasks("train")))), digest="bench")
    its, K = ctx.recipe.bcq.iterations, job.K
    marks, q, t0 = set(np.linspace(its / 10, its, 10).astype(int)), [], time.perf_counter()
    for t in range(1, its + 1):
        out = job.tr.step(job.gen_sample)
        if t in marks:
            q.append(out["q"].mean().item())
    seconds = time.perf_counter() - t0
    rows = final_report(job.model, job.envs, ctx.store, job.todo, seed, episodes)
    for env in job.envs:
        env.close()
    res = {"seed": seed, "seconds": seconds, "ms_per_task_iteration": 1e3 * seconds / (its * K),
           "q_at_tenths": q, **summary(rows)}
    print(line(f"seed {seed}", res) + f"; {res['ms_per_task_iteration']:.3f} ms per task-iteration; "
          f"mean Q at tenths {np.round(q, 1).tolist()}", flush=True)
    return res


def train_reference(ctx, seed: int, episodes: int, path: str) -> dict:
    """Fujimoto's reference BCQ (bench/peers.py) trained on each task's batch alone, one task after
    another, with training seed `seed` (torch's and numpy's global generators, which it draws from);
    timed per task-iteration and scored as ours."""
    r, K = ctx.recipe, len(ctx.tasks("train"))
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = load_batches(ctx.store, "train", list(range(K)))
    pols, t0 = [], time.perf_counter()
    for i in range(K):
        n = int(data.sizes[i])
        pol = peers.reference_bcq(path, r.bcq, data.obs.shape[-1], data.act.shape[-1])
        rows = {f: getattr(data, f)[i, :n].numpy() for f in ("obs", "act", "next_obs", "rew", "terminal")}
        pol.train(peers.Buffer(rows["obs"], rows["act"], rows["next_obs"], rows["rew"], 1.0 - rows["terminal"]),
                  r.bcq.iterations, batch_size=r.bcq.batch_size)
        pols.append(pol)
    seconds = time.perf_counter() - t0
    envs = make_envs(ctx.dist, ctx.tasks("train"), r.env.horizon)
    act = lambda obs: np.stack([pol.select_action(o) for pol, o in zip(pols, obs)])
    rows = final_report(None, envs, ctx.store, list(range(K)), seed, episodes, act=act)
    for env in envs:
        env.close()
    res = {"seed": seed, "seconds": seconds, "ms_per_task_iteration": 1e3 * seconds / (r.bcq.iterations * K),
           **summary(rows)}
    print(line(f"seed {seed}", res) + f"; {res['ms_per_task_iteration']:.3f} ms per task-iteration", flush=True)
    return res


def table(files: list[str]) -> str:
    """The side-by-side table (Markdown) of `--train` JSONs: per file the setting, the mean over its
    training seeds ± their sd of the return and both fractions, the tasks at the bar per seed, ms per
    task-iteration and the critics' mean Q at the end."""
    head = ["setting", "seeds", "return", "fraction (best)", "fraction (best 10 %)", "tasks ≥ 0.8 per seed (best 10 %)",
            "ms / task-iteration", "mean Q at the end"]
    rows = []
    for f in files:
        parts = [json.load(open(x)) for x in f.split("+")]        # A.json+B.json: one setting's seeds in two files
        d, runs = parts[0], [x for p in parts for x in p["runs"]]
        pm = lambda k, p=2: f"{np.mean([x[k] for x in runs]):.{p}f} ± {np.std([x[k] for x in runs]):.{p}f}"
        sets = [x for x in d.get("set", []) if not x.startswith("threads=")]
        label = ("reference BCQ (sfujim/BCQ)" if d.get("impl") == "sfujim/BCQ" else "ours") + \
            (", " + ", ".join(f"`{x}`" for x in sets) if sets else ", the recipe's settings")
        q = [x["q_at_tenths"][-1] for x in runs if x.get("q_at_tenths")]
        rows.append([label, ",".join(str(x["seed"]) for x in runs), pm("return_mean"),
                     pm("fraction_mean"), pm("fraction_top10_mean"),
                     " / ".join(str(x["tasks_at_bar_top10"]) for x in runs) + f" of {len(runs[0]['returns'])}",
                     pm("ms_per_task_iteration", 2), f"{np.mean(q):.1f}" if q else "—"])
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows])


def main() -> None:
    if sys.argv[1:2] == ["--table"]:
        print(table(sys.argv[2:]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--train", help="training seeds, e.g. 0,1,2: train the teachers again, once per seed")
    ap.add_argument("--set", action="append", default=[], help="a recipe override for --train (repeatable)")
    ap.add_argument("--reference", help="with --train: a checkout of github.com/sfujim/BCQ, trained in the place of ours "
                    "(one task at a time, at the recipe's widths)")
    ap.add_argument("--json", help="write each checkpoint's or seed's returns and fractions to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ctx = stages.open_run(args.run, args.set or None, mode="r")             # a reader: no writer lock
    r = ctx.recipe
    params = ctx.tasks("train")
    K = len(params)
    print(f"{args.run}: {K} training tasks, {args.episodes} episodes each; the stage records' final fractions "
          f"(best episode): {np.round([ctx.store.stage(layout.stage_key('bcq', i)).get('fraction', np.nan) for i in range(K)], 2).tolist()}")
    out = {"run": args.run, "episodes": args.episodes, "set": args.set}
    if not args.train:
        envs = make_envs(ctx.dist, params, r.env.horizon)
        out.update(score_checkpoints(ctx, envs, args.episodes))
    else:
        print(f"training: bcq {dataclasses.asdict(r.bcq)}")
        out.update(bcq=dataclasses.asdict(r.bcq), impl="sfujim/BCQ" if args.reference else "mbml", runs=[])
        for seed in args.train.split(","):                  # the JSON after every seed: a killed run keeps them
            out["runs"].append(train_reference(ctx, int(seed), args.episodes, args.reference) if args.reference
                               else train_once(ctx, int(seed), args.episodes))
            runs = out["runs"]
            stat = lambda k: (float(np.mean([x[k] for x in runs])), float(np.std([x[k] for x in runs])))
            out.update({f"{k}_mean_sd": stat(k) for k in ("return_mean", "fraction_mean", "fraction_top10_mean",
                                                          "tasks_at_bar_top10", "ms_per_task_iteration")})
            write(args.json, out)
        print("over seeds (mean ± sd): " + ", ".join(f"{k} {m:.3f} ± {s:.3f}" for k, (m, s) in
                                                     ((k, out[f"{k}_mean_sd"]) for k in ("return_mean",
                                                      "fraction_top10_mean", "tasks_at_bar_top10",
                                                      "ms_per_task_iteration"))))
    write(args.json, out)


def write(path: str | None, out: dict) -> None:
    """`out` as JSON at `path` (if any), replaced atomically."""
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
