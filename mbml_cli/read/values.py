"""Plain values from what a store holds: records come from elsewhere too and may hold anything."""
from __future__ import annotations

import math


def num(value, default=None):
    """A finite float, else `default` (JSON has no NaN; a record may hold a string or nothing)."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return v if math.isfinite(v) else default


def fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
