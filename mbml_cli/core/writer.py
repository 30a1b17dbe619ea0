"""Who writes a store: an advisory lock file inside the store, held by every command that writes.

The file `<store>/.mbml-writer` is locked with `flock` for as long as the writing command runs and
holds a one-line JSON record of its holder (pid, host, command, start time). A second writer is
refused with one line naming the holder. The kernel drops a lock whose process is gone, so a
holder killed by SIGKILL or a power cut never blocks the store: the next writer takes the lock over
and says whose it was (the record was never cleared). Readers (`mbml info`, `mbml dash`, the Python
API) never take the lock: the store's write order already keeps them from seeing torn rows.

Units. One algorithm's distill, eval and probe write only that algorithm's groups (`layout.py`:
`stages/<stage>/<algo>`, `metrics/distill/<algo>`, `eval/<algo>/…`, `models/distill/<algo>/…`), so
several may write one store at once (`mbml run --jobs N`, or `mbml distill --algo A` in two
terminals); so do the shards of collect and bcq inside `mbml run --jobs N` (unit `collect/0-1`:
its tasks' `data/train/<i>`, weights, records, and its own checkpoint and metrics tables). A unit
writer holds the store's lock *shared* and its own file `.mbml-writer.<unit>` exclusively: units of different names run together, a second writer of the same unit is refused,
and a whole-store writer (exclusive) and unit writers exclude each other. `mbml run --jobs N` holds
the whole-store lock and, while its units run, makes it shared (`shared()`), so that no other
command can start writing in between.

The lock is re-entrant within one process (`mbml run` opens the store once per stage; a unit inside
a process that holds the whole store is covered by it) and is released when the command ends.
Stores behind a URL are not locked (fsspec has no common lock); keep one writer per such store yourself.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".mbml-writer"          # the one store path this module names (units: LOCK_FILE + ".<unit>")

_held: dict[tuple[str, str | None], list] = {}     # (real store path, unit or None) -> [open files, depth]


class LockError(RuntimeError):
    """Another process writes to the store; str() is the user's line."""


def _key(store_path: str) -> str:
    return os.path.realpath(store_path)


def unit_file(unit: str) -> str:
    """The lock file of one unit, e.g. `.mbml-writer.algo-mbml` for unit `algo/mbml`."""
    return f"{LOCK_FILE}.{re.sub(r'[^A-Za-z0-9_.-]', '-', unit)}"


def _describe(record: dict) -> str:
    started = record.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return (f"pid {record.get('pid', '?')} on {record.get('host', '?')}, "
            f"`{str(record.get('command', '?'))[:80]}` since {when}")


def _read(f) -> dict:
    f.seek(0)
    try:
        record = json.loads(f.read(4096) or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _open(store_path: str, name: str):
    try:
        fd = os.open(Path(_key(store_path)) / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:        # ELOOP: a planted link in place of the lock file; EACCES: a read-only store
        raise LockError(f"{store_path}: cannot take the writer lock {name} "
                        f"({e.strerror or type(e).__name__})") from None
    return os.fdopen(fd, "r+")


def _flock(f, mode: int) -> bool:
    try:
        fcntl.flock(f.fileno(), mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unit_holder(store_path: str) -> dict:
    """The record of the first unit file another process holds locked ({} when none is)."""
    for other in sorted(Path(_key(store_path)).glob(f"{LOCK_FILE}.*")):
        try:
            g = os.fdopen(os.open(other, os.O_RDONLY | os.O_NOFOLLOW), "r")
        except OSError:
            continue
        with g:
            if not _flock(g, fcntl.LOCK_SH):
                return _read(g)
    return {}


def _busy(store_path: str, f, what: str) -> LockError:
    """The refusal, naming the holder: the file's record, else (the whole store, held shared by units)
    the holder of a unit."""
    record = _read(f)
    f.close()
    record = record if record.get("pid") else _unit_holder(store_path)
    return LockError(f"{store_path}: another mbml is writing to {what} ({_describe(record)}); "
                     "wait for it to finish or stop it")


def _claim(store_path: str, f, command: str | None, say) -> None:
    """Write our record into a locked file, saying whose dead lock was taken over."""
    previous = _read(f)
    if previous.get("pid") and say is not None:
        say(f"{store_path}: took over the writer lock of {_describe(previous)}, which is gone")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "command": command or " ".join(["mbml", *sys.argv[1:]])[:200]}
    f.seek(0)
    f.truncate()
    f.write(json.dumps(record))
    f.flush()


def acquire(store_path: str, command: str | None = None, say=None, unit: str | None = None) -> None:
    """Take the store's writer lock (the store directory must exist), or with `unit` that unit's lock
    (the store's shared). Raises LockError when another live process holds what we need; `say(line)`
    is told when a dead holder's lock is taken over."""
    key = _key(store_path)
    for held in ((key, unit), (key, None)):          # already ours, or covered by our whole-store lock
        if held in _held:
            _held[held][1] += 1
            return
    main = _open(store_path, LOCK_FILE)
    if unit is None:
        if not _flock(main, fcntl.LOCK_EX):
            raise _busy(store_path, main, "this store")
        _claim(store_path, main, command, say)
        _held[(key, None)] = [(main,), 1]
        return
    if not _flock(main, fcntl.LOCK_SH):
        raise _busy(store_path, main, "this store")
    own = _open(store_path, unit_file(unit))
    if not _flock(own, fcntl.LOCK_EX):
        main.close()
        raise _busy(store_path, own, f"{unit} of this store")
    _claim(store_path, own, command, say)
    _held[(key, unit)] = [(main, own), 1]


def release(store_path: str, unit: str | None = None) -> None:
    """Give the lock back when the outermost holder in this process is done."""
    key = _key(store_path)
    held = (key, unit) if (key, unit) in _held else (key, None)
    entry = _held.get(held)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[held]
    own = entry[0][-1]
    try:
        own.seek(0)
        own.truncate()         # an empty record: released cleanly, nothing to take over
        own.flush()
    finally:
        for f in reversed(entry[0]):
            f.close()          # closing drops the flock


def holds(store_path: str) -> bool:
    return (_key(store_path), None) in _held


@contextmanager
def shared(store_path: str):
    """While the block runs, this process's whole-store lock is held shared, so that unit writers
    (its workers) may take their units; exclusive again afterwards. A no-op without the lock."""
    entry = _held.get((_key(store_path), None))
    if entry is None:
        yield
        return
    main = entry[0][0]
    fcntl.flock(main.fileno(), fcntl.LOCK_SH)          # a downgrade: never blocks
    try:
        yield
    finally:
        if not _flock(main, fcntl.LOCK_EX):
            raise LockError(f"{store_path}: a unit still writes to this store after its run's units ended "
                            f"({_describe(_unit_holder(store_path))})")

