"""Per-case audit keys: what a query matched is audited as a keyed digest that dies with its case.

An audit record must show oversight that two queries of one case looked for the same value, and
must not let anyone who reads the audit log (it is exported, its head is published) turn it back
into the value or link it across cases. So a query's pseudonyms (and a photo query's photo) are
recorded as HMAC-SHA256(case key, domain || value), under a random key per case kept here, in
SQLite with secure_delete. `shred(case)` (the case is closed) or the age limit (`purge`) destroys the
key: the digests stay in the hash chain, intact and verifiable, but link to nothing any more.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from edge.errors import EdgeError
from edge.privacy.epochkeys import keyed_digest
from edge.sqlite import connect, transaction

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS case_keys (case_id TEXT PRIMARY KEY, key BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS shredded (case_id TEXT PRIMARY KEY, shredded REAL NOT NULL);
"""


class CaseKeyError(EdgeError):
    """The case key store cannot be read or written, or a case's key was shredded."""


class CaseKeys:
    """Random keys per case id (thread-safe; several processes may share the file)."""

    def __init__(self, path: Path | None, *, max_age_days: float = 365.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._max_age_s = max_age_days * 86400.0
        self._clock = clock
        self._lock = threading.Lock()
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = connect(path, secure_delete=True)
            else:  # an in-memory store: digests are unlinkable once the process ends
                self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise CaseKeyError(f"cannot open the case key store {path}: {exc}") from exc

    def __enter__(self) -> CaseKeys:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def digest(self, case_id: str, domain: str, value: str) -> str:
        """The keyed digest of `value` (in `domain`: "pseudonym", "photo") under `case_id`'s key."""
        return keyed_digest(self._key(case_id), f"edgegw/audit-digest/v1|{domain}", [value])

    def has(self, case_id: str) -> bool:
        """Whether `case_id` still has a key."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM case_keys WHERE case_id = ?", (case_id,)).fetchone() is not None

    def shred(self, case_id: str) -> bool:
        """Destroy a case's key (its audit digests become unlinkable); False if it had none."""
        with self._lock:
            with transaction(self._db):
                n = self._db.execute("DELETE FROM case_keys WHERE case_id = ?", (case_id,)).rowcount
                self._db.execute("INSERT OR REPLACE INTO shredded (case_id, shredded) VALUES (?, ?)",
                                 (case_id, self._clock()))
            self._checkpoint()
        return bool(n)

    def purge(self, now: float | None = None) -> list[str]:
        """Shred every case key older than the age limit; returns those case ids."""
        cut = (self._clock() if now is None else now) - self._max_age_s
        with self._lock:
            with transaction(self._db):
                ids = [str(r[0]) for r in self._db.execute("SELECT case_id FROM case_keys WHERE created < ?", (cut,))]
                self._db.execute("DELETE FROM case_keys WHERE created < ?", (cut,))
                self._db.executemany("INSERT OR REPLACE INTO shredded (case_id, shredded) VALUES (?, ?)",
                                     [(i, self._clock()) for i in ids])
            self._checkpoint()
        if ids:
            log.info("shredded %d case key(s) past the age limit", len(ids))
        return ids

    def _key(self, case_id: str) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT key FROM case_keys WHERE case_id = ?", (case_id,)).fetchone()
            if row is not None:
                return bytes(row[0])
            with transaction(self._db):
                if self._db.execute("SELECT 1 FROM shredded WHERE case_id = ?", (case_id,)).fetchone():
                    raise CaseKeyError(f"case {case_id} was closed (its audit key shredded); open a new case id")
                key = os.urandom(32)
                self._db.execute("INSERT OR IGNORE INTO case_keys (case_id, key, created) VALUES (?, ?, ?)",
                                 (case_id, key, self._clock()))
                row = self._db.execute("SELECT key FROM case_keys WHERE case_id = ?", (case_id,)).fetchone()
            return bytes(row[0])

    def _checkpoint(self) -> None:
        if self._path is not None:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
