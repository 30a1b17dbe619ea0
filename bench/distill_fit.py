"""How well do the distilled networks fit their teachers, on the teachers' own batches? Not a test.

    python bench/distill_fit.py RUN [--algo mbml] [--states 1000]

On the last `--states` batch states of every training task, with z the posterior mean of 64 of the
task's own transitions (as `distill_gap.py` takes it), it prints:

1. the embedding: per latent dimension, how far apart the tasks' posterior means are and the
   posterior's sd (a dimension at sd ≈ 1 carries nothing and reaches G_D, ξ_D and Q_D as noise);
2. Eq. 4's fit: ‖G_D(s, ν, z_i) − G_i(s, ν)‖² per task (tasks sorted by their parameter), the same
   with every other task's z (a K×K matrix: is G_D confusing neighbours, or just inaccurate?), and
   how much the teachers' decoders depend on ν at all, ‖G_i(s, ν) − G_i(s, 0)‖², and how far apart
   the teachers' decoders are on each other's states (K×K);
3. the argmax of Eq. 1: over n of G_D + ξ_D's candidates per state, the teacher's Q spread, Q_D's
   error after removing its per-state mean, and the teacher-Q regret of Q_D's argmax against a
   random pick.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from distill_gap import task_posteriors          # bench/ is the script's folder: on sys.path
from mbml_cli.run import stages
from mbml_cli.api import Run, load_policy
from mbml_cli.run.loaders import load_bcq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--algo", default="mbml")
    ap.add_argument("--states", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    np.set_printoptions(precision=2, suppress=True, linewidth=140)
    ctx = stages.open_run(args.run, mode="r")                         # a reader: no writer lock
    r = ctx.recipe
    policy = load_policy(Run(ctx.store), args.algo, "final")
    D = policy.module
    T = load_bcq(ctx.store, r)
    params = ctx.tasks("train")
    K, S, n = len(params), args.states, r.bcq.n_candidates
    order = np.argsort(params[:, 0])

    found = task_posteriors(ctx.store, policy, K)
    mu, sd = np.stack([p.mean for p, _ in found]), np.sqrt(np.stack([p.var for p, _ in found]))   # (K, L)
    states = [b["obs"][-S:] for _, b in found]
    z = torch.as_tensor(mu, dtype=torch.float32)
    s = torch.as_tensor(np.stack([x[-min(map(len, states)):] for x in states]))   # (K, S, obs)
    S = s.shape[1]
    print(f"{args.run}: {args.algo} (final), {K} training tasks, {S} states each; tasks by parameter "
          f"{np.round(params[order, 0], 2).tolist()}")

    spread = mu.std(0)
    print("\n1. embedding: latent dimensions by the spread of the tasks' posterior means")
    for d in np.argsort(-spread)[:3]:
        print(f"   dim {d:2d}: spread {spread[d]:.3f}, posterior sd {sd[:, d].mean():.3f}, "
              f"means by task {mu[order, d]}")
    rest = np.argsort(-spread)[3:]
    print(f"   the other {len(rest)}: spread ≤ {spread[rest].max():.3f}, posterior sd {sd[:, rest].mean():.3f}")

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        nu = torch.randn(K, S, D.vae_latent, generator=gen).clamp(-0.5, 0.5)
        target = T.vae.decode(s, nu)                                     # G_i(s, ν) on task i's states
        cross = np.stack([((D.generate(s, nu, z[j].expand(K, S, -1)) - target) ** 2).sum(-1).mean(-1).numpy()
                          for j in range(K)], 1)                         # (K, K): teacher i, z of task j
        nu_dep = ((target - T.vae.decode(s, torch.zeros_like(nu))) ** 2).sum(-1).mean(-1).numpy()
    print("\n2. Eq. 4: ‖G_D(s, ν, z) − G_i(s, ν)‖², tasks by parameter")
    print(f"   own z          {np.diag(cross)[order]}")
    print(f"   ν-dependence   {nu_dep[order]}   (‖G_i(s, ν) − G_i(s, 0)‖²)")
    print("   rows teacher i, columns z of task j:")
    print("   " + str(cross[np.ix_(order, order)]).replace("\n", "\n   "))
    with torch.no_grad():                                                # every teacher on task i's states
        apart = np.stack([((T.vae.decode(s[i].expand(K, S, -1), nu[i].expand(K, S, -1)) - target[i]) ** 2)
                          .sum(-1).mean(-1).numpy() for i in range(K)])  # (K, K): states of task i, teacher j
    print("   how far apart the teachers are, ‖G_j(s, ν) − G_i(s, ν)‖² on task i's states (a G_D that blends")
    print("   two teachers whose z it cannot tell apart is off by a quarter of this from each):")
    print("   " + str(apart[np.ix_(order, order)]).replace("\n", "\n   "))

    with torch.no_grad():
        ss = s[:, :, None].expand(K, S, n, s.shape[-1])
        zz = z[:, None, None].expand(K, S, n, z.shape[-1])
        nu = torch.randn(K, S, n, D.vae_latent, generator=gen).clamp(-0.5, 0.5)
        cand = D.perturb(ss, D.generate(ss, nu, zz), zz).clamp(-1, 1)
        qt = T.critic.q1(ss.reshape(K, S * n, -1), cand.reshape(K, S * n, -1)).reshape(K, S, n)
        qd = D.q_value(ss, cand, zz)
        err = qd - qt
        err = err - err.mean(-1, keepdim=True)
        best = qt.max(-1).values
        regret = (best - qt.gather(-1, qd.argmax(-1, keepdim=True)).squeeze(-1)).mean(-1).numpy()
        random = (best - qt.mean(-1)).mean(-1).numpy()
    print(f"\n3. Eq. 1 over {n} of G_D + ξ_D's candidates per state: teacher-Q sd across candidates "
          f"{float(qt.std(-1).mean()):.3f}, Q_D's error sd after its per-state mean {float(err.std(-1).mean()):.3f}")
    print(f"   teacher-Q regret of Q_D's argmax {regret.mean():.3f}, of a random pick {random.mean():.3f}")
    print(f"   per task (by parameter): argmax {regret[order]}")
    print(f"                            random {random[order]}")


if __name__ == "__main__":
    main()
