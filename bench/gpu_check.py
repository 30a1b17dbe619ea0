"""The GPU check, for a session that is lent one (under 8 minutes on one GPU). It prints:

1. the smoke pipeline on CUDA against the same on the CPU: every array of the CPU store present in
   the GPU store with the same shape, all finite, and both test-task scores in the range of a
   random policy to the teachers;
2. batched K-task updates of SAC, BCQ and the MBML distillation at the paper's sizes against K
   sequential single-task updates on the same GPU (median ms per update, speed-up);
3. `recipes/halfcheetah_vel.yaml` projected stage by stage on this GPU (`mbml_cli/run/preflight.py`).

    python bench/gpu_check.py [--skip-smoke]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mbml_cli.core import layout
from mbml_cli.run import preflight  # noqa: E402
from mbml_cli.recipe.load import load, resolve  # noqa: E402
from mbml_cli.core.store import Store  # noqa: E402


def arrays(path: Path) -> dict[str, np.ndarray]:
    out = {}

    def walk(group, prefix):
        for name, node in group.members():
            if isinstance(node, zarr.Array):
                out[prefix + name] = np.asarray(node[...])
            else:
                walk(node, prefix + name + "/")
    walk(zarr.open_group(str(path), mode="r"), "")
    return out


def smoke_cuda_vs_cpu(tmp: Path) -> None:
    runs = {}
    for device in ("cpu", "cuda"):
        store = tmp / f"{device}.zarr"
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "mbml_cli.views.cli", "run", str(ROOT / "recipes/smoke.yaml"), "--store",
                        str(store), "--set", f"device={device}"], check=True, capture_output=True, cwd=ROOT)
        runs[device] = (arrays(store), Store.open(store), time.time() - t0)
    (cpu, cpu_store, cpu_s), (gpu, gpu_store, gpu_s) = runs["cpu"], runs["cuda"]
    idle = lambda k: "/a/" in k or "/b/" in k                    # weight slots: compare shapes only
    missing = [k for k in cpu if k not in gpu and not idle(k)]
    shapes = [k for k in cpu if k in gpu and cpu[k].shape != gpu[k].shape and not idle(k)]
    nonfinite = [k for k, v in gpu.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    print(f"smoke on cpu {cpu_s:.0f} s, on cuda {gpu_s:.0f} s; {len(gpu)} arrays on cuda; "
          f"missing {len(missing)}, other shapes {len(shapes)}, non-finite {len(nonfinite)}")
    for algo in ("mbml", "neither"):
        scores = [layout.read_attrs(s, layout.EVALUATION(algo, "test")).get("score") for s in (cpu_store, gpu_store)]
        inside = all(s is not None and -30 < s < 0 for s in scores)
        print(f"  {algo}: test score cpu {scores[0]:.2f}, cuda {scores[1]:.2f} ({'in range' if inside else 'OUT OF RANGE'})")
    for name, bad in (("missing", missing), ("other shapes", shapes), ("non-finite", nonfinite)):
        if bad:
            print(f"  {name}: {bad[:5]}")


def batched_vs_sequential() -> None:
    recipe = resolve(load(ROOT / "recipes/halfcheetah_vel.yaml")[0])
    dev = torch.device("cuda")
    batched = preflight.Probe(recipe, dev)
    recipe.env.n_train = 1
    single = preflight.Probe(recipe, dev)
    K = batched.K
    for name, fn in (("SAC", lambda p: p.sac_update()), ("BCQ", lambda p: p.bcq_update()[0]),
                     ("MBML distill", lambda p: p.distill_step("mbml")[0])):
        torch.cuda.synchronize()
        b = fn(batched)
        s = fn(single)
        print(f"{name:13s} batched K={K}: {1e3 * b:8.1f} ms   {K} sequential single-task: {1e3 * K * s:8.1f} ms   "
              f"speed-up {K * s / b:5.1f}x")


def project() -> None:
    from mbml_cli.run.stages import pending
    recipe = resolve(load(ROOT / "recipes/halfcheetah_vel.yaml")[0])
    dev = torch.device("cuda")
    found = preflight.estimate(recipe, dev, pending(recipe, None))
    from rich.console import Console
    Console(width=140).print(preflight.table(found, dev))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-smoke", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check needs a GPU")
    print(torch.cuda.get_device_name(0), "torch", torch.__version__)
    start = time.time()
    if not args.skip_smoke:
        with tempfile.TemporaryDirectory() as tmp:
            smoke_cuda_vs_cpu(Path(tmp))
    batched_vs_sequential()
    project()
    print(f"gpu_check: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
