"""The Zarr experiment store (zarr v3, readable with plain `zarr`).

The layout — every artefact's path, kind and writer — is `layout.py`; root attributes hold the
resolved recipe and the lock. This module only knows the kinds: arrays, row tables, weights, records.

Concurrency: one writer per group, any number of readers. Row tables (data, metrics) are
append-only: arrays grow in capacity, the data is written, and only then the group's `n` attribute
moves forward, so a reader that reads `n` first and then `[:n]` never sees a torn row. Weights live
in two slots; a save fills the idle slot and then flips `current`, so a kill mid-save leaves the
previous weights intact. Weights are plain arrays: loading one never unpickles or runs code.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import zarr

from . import __version__, layout

FORMAT = 1
CHUNK_ROWS = 4096


class StoreError(RuntimeError):
    """A store problem; str() is the one line the user sees."""


def _is_url(path: str) -> bool:
    return "://" in str(path)


def _open_group(path: str, mode: str) -> zarr.Group:
    options = {"auto_mkdir": True} if str(path).startswith("file://") else None
    return zarr.open_group(store=path, mode=mode, storage_options=options) if _is_url(path) \
        else zarr.open_group(store=path, mode=mode)


def _chunks(shape: tuple) -> tuple:
    """One chunk for a whole array (zarr wants positive chunk sizes, even for empty or 0-d)."""
    return tuple(max(1, s) for s in shape)


class Store:
    def __init__(self, root: zarr.Group, path: str):
        self.root, self.path = root, str(path)

    # ---- opening -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, attrs: dict) -> "Store":
        """Create a new store, or open an existing mbml store at `path` (updating its attrs)."""
        path = str(path)
        if not _is_url(path) and Path(path).exists() and any(Path(path).iterdir()):
            store = cls.open(path, mode="r+")
            store.root.attrs.update(attrs)
            return store
        header = {"mbml": {"format": FORMAT, "version": __version__, "created": time.time()}, **attrs}
        if _is_url(path):
            root = _open_group(path, "w")
            root.attrs.update(header)
            return cls(root, path)
        # Build next to the target and rename: a kill never leaves a half-made store behind.
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        root = zarr.open_group(store=str(tmp), mode="w")
        root.attrs.update(header)
        if target.exists():
            target.rmdir()
        os.rename(tmp, target)
        return cls.open(path, mode="r+")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "Store":
        path = str(path)
        if not _is_url(path) and not Path(path).exists():
            raise StoreError(f"{path}: no such store")
        try:
            root = _open_group(path, mode)
            header = root.attrs.get("mbml")
        except Exception:
            header = None
        if not isinstance(header, dict) or "format" not in header:
            raise StoreError(f"{path}: not an mbml store (no mbml header in its zarr.json)")
        if header["format"] != FORMAT:
            raise StoreError(f"{path}: written by an incompatible mbml (store format {header['format']}, "
                             f"this mbml reads format {FORMAT})")
        return cls(root, path)

    @property
    def recipe(self) -> dict:
        return dict(self.root.attrs.get("recipe", {}))

    @property
    def lock(self) -> dict:
        return dict(self.root.attrs.get("lock", {}))

    def exists(self, path: str) -> bool:
        try:
            self.root[path]
            return True
        except KeyError:
            return False

    def group(self, path: str) -> zarr.Group:
        return self.root.require_group(path)

    def delete(self, path: str) -> None:
        if self.exists(path):
            del self.root[path]

    # ---- whole arrays ------------------------------------------------------------------------
    def write_array(self, path: str, value, attrs: dict | None = None) -> None:
        """Write (replace) one whole array."""
        value = np.asarray(value)
        arr = self.root.create_array(path, shape=value.shape, dtype=value.dtype,
                                     chunks=_chunks(value.shape), overwrite=True)
        if value.size:
            arr[...] = value
        if attrs:
            arr.attrs.update(attrs)

    def read_array(self, path: str) -> np.ndarray:
        try:
            return np.asarray(self.root[path][...])
        except KeyError:
            raise StoreError(f"{self.path}: missing {path}") from None

    # ---- append-only row tables (data batches, metrics) ---------------------------------------
    def rows(self, path: str) -> int:
        try:
            return int(self.root[path].attrs.get("n", 0))
        except KeyError:
            return 0

    def append_rows(self, path: str, columns: dict[str, np.ndarray]) -> int:
        """Append rows (same leading length in every column). Returns the new row count."""
        group = self.group(path)
        n = int(group.attrs.get("n", 0))
        if any("/" in k for k in columns):       # a '/' would make a nested zarr node, not a column
            raise ValueError(f"{path}: column names may not contain '/': {sorted(columns)}")
        values = {k: np.asarray(v) for k, v in columns.items()}
        m = len(next(iter(values.values())))
        if any(len(v) != m for v in values.values()):
            raise ValueError(f"{path}: columns of unequal length")
        existing = set(group.array_keys())
        if existing and existing != set(values):
            raise ValueError(f"{path}: columns {sorted(values)} differ from stored {sorted(existing)}")
        for name, v in values.items():
            if name not in existing:
                arr = group.create_array(name, shape=(0,) + v.shape[1:], dtype=v.dtype,
                                         chunks=(CHUNK_ROWS,) + v.shape[1:])
            else:
                arr = group[name]
            if arr.shape[0] < n + m:
                arr.resize((max(n + m, 2 * arr.shape[0], CHUNK_ROWS),) + arr.shape[1:])
            arr[n:n + m] = v
        group.attrs["n"] = n + m        # last: readers see the rows only once they are complete
        return n + m

    def set_rows(self, path: str, n: int) -> None:
        """Roll a table back to `n` rows (resume from a checkpoint); later appends overwrite."""
        if self.exists(path):
            self.group(path).attrs["n"] = int(n)

    def read_rows(self, path: str, start: int = 0, stop: int | None = None,
                  columns: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """The complete rows [start, stop) of a table (of the named columns, or all)."""
        try:
            group = self.root[path]
        except KeyError:
            return {}
        n = int(group.attrs.get("n", 0))
        stop = n if stop is None else min(stop, n)
        return {k: np.asarray(group[k][start:stop]) for k in (columns or group.array_keys())}

    # ---- metrics -----------------------------------------------------------------------------
    def log(self, stage: str, name: str, row: dict) -> None:
        """Append one row of scalars to the metrics table of (stage, name)."""
        self.log_row(layout.METRICS(stage, name), row)

    def log_row(self, path: str, row: dict) -> None:
        """Append one row of scalars (float64 columns) to the table at `path`."""
        self.append_rows(path, {k: np.asarray([float(v)], dtype=np.float64) for k, v in row.items()})

    def metrics(self, stage: str, name: str) -> dict[str, np.ndarray]:
        return self.read_rows(layout.METRICS(stage, name))

    # ---- weights: one array per tensor, two slots --------------------------------------------
    def save_weights(self, path: str, tensors: dict, meta: dict | None = None) -> None:
        group = self.group(path)
        slot = "b" if group.attrs.get("current") == "a" else "a"
        if slot in group:
            del group[slot]
        slot_group = group.create_group(slot)
        for name, value in tensors.items():
            value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            arr = slot_group.create_array(name, shape=value.shape, dtype=value.dtype,
                                          chunks=_chunks(value.shape))
            if value.size:
                arr[...] = value
        group.attrs.update({"current": slot, "meta": meta or {}, "saved": time.time()})

    def has_weights(self, path: str) -> bool:
        return self.exists(path) and "current" in self.root[path].attrs

    def load_weights(self, path: str) -> tuple[dict[str, np.ndarray], dict]:
        if not self.has_weights(path):
            raise StoreError(f"{self.path}: no weights at {path}")
        group = self.root[path]
        slot = group[group.attrs["current"]]
        # names may contain "/" (e.g. `algos.sac.optimiser_state`): zarr stores those as nested groups
        arrays = {k: np.asarray(v[...]) for k, v in slot.members(max_depth=None) if isinstance(v, zarr.Array)}
        return arrays, dict(group.attrs.get("meta", {}))

    # ---- stage records -----------------------------------------------------------------------
    def stage(self, name: str) -> dict:
        try:
            return dict(self.root[layout.STAGE(name)].attrs)
        except KeyError:
            return {}

    def set_stage(self, name: str, **fields) -> None:
        self.group(layout.STAGE(name)).attrs.update(fields)

    def stages(self) -> dict[str, dict]:
        return {k: self.stage(k) for k in layout.children(self, layout.parent(layout.STAGE))}


def newest_store(runs: str | Path = "runs") -> Path:
    """The most recently modified `*.zarr` under `runs/` (for `mbml eval` / `mbml dash`)."""
    candidates = [p for p in Path(runs).glob("*.zarr") if p.is_dir()]
    if not candidates:
        raise StoreError(f"{runs}: no stores found (run `mbml run RECIPE` first, or name a store)")
    return max(candidates, key=lambda p: p.stat().st_mtime)
