"""The speed levers of issue 35, measured one at a time on the updates as the stages run them.

    python bench/levers.py [--recipe recipes/halfcheetah_vel_cpu.yaml] [--updates 100] [--json FILE]

At the recipe's sizes (collect and bcq at one shard's tasks, the algorithms at all K), on random data
from `run.preflight.Probe`, one CPU thread. For each lever: ms per update without and with it, and
whether the numbers stay bit for bit the same after `--check` updates from the same start:

- Adam's implementations: the per-tensor loop (torch's CPU default), `foreach` (what `nets.adam`
  uses) and `fused`;
- Polyak averaging: a loop of `lerp_` against one `_foreach_lerp_` (what `nets.soft_update` does);
- `torch.compile` of the whole update function (SAC, BCQ; graph breaks counted by
  `torch._dynamo.explain`) and of the algorithms' training step, with its compile seconds;
- host syncs inside a step: the `aten::_local_scalar_dense` calls (`.item()`, `float(tensor)`) one
  update makes;
- `torch.inference_mode` against `torch.no_grad` when acting (BCQ's selection, the distilled policy);
- bf16 matrix products (this CPU's AMX units) at the stages' largest GEMM shapes: the headroom a
  lower precision would give, not used (it changes every number, and the teachers' quality would
  have to be measured again).

Not a test; the numbers move ±10% with the machine's load.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mbml_cli.algos import bcq, nets, sac
from mbml_cli.algos.mbml import Relabelled, Teachers
from mbml_cli.recipe.load import load, resolve
from mbml_cli.run.pipeline.distill import build_trainer
from mbml_cli.run.preflight import Probe

ROOT = Path(__file__).resolve().parent.parent


def ms_per_call(fn: Callable[[], object], n: int) -> float:
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return 1e3 * (time.perf_counter() - t0) / n


def set_adam(optimisers, **kw) -> None:
    for opt in optimisers:
        opt.defaults.update(kw)
        for group in opt.param_groups:
            group.update(kw)


class Syncs(TorchDispatchMode):
    """Counts the host reads of a tensor's value (`.item()`, `float(t)`, `bool(t)`)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.n += 1
        return func(*args, **(kwargs or {}))


# ---- the updates, each built afresh from the same seed -----------------------------------------------
def sac_case(p: Probe, adam: dict):
    c = p.r.collect
    torch.manual_seed(0)
    agent = sac.SAC(p.K, p.obs_dim, p.act_dim, c.hidden)
    opt = sac.SACOptimisers(agent, c.lr)
    set_adam([o for _, o in opt.items()], **adam)
    g = torch.Generator().manual_seed(1)
    fn = [sac.update]
    return agent, lambda: fn[0](agent, opt, p.data.sample(c.batch_size, g), c.gamma, c.tau, generator=g), fn


def bcq_case(p: Probe, adam: dict):
    b = p.r.bcq
    torch.manual_seed(0)
    model = p.bcq_model()
    tr = bcq.BCQTrainer(model, b.lr)
    set_adam(tr.optimisers().values(), **adam)
    g = torch.Generator().manual_seed(1)
    fn = [bcq.update]
    return model, lambda: fn[0](tr, p.data.sample(b.batch_size, g), b, generator=g), fn


def algo_case(p: Probe, algo: str, adam: dict):
    torch.manual_seed(0)
    teachers = Teachers.from_bcq(p.bcq_model().eval())
    N = p.data.obs.shape[1]
    rel = Relabelled(torch.zeros(p.K, p.K, N), ~torch.eye(p.K, dtype=torch.bool)[:, :, None].expand(-1, -1, N))
    tr = build_trainer(p.r, algo, p.data, p.device, teachers, rel)
    set_adam(tr.optimisers().values(), **adam)
    g = torch.Generator().manual_seed(1)
    fn = [tr.step]
    return tr.policy, lambda: fn[0](g), fn


def same_after(make, check: int, adam: dict) -> bool:
    """The state after `check` updates with Adam's per-tensor loop and with `adam`: bit-equal?"""
    states = []
    for kw in ({"foreach": False}, adam):
        module, step, _ = make(kw)
        for _ in range(check):
            step()
        states.append({k: v.clone() for k, v in module.state_dict().items()})
    return all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# ---- the levers ----------------------------------------------------------------------------------------
def adam_lever(name, make, n, check) -> list[dict]:
    rows = []
    for label, kw in (("per-tensor loop", {"foreach": False}), ("foreach (nets.adam)", {"foreach": True}),
                      ("fused", {"fused": True, "foreach": False})):
        _, step, _ = make(kw)
        same = same_after(make, check, kw)
        rows.append({"lever": "Adam", "update": name, "variant": label, "ms": ms_per_call(step, n),
                     "bit_equal_to_loop": same})
    return rows


