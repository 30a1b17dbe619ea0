"""The Zarr experiment store (zarr v3, readable with plain `zarr`).

The layout — every artefact's path, kind and writer — is `layout.py`; root attributes hold the
resolved recipe and the lock. This module only knows the kinds: arrays, row tables, weights, records.

Concurrency: one writer per group, any number of readers. Row tables (data, metrics) are
append-only: arrays grow in capacity, the data is written, and only then the group's `n` attribute
moves forward, so a reader that reads `n` first and then `[:n]` never sees a torn row. Weights live
in two slots; a save fills the idle slot and then flips `current`, so a kill mid-save leaves the
previous weights intact. Weights are plain arrays: loading one never unpickles or runs code.

Safety (see `store_guard.py`): the store's root is a wall — a store holding a symbolic link is
refused, and every path written or deleted is checked to stay inside the root; every chunk carries
a crc32c checksum, so a damaged chunk is reported (naming its array), never used.
"""
from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from .. import __version__
from ..errors import StoreError
from . import guard as store_guard, layout

FORMAT = 1
CHUNK_ROWS = 4096
# zarr's default compressor plus a crc32c checksum of every chunk (checked on every read)
COMPRESSORS = (ZstdCodec(level=0, checksum=False), Crc32cCodec())
# the writer lock file at the root is not a zarr node; listing the root must not warn about it
warnings.filterwarnings("ignore", message="Object at .* is not recognized as a component")


def _is_url(path: str) -> bool:
    return "://" in str(path)


def _open_group(path: str, mode: str) -> zarr.Group:
    options = {"auto_mkdir": True} if str(path).startswith("file://") else None
    if not _is_url(path):
        return zarr.open_group(store=path, mode=mode)
    try:
        return zarr.open_group(store=path, mode=mode, storage_options=options)
    except ImportError as e:
        raise StoreError(store_guard.missing_package(path, e)) from None


def _chunks(shape: tuple) -> tuple:
    """One chunk for a whole array (zarr wants positive chunk sizes, even for empty or 0-d)."""
    return tuple(max(1, s) for s in shape)


