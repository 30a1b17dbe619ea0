"""The store's root is a wall; what is read from a store is checked before it is used.

- `Wall(root).check(path)`: a store path (`models/bcq/final/0`) that is written or deleted must be a
  plain relative path whose every existing component below the root is a real directory or file,
  never a symbolic link — so a link planted in a store (`eval -> /elsewhere`) cannot make mbml write
  or delete outside it;
- `check_no_links(root)`: opening a store (to read or to write) refuses one that holds any symbolic
  link, naming it;
- `reading(store, path)`: a failed read of an array (a chunk whose crc32c checksum does not match,
  damaged metadata) becomes one line naming the array;
- `loading(store, path)`: the same for turning stored weights into a network (missing or
  mis-shaped tensors, bad metadata);
- `missing_package(url, error)`: which extra to install for a store URL whose filesystem is missing.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..recipe.inputs import short
from .writer import LOCK_FILE  # noqa: F401  (re-exported: the file a store may hold besides zarr's)


def _error(message: str) -> Exception:
    from ..errors import StoreError
    return StoreError(message)


class Wall:
    """Paths inside one local store root."""

    def __init__(self, root: str):
        self.root_text = str(root)
        self.root = Path(os.path.realpath(root))

    def local(self, path: str) -> Path:
        return self.root.joinpath(*self._parts(path))

    def _parts(self, path: str) -> list[str]:
        parts = [p for p in str(path).split("/") if p not in ("", ".")]
        if str(path).startswith("/") or any(p == ".." or "\0" in p or "\\" in p for p in parts):
            raise _error(f"{self.root_text}: refusing store path {short(path)}: not a plain path inside the store")
        return parts

    def check(self, path: str) -> None:
        """Raise StoreError when writing or deleting `path` could leave the store's root."""
        here = self.root
        for part in self._parts(path):
            here = here / part
            if here.is_symlink():
                raise _error(f"{self.root_text}: refusing to write through {here.relative_to(self.root)}: "
                             "a symbolic link (a store may not reach outside its own directory)")
            if not here.exists():
                return


def check_no_links(root: str) -> None:
    """Refuse a store directory that holds a symbolic link anywhere below its root."""
    base = os.path.realpath(root)
    for folder, dirs, files in os.walk(base, followlinks=False):
        for name in dirs + files:
            full = os.path.join(folder, name)
            if os.path.islink(full):
                rel = os.path.relpath(full, base)
                raise _error(f"{root}: {rel if len(rel) <= 200 else short(rel)} is a symbolic link; a store may not link outside "
                             "its own directory (replace the link by a copy)")


def make_root(path: str) -> Path:
    """The local store directory, created when missing (not a file, not through a dangling link)."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise _error(f"{path}: a file, not a store (a store is a directory)")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:
        raise _error(f"{short(path)}: cannot create the store ({getattr(e, 'strerror', None) or e})") from None
    return target


def _reason(e: Exception) -> str:
    text = str(e)
    if "checksum" in text:
        return "a chunk failed its crc32c checksum: the store is damaged (`mbml info --check` lists every damaged array)"
    return f"{type(e).__name__}: {short(text, 120)}"


def check_size(store: str, path: str, node) -> None:
    """Refuse to read an array whose stored shape asks for more memory than the machine has."""
    from ..recipe.limits import gib, machine_memory
    try:
        nbytes = node.nbytes
    except Exception as e:
        raise _error(f"{store}: {path}: cannot be read ({_reason(e)})") from None
    if nbytes > machine_memory():
        raise _error(f"{store}: {path}: stored shape {short(node.shape)} would need {gib(nbytes)}")


@contextlib.contextmanager
def reading(store: str, path: str, passing: tuple = ()):
    """Any failure while reading array `path` → one line naming it (exceptions in `passing` pass)."""
    from ..errors import StoreError
    try:
        yield
    except (StoreError, *passing):
        raise
    except Exception as e:          # zarr raises ValueError for checksums, others for bad metadata
        raise _error(f"{store}: {path}: cannot be read ({_reason(e)})") from None


SIZE_KEYS = ("obs_dim", "act_dim", "latent_dim", "vae_latent", "n_candidates", "hidden", "K", "M",
             "n_tasks", "ensemble_size", "out_dim")
SIZE_MAX = 65_536


def check_sizes(store: str, path: str, meta: dict) -> None:
    """A network's sizes from stored metadata must be small positive integers (a crafted meta could
    otherwise ask for terabytes before the weights are even compared)."""
    for key, value in meta.items():
        if not (key in SIZE_KEYS or key.endswith(("_dim", "_hidden"))):
            continue
        values = value if isinstance(value, list) else [value]
        if len(values) > 64 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= SIZE_MAX
                                       for v in values):
            raise _error(f"{store}: {path}: meta {key!r} is {short(value)}, not a network size")


@contextlib.contextmanager
def loading(store: str, path: str, meta: dict | None = None):
    """Any failure while building a network from the weights at `path` → one line naming them."""
    from ..errors import StoreError
    if meta is not None:
        check_sizes(store, path, meta)
    try:
        yield
    except StoreError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError, OverflowError,
            MemoryError) as e:
        raise _error(f"{store}: {path}: stored weights do not fit their network ({_reason(e)})") from None


def row_count(store: str, path: str, value) -> int:
    """A table's `n` attribute, checked."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(f"{store}: {path}: attribute 'n' is {short(value)}, not a row count")
    return value


MAX_CHUNKS = 10 ** 6       # chunks along the rows of one array (a 600k-step batch has ~150)


def verify(store) -> tuple[int, list[tuple[str, str]]]:
    """Read every chunk of every array of `store`: (arrays checked, [(array, reason) that failed])."""
    import zarr
    bad, checked = [], 0
    try:
        members = list(store.root.members(max_depth=None))
    except Exception as e:
        return 0, [("(hierarchy)", _reason(e))]
    for path, node in members:
        if not isinstance(node, zarr.Array):
            continue
        checked += 1
        try:
            if node.ndim and -(-node.shape[0] // max(1, node.chunks[0])) > MAX_CHUNKS:
                bad.append((path, f"implausible shape {short(node.shape)} for chunks {short(node.chunks)}"))
                continue
            step = max(1, node.chunks[0]) if node.ndim else 1
            if node.ndim == 0:
                node[...]
            for start in range(0, node.shape[0] if node.ndim else 0, step):
                node[start:start + step]
        except Exception as e:
            bad.append((path, _reason(e)))
    return checked, bad


EXTRAS = {"http": "fsspec[http] (aiohttp)", "https": "fsspec[http] (aiohttp)", "s3": "s3fs",
          "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "ssh": "sshfs", "sftp": "sshfs"}


def missing_package(url: str, e: ImportError) -> str:
    scheme = str(url).split("://", 1)[0].lower()
    package = EXTRAS.get(scheme, "fsspec and the filesystem package for this scheme")
    missing = f"; missing module {e.name}" if e.name else ""
    return (f"{str(url)[:200]}: {scheme}:// stores need {package}, which is not installed "
            f"(pip install {package.split(' ')[0]!r}{missing})")
