"""Day partitions of `events` on RANGE(event_id), and retention by detaching and dropping them.

A UUIDv7's first 48 bits are its Unix time in milliseconds, and PostgreSQL orders uuid values byte
by byte, so the uuid whose first 48 bits are a day's first millisecond (and the rest zero) is a
lower bound for every id made on that day.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterable
from datetime import date, datetime, timedelta

import psycopg
from psycopg import sql

from edge.compat import UTC

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000
_NAME_RE = re.compile(r"^events_(\d{8})$")


def day_bound(day: date) -> uuid.UUID:
    """The smallest UUIDv7 of `day` (UTC)."""
    ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    return uuid.UUID(int=ms << 80)


def uuid7_ms(event_id: uuid.UUID) -> int:
    """The millisecond timestamp inside a UUIDv7."""
    return event_id.int >> 80


def uuid7_day(event_id: uuid.UUID) -> date:
    """The UTC day a UUIDv7 was made on."""
    return datetime.fromtimestamp(uuid7_ms(event_id) / 1000, UTC).date()


def partition_name(day: date) -> str:
    """`events_YYYYMMDD`."""
    return f"events_{day:%Y%m%d}"


def ensure_partitions(conn: psycopg.Connection[tuple[object, ...]], days: Iterable[date]) -> list[str]:
    """Create the day partitions that do not exist yet (safe against a concurrent worker); return the new ones."""
    created = []
    for day in sorted(set(days)):
        name = partition_name(day)
        stmt = sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF events FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(name), sql.Literal(str(day_bound(day))), sql.Literal(str(day_bound(day + timedelta(1)))))
        try:
            with conn.transaction():
                # Two workers creating the same partition at once: the loser waits here, then IF NOT EXISTS holds.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
                existed = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
                conn.execute(stmt)
        except psycopg.errors.DuplicateTable:
            continue
        if existed and not existed[0]:
            created.append(name)
            log.info("created partition %s", name)
    return created


def list_partitions(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[str, date]]:
    """(name, day) of every attached day partition of `events`, oldest first."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events'").fetchall()
    out = []
    for (relname,) in rows:
        m = _NAME_RE.match(str(relname))
        if m:
            out.append((str(relname), datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC).date()))
    return sorted(out, key=lambda p: p[1])


def drop_older_than(conn: psycopg.Connection[tuple[object, ...]], keep_days: int,
                    today: date | None = None) -> list[str]:
    """Retention: detach, then drop, every day partition that ends more than `keep_days` before today.

    Dropping a whole partition is a metadata operation: no row-by-row DELETE, no vacuum debt.
    """
    today = today or datetime.now(UTC).date()
    cutoff = today - timedelta(days=keep_days)
    dropped = []
    for name, day in list_partitions(conn):
        if day + timedelta(days=1) > cutoff:
            continue
        with conn.transaction():
            conn.execute(sql.SQL("ALTER TABLE events DETACH PARTITION {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        dropped.append(name)
        log.info("retention: dropped partition %s", name)
    return dropped


class PartitionCache:
    """Remembers which day partitions exist so the hot path asks PostgreSQL only for new days."""

    def __init__(self) -> None:
        self._known: set[date] = set()
        self._lock = threading.Lock()

    def missing(self, days: Iterable[date]) -> set[date]:
        """The days not known to exist."""
        with self._lock:
            return set(days) - self._known

    def ensure(self, conn: psycopg.Connection[tuple[object, ...]], days: Iterable[date]) -> None:
        """Make sure every day in `days` has its partition."""
        todo = self.missing(days)
        if todo:
            ensure_partitions(conn, todo)
            with self._lock:
                self._known |= todo

    def forget(self) -> None:
        """Forget everything (after retention dropped partitions, or a reconnect to a new server)."""
        with self._lock:
            self._known.clear()