def host_array(value) -> np.ndarray:
    """A tensor (on any device) or array-like as a numpy array on the host."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


class Store:
    def __init__(self, root: zarr.Group, path: str):
        self.root, self.path = root, str(path)
        self.wall = None if _is_url(path) else store_guard.Wall(path)

    # ---- opening -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, attrs: dict) -> "Store":
        """Create a new store, or open an existing mbml store at `path` (updating its attrs)."""
        path = str(path)
        header = {"mbml": {"format": FORMAT, "version": __version__, "created": time.time()}, **attrs}
        if _is_url(path):
            root = _open_group(path, "w")
            root.attrs.update(header)
            return cls(root, path)
        target = store_guard.make_root(path)       # a directory (the writer lock may already be in it)
        if (target / "zarr.json").exists():
            store = cls.open(path, mode="r+")
            store.root.attrs.update(attrs)
            return store
        if any(p.name != store_guard.LOCK_FILE for p in target.iterdir()):
            raise StoreError(f"{path}: not an mbml store (a directory without a zarr.json)")
        # One write of the root's zarr.json, header included: a kill leaves either no store or a whole one.
        zarr.create_group(store=str(target), attributes=header, zarr_format=3)
        return cls.open(path, mode="r+")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "Store":
        path = str(path)
        if not _is_url(path):
            if not Path(path).exists():
                raise StoreError(f"{path}: no such store")
            if not Path(path).is_dir():
                raise StoreError(f"{path}: a file, not a store (a store is a directory)")
            store_guard.check_no_links(path)
        try:
            root = _open_group(path, mode)
            header = root.attrs.get("mbml")
        except StoreError:
            raise
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
        recipe = self.root.attrs.get("recipe", {})
        if not isinstance(recipe, dict):
            raise StoreError(f"{self.path}: attribute 'recipe' is a {type(recipe).__name__}, not a mapping")
        return dict(recipe)

    @property
    def lock(self) -> dict:
        lock = self.root.attrs.get("lock", {})
        return dict(lock) if isinstance(lock, dict) else {}

    def _inside(self, path: str) -> None:
        """Refuse a write or delete at `path` that would leave the store's root."""
        if self.wall is not None:
            self.wall.check(path)

    def _node(self, path: str):
        """`self.root[path]`: KeyError when absent, one line naming it when its metadata is damaged."""
        with store_guard.reading(self.path, path, passing=(KeyError,)):
            return self.root[path]

    def exists(self, path: str) -> bool:
        try:
            self._node(path)
            return True
        except KeyError:
            return False

    def group(self, path: str) -> zarr.Group:
        self._inside(path)
        return self.root.require_group(path)

    def delete(self, path: str) -> None:
        self._inside(path)
        if self.exists(path):
            del self.root[path]

    def _clear(self, path: str) -> None:
        """Remove whatever is at `path`, whole or half-deleted (a kill mid-delete leaves arrays
        below a group whose zarr.json is gone, which zarr no longer sees as a node)."""
        self._inside(path)
        if self.wall is not None:
            target = self.wall.local(path)
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        else:
            self.delete(path)

    # ---- whole arrays ------------------------------------------------------------------------
    def write_array(self, path: str, value, attrs: dict | None = None) -> None:
        """Write (replace) one whole array."""
        value = np.asarray(value)
        self._inside(path)
        arr = self.root.create_array(path, shape=value.shape, dtype=value.dtype, compressors=COMPRESSORS,
                                     chunks=_chunks(value.shape), overwrite=True)
        if value.size:
            arr[...] = value
        if attrs:
            arr.attrs.update(attrs)

    def read_array(self, path: str) -> np.ndarray:
        try:
            node = self._node(path)
        except KeyError:
            raise StoreError(f"{self.path}: missing {path}") from None
        store_guard.check_size(self.path, path, node)
        with store_guard.reading(self.path, path):
            return np.asarray(node[...])

    # ---- append-only row tables (data batches, metrics) ---------------------------------------
    def rows(self, path: str) -> int:
        try:
            n = self._node(path).attrs.get("n", 0)
        except KeyError:
            return 0
        return store_guard.row_count(self.path, path, n)

    def append_rows(self, path: str, columns: dict[str, np.ndarray], tasks: list[int] | None = None) -> int:
        """Append rows (same leading length in every column). Returns the new row count. A per-task
        metric is one 2-D column (rows, K); `tasks` names its K columns (the table's `tasks` attribute)."""
        group = self.group(path)
        if tasks is not None and group.attrs.get("tasks") != list(tasks):
            group.attrs["tasks"] = [int(i) for i in tasks]
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
                arr = group.create_array(name, shape=(0,) + v.shape[1:], dtype=v.dtype, compressors=COMPRESSORS,
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
            group = self._node(path)
        except KeyError:
            return {}
        n = store_guard.row_count(self.path, path, group.attrs.get("n", 0))
        stop = n if stop is None else min(stop, n)
        out = {}
        with store_guard.reading(self.path, path):
            keys = list(columns or group.array_keys())
        for k in keys:
            with store_guard.reading(self.path, f"{path}/{k}"):
                out[k] = np.asarray(group[k][start:stop])
        return out

    # ---- metrics -----------------------------------------------------------------------------
    def log(self, stage: str, name: str, row: dict) -> None:
        """Append one row of scalars to the metrics table of (stage, name)."""
        self.log_row(layout.METRICS(stage, name), row)

    def log_row(self, path: str, row: dict, tasks: list[int] | None = None) -> None:
        """Append one row of float64 values (scalars, or per-task vectors named by `tasks`) to the table at `path`."""
        self.append_rows(path, {k: np.asarray([v], dtype=np.float64) for k, v in row.items()}, tasks)

    def metrics(self, stage: str, name: str) -> dict[str, np.ndarray]:
        return self.read_rows(layout.METRICS(stage, name))

    # ---- weights: one array per tensor, two slots --------------------------------------------
    def save_weights(self, path: str, tensors: dict, meta: dict | None = None) -> None:
        group = self.group(path)
        slot = "b" if group.attrs.get("current") == "a" else "a"
        self._clear(f"{path}/{slot}")        # the idle slot, cleared completely, then written, then flipped
        slot_group = group.create_group(slot)
        for name, value in tensors.items():
            value = host_array(value)
            arr = slot_group.create_array(name, shape=value.shape, dtype=value.dtype, compressors=COMPRESSORS,
                                          chunks=_chunks(value.shape))
            if value.size:
                arr[...] = value
        group.attrs.update({"current": slot, "meta": meta or {}, "saved": time.time()})

    def has_weights(self, path: str) -> bool:
        return self.exists(path) and "current" in self._node(path).attrs

    def load_weights(self, path: str) -> tuple[dict[str, np.ndarray], dict]:
        if not self.has_weights(path):
            raise StoreError(f"{self.path}: no weights at {path}")
        group = self._node(path)
        current, meta = group.attrs.get("current"), group.attrs.get("meta", {})
        with store_guard.reading(self.path, path):
            complete = current in ("a", "b") and current in group
        if not complete or not isinstance(meta, dict):
            raise StoreError(f"{self.path}: {path}: damaged weights record (current={store_guard.short(current)})")
        with store_guard.reading(self.path, f"{path}/{current}"):
            members = list(group[current].members(max_depth=None))
        # names may contain "/" (e.g. `algos.sac.optimiser_state`): zarr stores those as nested groups
        arrays = {}
        for k, v in members:
            if isinstance(v, zarr.Array):
                store_guard.check_size(self.path, f"{path}/{current}/{k}", v)
                with store_guard.reading(self.path, f"{path}/{current}/{k}"):
                    arrays[k] = np.asarray(v[...])
        return arrays, dict(meta)

    # ---- stage records -----------------------------------------------------------------------
    def stage(self, name: str) -> dict:
        try:
            return dict(self._node(layout.STAGE(name)).attrs)
        except (KeyError, TypeError):
            return {}

    def set_stage(self, name: str, **fields) -> None:
        self.group(layout.STAGE(name)).attrs.update(fields)

    def stages(self) -> dict[str, dict]:
        parent = layout.parent(layout.STAGE)
        if not self.exists(parent):
            return {}
        with store_guard.reading(self.path, parent):
            return {k: dict(self.root[parent][k].attrs) for k in sorted(self.root[parent].group_keys())}


def newest_store(runs: str | Path = "runs") -> Path:
    """The most recently modified `*.zarr` under `runs/` (for `mbml eval` / `mbml dash`)."""
    candidates = [p for p in Path(runs).glob("*.zarr") if p.is_dir()]
    if not candidates:
        raise StoreError(f"{runs}: no stores found (run `mbml run RECIPE` first, or name a store)")
    return max(candidates, key=lambda p: p.stat().st_mtime)
