"""Kill `mbml run` at random moments (half of them inside a weight save), run it again, and compare
the store with an unkilled run's, array by array (current weight slots only).

    python bench/kill_resume.py --trials 20 --reference runs/ref.zarr [--recipe recipes/smoke.yaml]

The reference is made first when missing. Prints one line per trial and a summary; exit 1 when a
re-run store differs or a re-run fails.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from store_equal import differences  # noqa: E402

# A child that SIGKILLs itself while writing the `array`-th tensor of its `save`-th weight save (or of
# its first save to the store path `save`):
# the idle slot is then cleared and half rewritten, `current` not yet flipped.
IN_SAVE = textwrap.dedent("""
    import os, signal, sys
    import zarr
    from mbml_cli.core.store import Store
    save_at, array_at = sys.argv[1], int(sys.argv[2])     # the N-th save, or the first save to a path
    state = {"saves": 0, "arrays": 0, "inside": False}
    original_save, original_create = Store.save_weights, zarr.Group.create_array
    def save(self, path, *args, **kwargs):
        state["saves"] += 1
        state["inside"] = str(state["saves"]) == save_at or path == save_at
        state["arrays"] = 0
        args = (path,) + args
        try:
            return original_save(self, *args, **kwargs)
        finally:
            state["inside"] = False
    def create(self, *args, **kwargs):
        if state["inside"]:
            state["arrays"] += 1
            if state["arrays"] == array_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return original_create(self, *args, **kwargs)
    Store.save_weights, zarr.Group.create_array = save, create
    from mbml_cli.views.cli import app
    app(sys.argv[3:])
""")


def mbml(*args) -> list[str]:
    return [sys.executable, "-m", "mbml_cli.views.cli", *args]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "smoke.yaml"))
    ap.add_argument("--workdir", default="/tmp/mbml-kill-resume")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=35.0, help="latest moment of a timed kill")
    ap.add_argument("--saves", type=int, default=29, help="weight saves in one run of the recipe (smoke: 29)")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if not Path(args.reference).exists():
        subprocess.run(mbml("run", args.recipe, "--store", args.reference), check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(args.seed)
    failures = 0
    for trial in range(args.trials):
        store = work / f"t{trial}.zarr"
        run_args = ("run", args.recipe, "--store", str(store))
        if trial % 2:
            save_at, array_at = rng.randint(1, args.saves), rng.randint(1, 3)
            how = f"in save #{save_at}, tensor {array_at}"
            proc = subprocess.run([sys.executable, "-c", IN_SAVE, str(save_at), str(array_at), *run_args],
                                  env=env, capture_output=True, text=True)
        else:
            delay = rng.uniform(0.5, args.max_seconds)
            how = f"at {delay:.1f}s"
            p = subprocess.Popen(mbml(*run_args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                p.wait(delay)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.wait()
            proc = p
        killed = proc.returncode == -signal.SIGKILL
        t0 = time.time()
        rerun = subprocess.run(mbml(*run_args), env=env, capture_output=True, text=True)
        diff = differences(args.reference, str(store)) if rerun.returncode == 0 else ["(re-run failed)"]
        ok = rerun.returncode == 0 and not diff
        failures += not ok
        print(f"trial {trial:2d}: killed {how}{'' if killed else ' (finished before the kill)'}; "
              f"re-run rc {rerun.returncode} in {time.time() - t0:.0f}s; "
              f"{'store equal' if not diff else 'DIFFERS: ' + ', '.join(diff[:5])}"
              + ("" if rerun.returncode == 0 else f"\n{rerun.stderr[-800:]}"), flush=True)
        shutil.rmtree(store, ignore_errors=True)
    print(f"{args.trials - failures} of {args.trials} killed runs re-ran to a store equal to the unkilled one")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
