#!/usr/bin/env python3
"""Set mbml up from nothing but Python: a virtual environment in .venv with the exact versions of
mbml.lock.yaml (the CPU build of torch where one exists) and mbml itself, editable.

    python3 bootstrap.py          # runtime
    python3 bootstrap.py --dev    # plus the test tools and the optional extras (Minari, Ray), so tests cover them

Standard library only; safe to run again (pip skips what is already there).
"""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"


def pins(section_names):
    """`name: version` lines of the named top-level sections of mbml.lock.yaml (no PyYAML yet)."""
    out, section = {}, None
    for line in (ROOT / "mbml.lock.yaml").read_text().splitlines():
        top = re.match(r"^(\w+):\s*$", line)
        if top:
            section = top.group(1)
            continue
        item = re.match(r"^\s+([A-Za-z0-9_.\-\[\]]+):\s*([^\s#]+)", line)
        if item and section in section_names:
            out[item.group(1)] = item.group(2).strip("'\"")
    return out


def main():
    dev = "--dev" in sys.argv[1:]
    if not (VENV / "bin" / "python").exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    py = str(VENV / "bin" / "python")
    versions = pins({"packages", "dev", "extras"} if dev else {"packages"})
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("".join(f"{name}=={version}\n" for name, version in versions.items()))
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # torch first and pinned, so the CPU build is taken rather than the CUDA one.
    subprocess.check_call(pip + [f"torch=={versions['torch']}"])
    subprocess.check_call(pip + ["-c", f.name, "-e", f"{ROOT}[dev,minari,ray]" if dev else str(ROOT)]
                          + ([f"pytest=={versions['pytest']}"] if dev and "pytest" in versions else []))


if __name__ == "__main__":
    main()
