"""Opening edgegw's SQLite files the same way everywhere."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal


def connect(path: Path, *, synchronous: Literal["FULL", "NORMAL"] = "FULL", secure_delete: bool = True,
            foreign_keys: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (callers run explicit transactions), WAL, 30 s busy timeout.

    `synchronous=FULL` makes a commit durable before it returns (a power cut loses nothing
    acknowledged); `secure_delete` (on for every database since issue 12) overwrites deleted content
    instead of leaving it in free pages, so a deleted row is gone from the file, not just unlinked.
    A new database file is created mode 0600 whatever the umask; SQLite gives its -wal and -shm
    files the database's mode. Raises sqlite3.Error; callers translate it into their own error type.
    """
    create_private(path)
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        enable_wal(db)
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute(f"PRAGMA secure_delete={'ON' if secure_delete else 'OFF'}")
        if foreign_keys:
            db.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error:
        db.close()
        raise
    return db


def enable_wal(db: sqlite3.Connection, timeout_s: float = 30.0) -> None:
    """`PRAGMA journal_mode=WAL`, retried while another connection holds the file (first start).

    When two processes create the same new database at once, the switch to WAL needs an exclusive
    lock, and SQLite answers SQLITE_BUSY at once instead of calling the busy handler (waiting could
    deadlock inside SQLite). So the busy timeout does not cover it; this retries, with a short
    jittered sleep, for as long as the busy timeout would have waited. Raises sqlite3.Error.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        else:
            if mode is not None and str(mode[0]).lower() == "wal":
                return
            if time.monotonic() >= deadline:
                raise sqlite3.OperationalError(f"cannot switch to WAL mode (journal_mode is {mode})")
        time.sleep(delay * (0.5 + random.random()))  # jitter: two racing processes must not retry in step
        delay = min(delay * 2, 0.2)


_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6  # primary result codes; sqlite3's constants for them are 3.11+


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # 3.11+; on 3.10 only the message tells
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def create_private(path: Path, mode: int = 0o600) -> None:
    """Create `path` empty with `mode` (0600) unless it exists (a special name like ':memory:' is left alone).

    A file two daemons share (the outbox, once they run as separate users) may pass a group mode.
    """
    if str(path) == ":memory:" or str(path).startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    except FileExistsError:
        return
    except OSError as exc:
        # Callers handle sqlite3.Error (what sqlite3.connect raises for the same trouble), so say it alike.
        raise sqlite3.OperationalError(f"unable to open database file {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)  # the umask applies to os.open's mode; make it exact
    finally:
        os.close(fd)


@contextmanager
def transaction(db: sqlite3.Connection,
                error: Callable[[sqlite3.Error], Exception] | None = None) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` … `COMMIT`, rolled back on any exception: the one write transaction of edgegw.

    IMMEDIATE takes the write lock up front, so a read-then-write inside is atomic across threads and
    processes (the busy timeout waits for the lock). SQLite rolls some errors back by itself (SQLITE_FULL,
    for one); then nothing is left to undo. With `error`, an sqlite3.Error (from the body, the BEGIN or
    the COMMIT) is raised as `error(exc)`, so each store reports failures in its own words.
    """
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if error is None:
            raise
        raise error(exc) from exc
