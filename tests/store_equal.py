"""Compare two mbml stores array by array (a helper of the tests and of bench/kill_resume.py).

Weights are compared in their current slot only (the idle slot is scratch space); metric columns
that measure time (`env_steps_per_s`, `wall`) are skipped. Returns the differing paths.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np
import zarr

warnings.filterwarnings("ignore", message="Object at .* is not recognized as a component")

TIME_COLUMNS = ("env_steps_per_s", "wall")


def arrays(path: str) -> dict[str, np.ndarray]:
    """Every array a reader uses: for a weights group, the current slot's arrays under the group's path."""
    root = zarr.open_group(path, mode="r")
    out, idle, current = {}, [], {}
    members = list(root.members(max_depth=None))
    for name, node in members:
        if isinstance(node, zarr.Group) and node.attrs.get("current") in ("a", "b"):
            other = "b" if node.attrs["current"] == "a" else "a"
            idle.append(f"{name}/{other}/")
            current[f"{name}/{node.attrs['current']}/"] = f"{name}/current/"    # the slot's letter does not matter
    for name, node in members:
        if not isinstance(node, zarr.Array) or any(name.startswith(p) for p in idle):
            continue
        if name.startswith("metrics/") and name.rsplit("/", 1)[-1] in TIME_COLUMNS:
            continue
        if name.startswith(("metrics/", "data/", "eval/")) and "/" in name:
            n = root[name.rsplit("/", 1)[0]].attrs.get("n")
            value = np.asarray(node[:n] if n is not None else node[...])
        else:
            value = np.asarray(node[...])
        key = next((name.replace(slot, canon, 1) for slot, canon in current.items() if name.startswith(slot)), name)
        out[key] = value
    return out


def differences(a: str, b: str) -> list[str]:
    x, y = arrays(a), arrays(b)
    diff = sorted(set(x) ^ set(y))
    for k in sorted(set(x) & set(y)):
        if x[k].shape != y[k].shape or x[k].dtype != y[k].dtype or not np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f"):
            diff.append(k)
    return diff


if __name__ == "__main__":
    d = differences(sys.argv[1], sys.argv[2])
    print(f"{len(arrays(sys.argv[1]))} arrays compared, {len(d)} differ" + (": " + ", ".join(d[:20]) if d else ""))
    sys.exit(1 if d else 0)
