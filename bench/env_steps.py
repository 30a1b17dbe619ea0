"""Environment step rate of every task distribution: random actions through `make_env`
(so the rate includes action rescaling, features() and reward()). Not a test.

    python bench/env_steps.py [--seconds 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from mbml_cli.envs import REGISTRY


def steps_per_second(dist, seconds: float) -> tuple[float, int, int]:
    env = dist.make_env(dist.tasks("train", 1, seed=0)[0])
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
            if term or trunc:
                env.reset()
        n += 100
    return n / (time.perf_counter() - start), env.observation_space.shape[0], env.action_space.shape[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent per distribution")
    args = parser.parse_args()
    print(f"{'distribution':<16} {'obs':>4} {'act':>4} {'steps/s':>9}")
    for name, dist in REGISTRY.items():
        rate, obs_dim, act_dim = steps_per_second(dist, args.seconds)
        print(f"{name:<16} {obs_dim:>4} {act_dim:>4} {rate:>9.0f}")


if __name__ == "__main__":
    main()
