"""The lock: exact versions of Python and every dependency, and the code revision.

Written into every store; `mbml lock RUN` prints recipe + lock as one YAML file that `mbml run`
accepts to repeat the run, warning (or, with --strict, refusing) where versions differ.
"""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("gymnasium", "mujoco", "numpy", "numcodecs", "pyyaml", "rich", "textual", "torch", "typer", "zarr")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def revision() -> str:
    """git HEAD of the mbml checkout (with `+dirty` for local changes), or the package version."""
    here = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from .. import __version__
        return f"mbml-{__version__}"


def current() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": {p: _version(p) for p in PACKAGES}, "revision": revision()}


def differences(wanted: dict) -> list[str]:
    """Human-readable lines for every version in `wanted` that differs from what is installed."""
    now = current()
    out = []
    if wanted.get("python") and wanted["python"] != now["python"]:
        out.append(f"python {now['python']} installed, lock has {wanted['python']}")
    for name, version in (wanted.get("packages") or {}).items():
        have = _version(name)
        if str(version) != have:
            out.append(f"{name} {have} installed, lock has {version}")
    return out
