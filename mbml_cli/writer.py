"""One writer per store: an advisory lock file inside the store, held by every command that writes.

The file `<store>/.mbml-writer` is locked with `flock` for as long as the writing command runs and
holds a one-line JSON record of its holder (pid, host, command, start time). A second writer is
refused with one line naming the holder. The kernel drops a lock whose process is gone, so a
holder killed by SIGKILL or a power cut never blocks the store: the next writer takes the lock over
and says whose it was (the record was never cleared). Readers (`mbml info`, `mbml dash`, the Python
API) never take the lock: the store's write order already keeps them from seeing torn rows.

The lock is re-entrant within one process (`mbml run` opens the store once per stage) and is
released when the command ends. Stores behind a URL are not locked (fsspec has no common lock);
keep one writer per such store yourself.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = ".mbml-writer"          # the one store path this module names

_held: dict[str, list] = {}         # real store path -> [open file, depth]


class LockError(RuntimeError):
    """Another process writes to the store; str() is the user's line."""


def _key(store_path: str) -> str:
    return os.path.realpath(store_path)


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


def acquire(store_path: str, command: str | None = None, say=None) -> None:
    """Take the store's writer lock (the store directory must exist). Raises LockError when another
    live process holds it; `say(line)` is told when a dead holder's lock is taken over."""
    key = _key(store_path)
    if key in _held:
        _held[key][1] += 1
        return
    path = Path(key) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:        # ELOOP: a planted link in place of the lock file; EACCES: a read-only store
        raise LockError(f"{store_path}: cannot take the writer lock {LOCK_FILE} "
                        f"({e.strerror or type(e).__name__})") from None
    f = os.fdopen(fd, "r+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        record = _read(f)
        f.close()
        raise LockError(f"{store_path}: another mbml is writing to this store ({_describe(record)}); "
                        "wait for it to finish or stop it") from None
    previous = _read(f)
    if previous.get("pid") and say is not None:
        say(f"{store_path}: took over the writer lock of {_describe(previous)}, which is gone")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "command": command or " ".join(["mbml", *sys.argv[1:]])[:200]}
    f.seek(0)
    f.truncate()
    f.write(json.dumps(record))
    f.flush()
    _held[key] = [f, 1]


def release(store_path: str) -> None:
    """Give the lock back when the outermost holder in this process is done."""
    key = _key(store_path)
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    f = entry[0]
    del _held[key]
    try:
        f.seek(0)
        f.truncate()         # an empty record: released cleanly, nothing to take over
        f.flush()
    finally:
        f.close()            # closing drops the flock


def holds(store_path: str) -> bool:
    return _key(store_path) in _held
