"""The sqlite the server runs on, and opening its connections with the pragmas it relies on.

Every module takes `sqlite3` from here (ruff refuses `import sqlite3` elsewhere): sqlean.py's
build of Python's sqlite3 module carries a sqlite of 3.42 or newer, whose FTS5 secure-delete
takes a deleted message's words out of the search index's pages at once. Python's own module
links the system's library (3.40 on Debian 12), which leaves them there until segments merge.
The two modules have the same interface; the type checker reads the standard library's stubs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3  # noqa: TID251
else:
    import sqlean as sqlite3

__all__ = ["backup", "connect", "sqlite3"]

BUSY_TIMEOUT_MS = 5000


def connect(
    path: str, *, durability: str = "full", readonly: bool = False, wal_autocheckpoint: int = 1000
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, foreign keys on.

    `durability="full"` sets synchronous=FULL: COMMIT returns only after the WAL is fsynced, so an
    acknowledged write survives power loss. "normal" survives a process crash but may lose the
    last commits on power loss. `wal_autocheckpoint` (pages) bounds the WAL: the commit that
    passes it also checkpoints. A writable connection zeroes what it deletes (secure_delete).
    """
    if path == ":memory:" or not path:
        raise ValueError("the server needs a database file, not :memory:")
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"could not switch {path} to WAL mode (got {mode})")
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(wal_autocheckpoint)}")
        # What is deleted or overwritten is zeroed in the file, not left in free space (an
        # erased account's texts must be gone, not merely unreferenced).
        conn.execute("PRAGMA secure_delete = ON")
    conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
    return conn


def backup(source: str, target: str) -> None:
    """A consistent copy of the database `source` at `target` (a new file) with sqlite's online
    backup API: it reads one snapshot, so a running server's writes go on meanwhile. Blocking:
    call it from a thread. FileExistsError if `target` exists; a failed copy leaves no file."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode = DELETE")
            finally:
                dst.close()
        finally:
            src.close()
    except BaseException:
        os.unlink(target)
        raise
