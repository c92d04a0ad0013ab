"""The durable outbox: the only meeting point of the capture and uplink daemons.

SQLite in WAL mode with synchronous=FULL: `append` returns only after the commit is on disk, so an
acknowledged event survives a crash or a power cut. The uplink deletes a row only after the broker's
PUBACK (or, in end-to-end mode, after the platform's watermark covers it). Sequence numbers are
assigned inside the same transaction, per source, so they are gap-free within one outbox `boot`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import OutboxError
from edge.events import PRIORITY, encode, event_topic, to_wire, validate
from edge.types import Event, EventKind, OutboxRecord

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    row_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    source_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    priority   INTEGER NOT NULL,
    created_ts REAL NOT NULL,
    expires_ts REAL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    sent_ts    REAL
);
CREATE INDEX IF NOT EXISTS events_drop ON events (priority, row_id);
CREATE INDEX IF NOT EXISTS events_source ON events (source_id, seq);
CREATE TABLE IF NOT EXISTS sources (source_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS status (component TEXT PRIMARY KEY, updated_ts REAL NOT NULL, body TEXT NOT NULL);
"""

_COLUMNS = "row_id, event_id, source_id, seq, kind, topic, payload, priority, created_ts, expires_ts, attempts"


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    """Quota and retention. Past the quota, the oldest events of the lowest priority are dropped."""

    max_events: int = 1_000_000
    max_bytes: int = 512 * 1024 * 1024
    retention_s: float | None = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What `append` committed, and what the quota policy dropped to make room (by kind)."""

    records: tuple[OutboxRecord, ...]
    dropped: dict[str, int]


def _row(r: tuple[Any, ...], boot: int) -> OutboxRecord:
    return OutboxRecord(
        row_id=int(r[0]),
        event_id=str(r[1]),
        source_id=str(r[2]),
        seq=int(r[3]),
        boot=boot,
        kind=EventKind(str(r[4])),
        topic=str(r[5]),
        payload=bytes(r[6]),
        priority=int(r[7]),
        created_ts=float(r[8]),
        expires_ts=None if r[9] is None else float(r[9]),
        attempts=int(r[10]),
    )


class Outbox:
    """A durable FIFO of encoded events in one SQLite file, shared by two processes."""

    def __init__(
        self,
        path: Path,
        *,
        limits: OutboxLimits | None = None,
        topic_prefix: str = "edgegw",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.limits = limits or OutboxLimits()
        self.topic_prefix = topic_prefix
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open_checked(path)
        self.boot = self._boot()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken up front, so two processes never deadlock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- opening -------------------------------------------------------------------------------
    def _connect(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on stable storage before `append` returns; a power cut loses nothing acked.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        db.executescript(_SCHEMA)
        return db

    def _open_checked(self, path: Path) -> sqlite3.Connection:
        try:
            db = self._connect(path)
            ok = db.execute("PRAGMA quick_check").fetchone()
            if ok is None or ok[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {ok}")
            return db
        except sqlite3.DatabaseError as exc:
            # Never delete a corrupt outbox silently: keep it for forensics, start afresh, count it.
            aside = path.with_name(f"{path.name}.corrupt-{int(self._clock())}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(path) + suffix)
                if src.exists():
                    os.replace(src, Path(str(aside) + suffix))
            log.error("outbox %s is corrupt (%s); moved aside to %s and started a new one", path, exc, aside)
            db = self._connect(path)
            db.execute("INSERT INTO counters(name, value) VALUES('corrupt_replaced', 1) "
                       "ON CONFLICT(name) DO UPDATE SET value = value + 1")
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('corrupt_aside', ?)", (str(aside),))
            return db

    def _boot(self) -> int:
        # The boot epoch names this outbox file: a new file (after corruption, say) restarts seq,
        # and the changed boot tells the platform that the restart is not a gap.
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='boot'").fetchone()
            if row is None:
                boot = int(self._clock() * 1000)
                db.execute("INSERT INTO meta(key, value) VALUES('boot', ?)", (str(boot),))
            else:
                boot = int(row[0])
        return boot

    # -- capture side --------------------------------------------------------------------------
    def append(self, events: Sequence[Event]) -> AppendResult:
        """Commit `events` (one transaction, durable on return); assign per-source seq numbers."""
        if not events:
            return AppendResult((), {})
        now = self._clock()
        expires = None if self.limits.retention_s is None else now + self.limits.retention_s
        records: list[OutboxRecord] = []
        try:
            with self._tx():
                for ev in events:
                    cur = self._db.execute(
                        "INSERT INTO sources(source_id, last_seq) VALUES(?, 1) "
                        "ON CONFLICT(source_id) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
                        (ev.source_id,),
                    )
                    seq = int(cur.fetchone()[0])
                    wire = to_wire(ev, seq, self.boot)
                    validate(wire)
                    payload = encode(wire)
                    topic = event_topic(ev.origin, ev.kind, self.topic_prefix)
                    prio = PRIORITY[ev.kind]
                    cur = self._db.execute(
                        "INSERT INTO events(event_id, source_id, seq, kind, topic, payload, priority, "
                        "created_ts, expires_ts) VALUES(?,?,?,?,?,?,?,?,?)",
                        (ev.event_id, ev.source_id, seq, ev.kind.value, topic, payload, prio, now, expires),
                    )
                    records.append(OutboxRecord(int(cur.lastrowid or 0), ev.event_id, ev.source_id, seq,
                                                self.boot, ev.kind, topic, payload, prio, now, expires))
                dropped = self._enforce_quota()
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot commit {len(events)} event(s) to {self.path}: {exc}") from exc
        if dropped:
            log.warning("outbox quota reached: dropped %s", dropped)
        return AppendResult(tuple(records), dropped)

    def _usage(self) -> tuple[int, int]:
        n = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        used = int(self._db.execute("PRAGMA page_count").fetchone()[0]) - int(
            self._db.execute("PRAGMA freelist_count").fetchone()[0])
        return n, used * page_size

    def _enforce_quota(self) -> dict[str, int]:
        dropped: dict[str, int] = {}
        n, used = self._usage()
        while n > self.limits.max_events or used > self.limits.max_bytes:
            # Drop in chunks: oldest first within the lowest priority present. Alarms (highest) last.
            excess = max(n - self.limits.max_events, 1, n // 100)
            rows = self._db.execute(
                "SELECT row_id, kind FROM events ORDER BY priority ASC, row_id ASC LIMIT ?", (excess,)
            ).fetchall()
            if not rows:
                break
            self._db.executemany("DELETE FROM events WHERE row_id = ?", [(r[0],) for r in rows])
            for _, kind in rows:
                dropped[kind] = dropped.get(kind, 0) + 1
            n, used = self._usage()
        for kind, count in dropped.items():
            self._bump(f"dropped_quota.{kind}", count)
        if dropped:
            self._bump("dropped_quota", sum(dropped.values()))
        return dropped

    def _bump(self, name: str, by: int) -> None:
        self._db.execute("INSERT INTO counters(name, value) VALUES(?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    # -- uplink side ---------------------------------------------------------------------------
    def pending(self, limit: int, *, exclude: Iterable[int] = (), newest_first: bool = False,
                unsent_only: bool = False) -> list[OutboxRecord]:
        """Up to `limit` rows to publish, oldest first (or newest first for the live lane)."""
        skip = set(exclude)
        order = "DESC" if newest_first else "ASC"
        where = "WHERE sent_ts IS NULL" if unsent_only else ""
        out: list[OutboxRecord] = []
        for r in self._db.execute(f"SELECT {_COLUMNS} FROM events {where} ORDER BY row_id {order} LIMIT ?",  # noqa: S608
                                  (limit + len(skip),)):
            if int(r[0]) not in skip:
                out.append(_row(r, self.boot))
                if len(out) >= limit:
                    break
        return out

    def delete(self, row_ids: Iterable[int]) -> int:
        """Remove rows the broker (or the platform) has acknowledged."""
        ids = [(i,) for i in row_ids]
        if not ids:
            return 0
        with self._tx() as db:
            db.executemany("DELETE FROM events WHERE row_id = ?", ids)
            self._bump("delivered", len(ids))
        return len(ids)

    def mark_sent(self, row_ids: Iterable[int], ts: float | None = None) -> None:
        """End-to-end mode: the broker has it; keep the row until the platform's watermark covers it."""
        stamp = self._clock() if ts is None else ts
        ids = [(stamp, i) for i in row_ids]
        if ids:
            with self._tx() as db:
                db.executemany("UPDATE events SET sent_ts = ?, attempts = attempts + 1 WHERE row_id = ?", ids)

    def ack_watermark(self, source_id: str, boot: int, seq: int) -> int:
        """Delete rows of `source_id` with seq <= `seq`, if `boot` is this outbox's boot."""
        if boot != self.boot:
            return 0
        with self._tx() as db:
            n = int(db.execute("DELETE FROM events WHERE source_id = ? AND seq <= ?", (source_id, seq)).rowcount)
            if n:
                self._bump("delivered", n)
        return n

    def unsend_older_than(self, cutoff_ts: float) -> int:
        """End-to-end mode: rows sent before `cutoff_ts` and still not covered are sent again."""
        with self._tx() as db:
            n = int(db.execute("UPDATE events SET sent_ts = NULL WHERE sent_ts IS NOT NULL AND sent_ts < ?",
                               (cutoff_ts,)).rowcount)
        return n

    def purge_expired(self, now: float | None = None) -> int:
        """Delete events past their retention (counted as `expired`)."""
        stamp = self._clock() if now is None else now
        with self._tx() as db:
            n = int(db.execute("DELETE FROM events WHERE expires_ts IS NOT NULL AND expires_ts < ?",
                               (stamp,)).rowcount)
            if n:
                self._bump("expired", n)
        if n:
            log.warning("purged %d expired event(s) from the outbox", n)
        return n

    # -- observability -------------------------------------------------------------------------
    def depth(self) -> int:
        """Events not yet delivered."""
        return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def oldest_age_s(self) -> float | None:
        """Age of the oldest pending event in seconds, or None when empty."""
        row = self._db.execute("SELECT MIN(created_ts) FROM events").fetchone()
        return None if row[0] is None else max(0.0, self._clock() - float(row[0]))

    def counters(self) -> dict[str, int]:
        """Lifetime counters (delivered, expired, dropped_quota[.kind], corrupt_replaced)."""
        return {str(k): int(v) for k, v in self._db.execute("SELECT name, value FROM counters")}

    def last_seq(self) -> dict[str, int]:
        """The last sequence number assigned per source."""
        return {str(k): int(v) for k, v in self._db.execute("SELECT source_id, last_seq FROM sources")}

    def put_status(self, component: str, body: dict[str, object]) -> None:
        """Record a component's status (capture writes it, the uplink publishes it)."""
        self._db.execute("INSERT OR REPLACE INTO status(component, updated_ts, body) VALUES(?,?,?)",
                         (component, self._clock(), json.dumps(body, sort_keys=True)))

    def get_status(self) -> dict[str, dict[str, object]]:
        """Every component's last status, with its age."""
        out: dict[str, dict[str, object]] = {}
        for comp, ts, body in self._db.execute("SELECT component, updated_ts, body FROM status"):
            entry: dict[str, object] = json.loads(body)
            entry["age_s"] = round(self._clock() - float(ts), 1)
            out[str(comp)] = entry
        return out

    def integrity_ok(self) -> bool:
        """PRAGMA integrity_check says ok."""
        row = self._db.execute("PRAGMA integrity_check").fetchone()
        return row is not None and row[0] == "ok"

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        self._db.close()
