"""How do the distilled policies earn their score on the test tasks? Not a test.

    python bench/behaviour.py RUN [--algo mbml --algo metagenrl ...] [--which final] [--json FILE]

Each algorithm runs the unseen-task protocol as `mbml eval` does (the run's test tasks, its
`eval.episodes`, `eval.repeats` and seed), beside two fixed policies on the same resets: the zero
action (standing still) and a uniform random one. For the episodes after `eval.skip` it prints, per
step and averaged over tasks and episodes:
- the return and its two parts, by the distribution's own reward function: the control part
  r(s, a) − r(s, 0) (what the actions cost) and the rest r(s, 0) (what the motion earns);
- the mean squared action (per dimension);
- the mean of each per-step feature the distribution reads from the simulator (`info_names`).
"""
from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch

from mbml_cli.api import Run, load_policy
from mbml_cli.core import seeds
from mbml_cli.run import stages
from mbml_cli.run.evaluate import make_eval_envs, run_protocol


class Recorder(gym.Wrapper):
    """Keeps every step's (obs, action, reward, next obs, features), one list per episode in `runs`."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._max_episode_steps = env._max_episode_steps        # the horizon, as `run_episode` reads it
        self.runs: list[list[tuple]] = []

    def reset(self, **kwargs):
        self.runs.append([])
        self.obs, info = self.env.reset(**kwargs)
        return self.obs, info

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.runs[-1].append((self.obs, np.asarray(action, np.float64), float(r), obs,
                              np.asarray(info["features"], np.float64)))
        self.obs = obs
        return obs, r, term, trunc, info


class Fixed:
    """A policy with no task inference (the PEARL protocol's interface): zeros, or uniform in [-1, 1]."""

    def __init__(self, act_dim: int, kind: str):
        self.act_dim, self.kind, self.rng = act_dim, kind, np.random.default_rng(0)

    def prior(self, n):
        return SimpleNamespace(mean=np.zeros((n, 1)), var=np.ones((n, 1)))

    def infer(self, **context):
        return self.prior(len(context["obs"]))

    def sample(self, posterior, generator):
        return None

    def act(self, obs, z, generator):
        shape = (len(obs), self.act_dim)
        return np.zeros(shape) if self.kind == "zero" else self.rng.uniform(-1.0, 1.0, shape)


def behaviour(ctx, policy, skip: int) -> dict:
    """The protocol on the test tasks (as `mbml eval`), recorded; per-step means over the scored episodes."""
    r = ctx.recipe
    tasks = ctx.tasks("test")
    envs = [Recorder(e) for e in make_eval_envs(ctx.dist, tasks, r.env.horizon, r.eval.repeats)]
    run_protocol(envs, policy, r.eval.episodes, skip, seeds.offset(r.seed, "eval/on_demand"))
    task_of = np.tile(np.arange(len(tasks)), r.eval.repeats)
    parts = {"return": [], "control": [], "rest": [], "action_sq": [], **{n: [] for n in ctx.dist.info_names}}
    for env, t in zip(envs, task_of):
        for run in env.runs[skip:r.eval.episodes]:
            obs, act, rew, next_obs, feats = (np.stack(column) for column in zip(*run))
            zero = ctx.dist.reward(obs, np.zeros_like(act), next_obs, feats, tasks[t])
            parts["return"].append(rew.sum())
            parts["control"].append((rew - zero).sum())
            parts["rest"].append(zero.sum())
            parts["action_sq"].append(np.mean(act ** 2))
            for i, n in enumerate(ctx.dist.info_names):
                parts[n].append(feats[:, i].mean())
    for env in envs:
        env.close()
    return {k: float(np.mean(v)) for k, v in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--algo", action="append", help="repeatable (default: mbml)")
    ap.add_argument("--which", default="final", choices=("final", "best"))
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ctx = stages.open_run(args.run, mode="r")                       # a reader: no writer lock
    probe_env = ctx.dist.make_env(ctx.tasks("test")[0], 1)
    act_dim = probe_env.action_space.shape[0]
    probe_env.close()
    policies = {a: load_policy(Run(ctx.store), a, args.which) for a in args.algo or ["mbml"]}
    policies.update({"zero action": Fixed(act_dim, "zero"), "uniform random": Fixed(act_dim, "random")})
    rows = {name: behaviour(ctx, p, ctx.recipe.eval.skip) for name, p in policies.items()}
    cols = list(next(iter(rows.values())))
    print("| policy | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"run": args.run, "which": args.which, "skip": ctx.recipe.eval.skip, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
