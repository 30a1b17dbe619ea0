"""Plain values from what a store holds: records come from elsewhere too and may hold anything."""
from __future__ import annotations

import math
import os


def num(value, default=None):
    """A finite float, else `default` (JSON has no NaN; a record may hold a string or nothing)."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return v if math.isfinite(v) else default


def fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def disk_bytes(path) -> int:
    """Bytes of the files under `path` (links are not followed: a store holds none)."""
    total = 0
    for where, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(where, name)).st_size
            except OSError:                      # removed while walking (a writer's temporary file)
                pass
    return total


def fmt_bytes(n: int) -> str:
    """`1.5 MiB (1,572,864 bytes)`."""
    size, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{n:,} bytes" if unit == "bytes" else f"{size:.1f} {unit} ({n:,} bytes)"
