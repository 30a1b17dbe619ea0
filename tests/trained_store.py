"""The store the issue-17 tests (`test_hostile.py`, `test_fuzz.py`) start from: import `trained`
(a fixture) and `SMALL`. Made once per session even though two modules import the fixture."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "recipes" / "smoke.yaml")
# the smoke pipeline for one algorithm: every stage that writes weights, seconds in all
SMALL = ["--set", "algos=[mbml]", "--set", "stages=[collect,bcq,reward,relabel,distill,eval]", "--set", "threads=1"]
_made: dict[str, Path] = {}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A store of the SMALL smoke pipeline, made by a real `mbml run` (tests copy it before changing it)."""
    if "path" not in _made:
        path = tmp_path_factory.mktemp("trained") / "ref.zarr"
        p = subprocess.run([sys.executable, "-m", "mbml_cli.views.cli", "run", SMOKE, "--store", str(path), *SMALL],
                           capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert p.returncode == 0, p.stderr[-3000:]
        _made["path"] = path
    return _made["path"]
