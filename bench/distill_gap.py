"""Where does a distilled policy lose its teachers' return on their own training tasks? Not a test.

    python bench/distill_gap.py RUN [--algo mbml] [--which final] [--episodes 3] [--json FILE]

For every training task k, z is the posterior mean of 64 transitions of task k's batch; actions are
the argmax over n candidates, and the four combinations of candidate source × critic are run:

  candidates  teacher G_k + ξ_k   or  distilled G_D + ξ_D (given z)
  scored by   teacher Q_k         or  distilled Q_D (given z)

teacher/teacher is the BCQ teachers themselves, D/D the distilled policy; the two mixed rows show
which distilled part costs the return. The last two rows take the first candidate, scored by no Q (a
random pick): how much the argmax adds over the candidates themselves. A uniform random policy is run
on the same resets. Each row prints its mean return and the fraction of the teachers' improvement
over random it keeps, (R − R_random) / (R_teacher − R_random), per task and as the mean over tasks
(a task whose teacher is no better than random has nothing to keep and is left out of the mean).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from mbml_cli.core import layout
from mbml_cli.run import stages
from mbml_cli.run.loaders import load_bcq
from mbml_cli.api import Run, load_policy
from mbml_cli.run.rollout import run_episode

ROWS = [("teacher", "teacher"), ("teacher", "distilled"), ("distilled", "teacher"), ("distilled", "distilled"),
        ("teacher", "no"), ("distilled", "no")]


def task_posteriors(store, policy, K: int, n: int = 64) -> list[tuple[object, dict]]:
    """Per training task k: the posterior from n transitions of its batch (rows drawn with
    default_rng(k)), and the batch itself. distill_fit.py reads the same z."""
    out = []
    for k in range(K):
        batch = store.read_rows(layout.BATCH("train", k), columns=("obs", "act", "rew", "next_obs"))
        rows = len(batch["rew"])
        idx = np.sort(np.random.default_rng(k).choice(rows, min(n, rows), replace=False))
        out.append((policy.infer(**{f: v[idx] for f, v in batch.items()}), batch))
    return out


def kept(returns: np.ndarray, teacher: np.ndarray, random: np.ndarray) -> np.ndarray:
    """Per task, the fraction of the teachers' improvement over random that `returns` keeps (nan
    where the teacher is no better than random: there is nothing to keep)."""
    gain = teacher - random
    return np.where(gain > 0, (returns - random) / np.where(gain > 0, gain, 1.0), np.nan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--algo", default="mbml")
    ap.add_argument("--which", default="final", choices=("final", "best"))
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--json", help="write the returns and fractions to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ctx = stages.open_run(args.run, mode="r")                       # a reader: no writer lock
    r = ctx.recipe
    distilled = load_policy(Run(ctx.store), args.algo, args.which)
    D = distilled.module
    teachers = load_bcq(ctx.store, r)                           # the final checkpoints it was distilled from
    params = ctx.tasks("train")
    K, n = len(params), r.bcq.n_candidates
    envs = [ctx.dist.make_env(p, r.env.horizon) for p in params]

    z = torch.as_tensor(np.stack([post.mean for post, _ in task_posteriors(ctx.store, distilled, K)]),
                        dtype=torch.float32)                                     # (K, L)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    act_dim = envs[0].action_space.shape[0]

    def policy(candidates: str, critic: str):
        @torch.no_grad()
        def act(obs):
            s = torch.as_tensor(obs, dtype=torch.float32)[:, None].expand(K, n, obs.shape[-1])
            zz = z[:, None].expand(K, n, z.shape[-1])
            nu = torch.randn(K, n, D.vae_latent, generator=gen).clamp(-0.5, 0.5)
            if candidates == "distilled":
                cand = D.perturb(s, D.generate(s, nu, zz), zz).clamp(-1, 1)
            else:
                cand = teachers.actor(s, teachers.vae.decode(s, nu))
            if critic == "no":
                return cand[:, 0].numpy()
            q = D.q_value(s, cand, zz) if critic == "distilled" else teachers.critic.q1(s, cand).squeeze(-1)
            return cand[torch.arange(K), q.argmax(1)].numpy()
        return act

    def returns(act) -> np.ndarray:
        return np.mean([run_episode(envs, act, seed=500 + e).returns for e in range(args.episodes)], axis=0)

    print(f"{args.run}: {args.algo} ({args.which}), {K} training tasks, {args.episodes} episodes each")
    random = returns(lambda obs: rng.uniform(-1, 1, (K, act_dim)))
    print(f"{'random':42s}: mean {random.mean():8.1f}   per task {np.round(random).astype(int).tolist()}")
    out = {"run": args.run, "algo": args.algo, "which": args.which, "random": random.tolist(), "rows": {}}
    teacher = None
    for candidates, critic in ROWS:
        ret = returns(policy(candidates, critic))
        teacher = ret if teacher is None else teacher
        frac = kept(ret, teacher, random)
        name = f"candidates {candidates} scored by {critic} Q"
        print(f"{name:42s}: mean {ret.mean():8.1f}   kept {np.nanmean(frac):6.2f}   per task "
              f"{np.round(frac.astype(np.float64), 2).tolist()}")
        out["rows"][f"{candidates}/{critic}"] = {"returns": ret.tolist(), "kept": frac.tolist(),
                                                 "kept_mean": float(np.nanmean(frac))}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
