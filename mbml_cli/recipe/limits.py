"""Limits a recipe must respect before anything is allocated: plain run names and memory.

`memory_estimate(recipe)` is a rough upper estimate of the largest single allocation a run makes
(replay buffers, relabel tables, per-task networks with their Adam state, activations); a recipe
whose estimate exceeds the machine's memory is refused with the estimate instead of failing with
an allocation error (or swapping) half-way through a stage.
"""
from __future__ import annotations

import os

NAME_MAX = 100
# Bounds used before the environment is built; the real sizes are taken only when they matter.
OBS_BOUND, ACT_BOUND, INFO_BOUND = 400, 32, 16


def name_problem(name: str) -> str | None:
    """Why `name` is not a plain file name (it becomes part of a path under runs/), or None."""
    if not name:
        return "must not be empty"
    if len(name) > NAME_MAX:
        return f"longer than {NAME_MAX} characters"
    if "/" in name or "\\" in name:
        return "must be a plain name, without '/' or '\\'"
    if ".." in name or name.startswith("."):
        return "must not contain '..' or start with '.'"
    if not name.isprintable():
        return "must not contain control characters"
    return None


def machine_memory() -> int:
    """Physical memory in bytes (a large default where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def auto_threads() -> int:
    """CPU threads when a recipe says `threads: 0`: the share a launcher gave this process
    (OMP_NUM_THREADS, set for `--jobs` units), else half the cores. torch's own default takes every
    core, and on a busy 2-core machine small batched networks then run about 10× slower than on one
    thread (BCQ 2.5 against 22 it/s)."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else max(1, (os.cpu_count() or 1) // 2)


def threads_text(threads: int) -> str:
    """'1 thread' or '2 threads, auto' — what a stage's first line says of its CPU threads."""
    n = threads or auto_threads()
    return f"{n} thread{'s' if n > 1 else ''}" + ("" if threads else f", auto of {os.cpu_count() or 1} cores")


def gib(n: float) -> str:
    return f"{n / 2 ** 30:,.1f} GiB" if n < 2 ** 60 else f"{n:.1e} bytes"


def _mlp(widths, n_in: int, n_out: int) -> int:
    sizes = [n_in, *widths, n_out]
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))


def _needs(recipe, obs: int, act: int, info: int, K: int, n_test: int, H: int) -> list[tuple[float, str]]:
    c, b, rw, d, f = recipe.collect, recipe.bcq, recipe.reward, recipe.distill, recipe.finetune
    train = 4 * 4          # weights, gradients, two Adam moments; float32
    row = (2 * obs + act + info + 3) * 4
    out = [
        (K * c.steps * row, "collect.steps"),                              # host arrays / loaded batches
        (K * K * c.steps * (9 + (4 * obs + 4 if rw.next_state else 0)), "collect.steps"),  # relabel tables
        (K * 3 * _mlp(c.hidden, obs + act, max(obs, act)) * train, "collect.hidden"),
        (K * c.batch_size * max(c.hidden, default=1) * len(c.hidden) * 3 * 4 * 4, "collect.batch_size"),
        (K * (_mlp(b.actor_hidden, obs + act, act) + 2 * _mlp(b.critic_hidden, obs + act, 1)
              + 2 * _mlp(b.vae_hidden, obs + act, 2 * act)) * train, "bcq.vae_hidden"),
        (K * b.batch_size * b.n_candidates * max(b.vae_hidden + b.critic_hidden + b.actor_hidden) * 8 * 4,
         "bcq.batch_size"),
        (K * rw.ensemble_size * rw.hidden * (2 * obs + act + 2) * train, "reward.hidden"),
        (K * rw.ensemble_size * rw.batch_size * rw.hidden * 4 * 4, "reward.batch_size"),
        ((_mlp(d.q_hidden, obs + act + d.latent_dim, 1) + _mlp(d.g_hidden, obs + 2 * act + d.latent_dim, 2 * act)
          + _mlp(d.xi_hidden, obs + act + d.latent_dim, act)
          + _mlp(d.encoder_hidden, 2 * obs + act + 1, 2 * d.latent_dim)) * train, "distill.q_hidden"),
        (K * (d.batch_size + d.context_size + d.relabel_context) * K
         * max(d.q_hidden + d.g_hidden + d.xi_hidden + d.encoder_hidden) * 12 * 4, "distill.batch_size"),
        ((f.init_steps + f.steps) * row * 2, "finetune.steps"),
        (n_test * recipe.eval.repeats * recipe.eval.episodes * H * (obs + act + 2) * 4 * 4, "eval.repeats"),
    ]
    return out


def memory_estimate(recipe) -> tuple[float, int, str]:
    """(bytes of the largest allocation, bytes of the machine, the recipe field that drives it)."""
    from .. import envs

    have = machine_memory()
    dist = envs.of(recipe.env)
    K = recipe.env.n_train or dist.n_train
    n_test = recipe.env.n_test or dist.n_test
    H = recipe.env.horizon or dist.horizon
    need, what = max(_needs(recipe, OBS_BOUND, ACT_BOUND, INFO_BOUND, K, n_test, H))
    if need > have:      # the bounds are generous: measure the real sizes before refusing
        obs, act = envs.widths(dist)
        need, what = max(_needs(recipe, obs, act, len(dist.info_names), K, n_test, H))
    return need, have, what