def polyak_lever(p: Probe, n: int) -> list[dict]:
    critic = sac.TwinQ(p.K, p.obs_dim, p.act_dim, p.r.collect.hidden)
    target = copy.deepcopy(critic)
    t2 = copy.deepcopy(critic)

    def loop():
        with torch.no_grad():
            for t, s in zip(target.parameters(), critic.parameters()):
                t.lerp_(s, 0.005)
    for _ in range(50):
        loop()
        nets.soft_update(t2, critic, 0.005)
    same = all(torch.equal(a, b) for a, b in zip(target.parameters(), t2.parameters()))
    return [{"lever": "Polyak", "update": "collect's twin critic", "variant": "lerp_ loop", "ms": ms_per_call(loop, n),
             "bit_equal_to_loop": True},
            {"lever": "Polyak", "update": "collect's twin critic", "variant": "_foreach_lerp_ (nets.soft_update)",
             "ms": ms_per_call(lambda: nets.soft_update(t2, critic, 0.005), n), "bit_equal_to_loop": same}]


def compile_lever(name, make, n, explain_args=None) -> list[dict]:
    import torch._dynamo
    _, step, fn = make({})
    eager = ms_per_call(step, n)
    torch._dynamo.reset()
    original = fn[0]
    fn[0] = torch.compile(original)
    t0 = time.perf_counter()
    step()
    compile_s = time.perf_counter() - t0
    compiled = ms_per_call(step, n)
    breaks = None
    if explain_args is not None:
        torch._dynamo.reset()
        breaks = torch._dynamo.explain(original)(*explain_args()).graph_break_count
    torch._dynamo.reset()
    return [{"lever": "torch.compile", "update": name, "variant": "eager", "ms": eager},
            {"lever": "torch.compile", "update": name, "variant": "compiled", "ms": compiled,
             "compile_s": compile_s, "graph_breaks": breaks}]


def sync_lever(name, make) -> dict:
    _, step, _ = make({})
    step()
    with Syncs() as s:
        step()
    return {"lever": "host syncs", "update": name, "variant": "aten::_local_scalar_dense per update", "count": s.n}


def acting_lever(p: Probe, n: int) -> list[dict]:
    model = p.bcq_model().eval()
    obs = torch.zeros(p.K, 1, p.obs_dim)
    rows = []
    for label, ctx in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
        def act():
            with ctx():
                model.select_action(obs, p.gen)
        rows.append({"lever": "acting", "update": f"BCQ selection, {p.K} states", "variant": label, "ms": ms_per_call(act, n)})
    return rows


def bf16_lever(n: int) -> list[dict]:
    rows = []
    for what, a_shape, b_shape in (("bcq target (K=5, B·n=1000, 128)", (5, 1000, 128), (5, 128, 128)),
                                   ("contextual BCQ target (K·B·n=6400, 512)", (1, 6400, 512), (1, 512, 512)),
                                   ("collect SAC (K=5, B=128, 128)", (5, 128, 128), (5, 128, 128))):
        a, b = torch.randn(a_shape), torch.randn(b_shape)
        bias = torch.randn(b_shape[0], 1, b_shape[2])
        flops = 2 * a.numel() * b_shape[-1]
        for label, args in (("fp32", (bias, a, b)), ("bf16 (AMX)", (bias.bfloat16(), a.bfloat16(), b.bfloat16()))):
            ms = ms_per_call(lambda: torch.baddbmm(*args), n)
            rows.append({"lever": "bf16 GEMM", "update": what, "variant": label, "ms": ms, "gflop_s": flops / ms / 1e6})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes/halfcheetah_vel_cpu.yaml"))
    ap.add_argument("--updates", type=int, default=100)
    ap.add_argument("--check", type=int, default=20, help="updates before the bit-equality check")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    r = resolve(load(a.recipe)[0])
    full = Probe(r, torch.device("cpu"))
    shard = full.shard()
    n = a.updates
    cases = {"collect SAC": lambda kw: sac_case(shard, kw), "bcq": lambda kw: bcq_case(shard, kw),
             "distill mbml": lambda kw: algo_case(full, "mbml", kw),
             "contextual_bcq": lambda kw: algo_case(full, "contextual_bcq", kw),
             "batch_pearl": lambda kw: algo_case(full, "batch_pearl", kw)}
    rows: list[dict] = []
    for name, make in cases.items():
        rows += adam_lever(name, make, n if name != "contextual_bcq" else max(10, n // 5), a.check)
        rows.append(sync_lever(name, make))
    rows += polyak_lever(shard, n)
    c = r.collect
    g = torch.Generator().manual_seed(2)
    agent = sac.SAC(shard.K, shard.obs_dim, shard.act_dim, c.hidden)
    opt = sac.SACOptimisers(agent, c.lr)
    rows += compile_lever("collect SAC", cases["collect SAC"], n,
                          lambda: (agent, opt, shard.data.sample(c.batch_size, g), c.gamma, c.tau))
    rows += compile_lever("bcq", cases["bcq"], n)
    for algo in ("distill mbml", "contextual_bcq", "batch_pearl"):
        rows += compile_lever(algo, cases[algo], n if algo != "contextual_bcq" else max(10, n // 5))
    rows += acting_lever(shard, n)
    rows += bf16_lever(max(10, n // 5))
    for row in rows:
        extra = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                          if k not in ("lever", "update", "variant"))
        print(f"{row['lever']:<14} {row['update']:<40} {row['variant']:<36} {extra}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"torch": torch.__version__, "recipe": a.recipe, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
