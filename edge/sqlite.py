"""Opening edgegw's SQLite files the same way everywhere."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal


def connect(path: Path, *, synchronous: Literal["FULL", "NORMAL"] = "FULL", secure_delete: bool = False,
            foreign_keys: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (callers run explicit transactions), WAL, 30 s busy timeout.

    `synchronous=FULL` makes a commit durable before it returns (a power cut loses nothing
    acknowledged); `secure_delete` overwrites deleted content instead of leaving it in free pages,
    which the key stores and the passage store need for crypto-shredding to mean anything.
    Raises sqlite3.Error; callers translate it into their own error type.
    """
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        if secure_delete:
            db.execute("PRAGMA secure_delete=ON")
        if foreign_keys:
            db.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error:
        db.close()
        raise
    return db


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
