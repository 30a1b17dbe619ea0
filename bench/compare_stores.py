"""Two stores of the same run, compared: every array bit for bit (`tests/store_equal.py`), except
the collect and bcq metric tables, which are compared through the read layer: since issue 33 a
per-task metric is one (rows, K) column where older stores wrote a column per task, and the read
layer shows both as `<metric>_<task>` columns.

    python bench/compare_stores.py OLD.zarr NEW.zarr
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from store_equal import TIME_COLUMNS, arrays, differences  # noqa: E402

from mbml_cli.core.store import Store  # noqa: E402
from mbml_cli.read.tables import read_tables  # noqa: E402

PER_TASK = ("metrics/collect/", "metrics/bcq/")


def main() -> None:
    old, new = sys.argv[1:3]
    diff = [d for d in differences(old, new) if not d.startswith(PER_TASK)]
    a, b = read_tables(Store.open(old)), read_tables(Store.open(new))
    columns = [(k, c) for k in a if k in b for c in set(a[k].columns) & set(b[k].columns) if c not in TIME_COLUMNS]
    bad = [(k, c) for k, c in columns if not np.array_equal(a[k].columns[c], b[k].columns[c], equal_nan=True)]
    only = {k: sorted(set(a[k].columns) ^ set(b.get(k, a[k]).columns)) for k in a if k not in b or
            set(a[k].columns) ^ set(b[k].columns)}
    print(f"{len(arrays(old))} arrays; differing outside the collect/bcq metric tables: {diff or 'none'}")
    print(f"{len(columns)} metric columns through the read layer; differing: {bad or 'none'}; "
          f"in one store only: {only or 'none'}")
    sys.exit(1 if diff or bad else 0)


if __name__ == "__main__":
    main()
