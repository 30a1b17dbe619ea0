"""Where does a distilled policy lose its teachers' return on their own training tasks? Not a test.

    python bench/distill_gap.py RUN [--algo mbml] [--episodes 3]

For every training task k, z is the posterior mean of 64 transitions of task k's batch; actions are
the argmax over n candidates, and the four combinations of candidate source × critic are run:

  candidates  teacher G_k + ξ_k   or  distilled G_D + ξ_D (given z)
  scored by   teacher Q_k         or  distilled Q_D (given z)

teacher/teacher is the BCQ teachers themselves, D/D the distilled policy; the two mixed rows show
which distilled part costs the return. Prints the mean return over tasks and per task.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from mbml_cli import layout, stages
from mbml_cli.loaders import load_bcq
from mbml_cli.api import Run, load_policy
from mbml_cli.rollout import run_episode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--algo", default="mbml")
    ap.add_argument("--episodes", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ctx = stages.open_run(args.run)
    r = ctx.recipe
    distilled = load_policy(Run(ctx.store), args.algo, "final")
    D = distilled.module
    teachers = load_bcq(ctx.store, r, "final")
    params = ctx.tasks("train")
    K, n = len(params), r.bcq.n_candidates
    envs = [ctx.dist.make_env(p, r.env.horizon) for p in params]

    z = []
    for k in range(K):
        batch = ctx.store.read_rows(layout.BATCH("train", k), columns=("obs", "act", "rew", "next_obs"))
        rows = len(batch["rew"])
        idx = np.sort(np.random.default_rng(k).choice(rows, min(64, rows), replace=False))
        z.append(distilled.infer(**{f: v[idx] for f, v in batch.items()}).mean)
    z = torch.as_tensor(np.stack(z), dtype=torch.float32)                       # (K, L)
    gen = torch.Generator().manual_seed(0)

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
            q = D.q_value(s, cand, zz) if critic == "distilled" else teachers.critic.q1(s, cand).squeeze(-1)
            return cand[torch.arange(K), q.argmax(1)].numpy()
        return act

    print(f"{args.run}: {args.algo}, {K} training tasks, {args.episodes} episodes each")
    for candidates in ("teacher", "distilled"):
        for critic in ("teacher", "distilled"):
            returns = np.mean([run_episode(envs, policy(candidates, critic), seed=500 + e).returns
                               for e in range(args.episodes)], axis=0)
            print(f"candidates {candidates:9s} scored by {critic:9s} Q: mean {returns.mean():8.1f}   "
                  f"per task {np.round(returns).astype(int).tolist()}")


if __name__ == "__main__":
    main()
