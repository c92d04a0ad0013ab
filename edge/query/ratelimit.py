"""A per-officer (and per-token) sliding-window rate limit in SQLite: the CLI, HTTP and MQTT share one budget."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from edge.errors import EdgeError
from edge.sqlite import connect, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (officer TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS grants_officer ON grants (officer, ts);
"""


class RateLimitError(EdgeError):
    """The rate-limit database cannot be used."""


class RateLimiter:
    """At most `max_queries` grants per officer in any `per_s` seconds (thread- and process-safe)."""

    def __init__(self, path: Path, max_queries: int, per_s: float) -> None:
        self._path = Path(path)
        self._max = max_queries
        self._per_s = per_s
        self._lock = threading.Lock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect(self._path, synchronous="NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise RateLimitError(f"cannot open rate-limit database {self._path}: {exc}") from exc

    def acquire(self, officer: str, now: float) -> float | None:
        """Take one grant for `officer` at `now`; None if granted, else seconds until one is free."""
        return self.acquire_all((officer,), now)

    def acquire_all(self, keys: Sequence[str], now: float) -> float | None:
        """Take one grant from every budget in `keys` at once, or none: None if granted, else the wait."""
        with self._lock, transaction(self._db, lambda exc: RateLimitError(f"rate-limit database {self._path}: {exc}")):
            self._db.execute("DELETE FROM grants WHERE ts <= ?", (now - self._per_s,))
            wait = 0.0
            for key in keys:
                rows = self._db.execute("SELECT ts FROM grants WHERE officer = ? ORDER BY ts", (key,)).fetchall()
                if len(rows) >= self._max:
                    wait = max(wait, float(rows[len(rows) - self._max][0]) + self._per_s - now, 0.001)
            if wait > 0:
                return wait
            self._db.executemany("INSERT INTO grants (officer, ts) VALUES (?, ?)", [(k, now) for k in keys])
            return None

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
