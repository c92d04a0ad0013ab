"""Opening edgegw's SQLite files the same way everywhere."""

from __future__ import annotations

import sqlite3
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
