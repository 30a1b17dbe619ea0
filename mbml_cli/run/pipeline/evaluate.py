"""`mbml eval [RUN] --algo A [--unseen N]`: the unseen-task protocol (`mbml_cli/run/evaluate.py`) on a
trained policy, on demand.

Without `--unseen`, the run's test tasks → `layout.EVALUATION(algo, "test")`; with `--unseen N`, N
fresh tasks drawn with a new seed (`dist.tasks("unseen", N, seed + eval.unseen_seed)`) →
`EVALUATION(algo, "unseen")`. Each holds the arrays `returns` (T, episodes), `z_mean` (T, latent: the final posterior mean), `z_points`
(T, repeats·episodes, latent: the posterior mean after every episode of every repeat, the dashboard's
embedding clusters) and `tasks` (T, p), with the score
(mean over tasks of the mean return of the episodes after `eval.skip`) in its attributes.
(Evaluations *during* training go to `EVAL_HISTORY`; see `pipeline/distill.py`.)
"""
from __future__ import annotations

from rich.console import Console

from ... import envs as registry
from ...core import layout, seeds
from ...api import Run, load_policy
from ..evaluate import evaluate_tasks, make_eval_envs, returns_table
from ..context import RunContext, stage
from .common import check_algo



@stage("eval", check=check_algo)
def evaluate(ctx: RunContext, algo: str = "mbml", unseen: int = 0, which: str = "final") -> None:
    r, store = ctx.recipe, ctx.store
    if not registry.has_environment(ctx.dist):      # imported data without an environment
        Console().print(f"eval {algo}: {ctx.dist.needs_env_message}; an offline check stands in",
                        highlight=False, soft_wrap=True)
        from .offline import offline_check
        return offline_check(ctx, algo, which)
    policy = load_policy(Run(store), algo, which, r.device)
    if unseen:
        tasks, name = ctx.dist.tasks("unseen", unseen, r.seed + r.eval.unseen_seed), "unseen"
    else:
        tasks, name = ctx.tasks("test"), "test"
    envs = make_eval_envs(ctx.dist, tasks, r.env.horizon, r.eval.repeats)
    result = evaluate_tasks(envs, policy, r.eval.episodes, r.eval.skip, seeds.offset(r.seed, "eval/on_demand"), r.eval.repeats)
    for env in envs:
        env.close()
    layout.write_evaluation(store, algo, name, result, tasks, which=which, epoch=policy.meta.get("epoch", -1))
    Console().print(returns_table(result, tasks, f"{algo} ({which} weights) on {len(tasks)} {name} tasks: "
                                                 f"score {result.score:.2f} ± {result.per_task.std():.2f} "
                                                 f"(episodes {r.eval.skip + 1}–{r.eval.episodes})"))
