"""The durable outbox: the only meeting point of the capture and uplink daemons.

SQLite in WAL mode with synchronous=FULL: `append` returns only after the commit is on disk, so an
acknowledged event survives a crash or a power cut. The uplink deletes a row only after the broker's
PUBACK (or, in end-to-end mode, after the platform's watermark covers it). Sequence numbers are
assigned inside the same transaction, per source, so they are gap-free within one outbox `boot`.

Space is bounded twice: the configured quota (events and bytes, lowered automatically when the disk
itself runs short: edge.diskbudget sets the reserve and every state database's WAL headroom aside)
applies the documented drop policy, counted; and if a write still fails because the disk is full,
`append` raises `OutboxFullError` and drops nothing, so the caller can retry.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pydantic import Field

from edge.configbase import BackoffConfig, StrictModel
from edge.diskbudget import RateWindow, disk_free, outage_seconds, outbox_quota, state_files
from edge.errors import OutboxError
from edge.events import PRIORITY, encode, event_topic, to_wire, validate
from edge.sqlite import create_private, enable_wal, transaction
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
CREATE TABLE IF NOT EXISTS tally (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL);
INSERT OR IGNORE INTO tally(id, n) SELECT 0, COUNT(*) FROM events;
CREATE TRIGGER IF NOT EXISTS events_tally_ins AFTER INSERT ON events BEGIN UPDATE tally SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS events_tally_del AFTER DELETE ON events BEGIN UPDATE tally SET n = n - 1; END;
"""
# `tally` keeps the row count in O(1): COUNT(*) scans the table, and the quota check runs on every
# append while the uplink asks for the depth on every loop. Created with its triggers in the same
# transaction as the initial count, so an outbox file from before the tally counts right.

_COLUMNS = "row_id, event_id, source_id, seq, kind, topic, payload, priority, created_ts, expires_ts, attempts"


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Translate SQLite errors into OutboxError at the module boundary."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {fn.__name__}: {exc}") from exc

    return wrapper


def _disk_free(path: Path) -> int:
    """Bytes available to this (unprivileged) process on the filesystem holding `path`."""
    return disk_free(path)


FULL_FREE_BYTES = 256 * 1024
"""Below this much free space the disk counts as full, whether or not a commit has failed yet: the
markers a failed commit writes cannot reach a full disk, so the free space itself is the signal."""
_ROW_OVERHEAD_BYTES = 160  # a row's header, its event_id and two index entries, beyond payload and topic
QUOTA_CLEAR_FRACTION = 0.9
"""The quota alarm clears once the outbox is back below this fraction of its quota (hysteresis: the
policy drops in 1 % chunks, so a full outbox hovers just under the quota and must not flap)."""


class OutboxConfig(StrictModel):
    """The durable outbox file and its quota."""

    path: Path = Path("outbox.db")
    max_events: int = Field(default=1_000_000, ge=100)
    max_mb: float = Field(default=512.0, gt=0)
    retention_days: float = Field(default=7.0, gt=0)
    commit_backoff: BackoffConfig = BackoffConfig(initial_s=1.0, max_s=60.0)
    """How capture retries a commit the outbox refused (locked, disk full); events wait, never drop."""
    reserve_mb: float = Field(default=64.0, ge=0)
    """Disk space left to the rest of the system: the outbox's backlog never grows into it."""
    live_mb: float = Field(default=4.0, gt=0)
    """What the outbox may always hold, even on a short disk, so live events flow with the broker up."""
    quota_alarm_repeat_s: float = Field(default=300.0, gt=0)
    """While the quota keeps dropping, one alarm event (with the count since the last) per this interval."""

    def limits(self, state_databases: tuple[Path, ...] = (), other_bytes_per_event: float = 0.0) -> OutboxLimits:
        """The quota and retention the outbox enforces; `state_databases` share its disk budget."""
        return OutboxLimits(max_events=self.max_events, max_bytes=int(self.max_mb * 1024 * 1024),
                            retention_s=self.retention_days * 86400.0,
                            min_free_bytes=int(self.reserve_mb * 1024 * 1024),
                            live_bytes=int(self.live_mb * 1024 * 1024), state_databases=state_databases,
                            other_bytes_per_event=other_bytes_per_event)


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    """Quota and retention. Past the quota, the oldest events of the lowest priority are dropped."""

    max_events: int = 1_000_000
    max_bytes: int = 512 * 1024 * 1024
    retention_s: float | None = 30 * 86400.0
    min_free_bytes: int = 64 * 1024 * 1024
    """Disk space to leave free: when the disk runs short, the byte quota shrinks to keep this much."""
    file_cap_bytes: int | None = None
    """Hard cap on the file (PRAGMA max_page_count): a write past it fails exactly like a full disk.
    Leave it None on a gateway; the chaos tests use it to fill a "disk" without root."""
    live_bytes: int = 4 * 1024 * 1024
    """What the outbox may always hold (if the disk has it), reserve or not: see edge.diskbudget."""
    state_databases: tuple[Path, ...] = ()
    """The gateway's other SQLite files (passage store, keys, audit, residents): their WALs' headroom
    is set aside before the outbox may grow, and their size counts in the reported budget."""
    other_bytes_per_event: float = 0.0
    """What the other stores gain per committed event (the passage store: see bench/bench_disk.py);
    they grow from the same free space during an outage, which the outage estimate accounts for."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What `append` committed, and what the quota policy dropped to make room (by kind)."""

    records: tuple[OutboxRecord, ...]
    dropped: dict[str, int]


@dataclass(frozen=True, slots=True)
class StorageState:
    """How much room the outbox has: its own use, the quota in force and the disk's free space."""

    used_bytes: int
    quota_bytes: int
    disk_free_bytes: int
    disk_full: bool
    full_since: float | None
    state_bytes: int = 0
    """Every state file (outbox, passage store, audit, keys, residents, their WALs) together."""
    wal_headroom_bytes: int = 0
    reserve_bytes: int = 0
    rate_eps: float | None = None
    """Events committed per second over the last 10–20 minutes (None before a minute of history)."""
    bytes_per_event: float | None = None
    """What one more pending event takes in the outbox file."""
    outage_s: float | None = None
    """How long a broker outage the outbox can absorb at `rate_eps` before the quota drops events."""


@dataclass(frozen=True, slots=True)
class Covered:
    """What one watermark took out of the outbox (end-to-end mode)."""

    deleted: int
    newest_sent_ts: float | None
    """When the most recently sent of those rows that went out only once was sent (None: none
    had). The platform has stored an event sent then, so it is up and storing what was sent by
    then. A row sent more than once says less: the copy stored may be an older one, and its
    `sent_ts` is that of the latest."""


@dataclass(frozen=True, slots=True)
class QuotaState:
    """The quota alarm: raised at the first drop, cleared once the outbox is back below 90 % of its quota."""

    active: bool
    since: float | None
    dropped_since: int
    """Events dropped since the alarm was raised."""


class OutboxFullError(OutboxError):
    """The disk (or the file cap) is full: nothing was committed and nothing was dropped; retry later."""


# Sent, not covered by the watermark, and past the resend timeout, which doubles with each attempt
# up to a factor (parameters: now, timeout, factor).
_OVERDUE = "sent_ts IS NOT NULL AND sent_ts < ? - ? * min(1 << max(attempts - 1, 0), ?)"

# SQLite's primary result codes; `sqlite3.SQLITE_FULL` and friends and `sqlite_errorcode` are 3.11+.
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26
# What SQLite says for those codes, for Python 3.10, whose exceptions carry no code.
_CORRUPT_TEXTS = ("database disk image is malformed", "file is not a database")


class _QuickCheckError(sqlite3.DatabaseError):
    """Our own `PRAGMA quick_check` failed: the file is corrupt."""


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or "database or disk is full" in str(exc)


def _is_corrupt(exc: sqlite3.Error) -> bool:
    if isinstance(exc, _QuickCheckError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # Python 3.10: only the message tells
        return any(text in str(exc) for text in _CORRUPT_TEXTS)
    return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


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
        try:
            self.boot = self._boot()
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        if self.limits.file_cap_bytes is not None:
            self._db.execute(f"PRAGMA max_page_count={max(1, self.limits.file_cap_bytes // self._page_size)}")
        row = self._db.execute("SELECT value FROM meta WHERE key='full_since'").fetchone()
        self._full_since: float | None = None if row is None else float(row[0])
        self._data_version = -1
        self._granted: int | None = None
        """The byte quota the last commit enforced (see _quota_bytes)."""
        self._drops_unlogged: dict[str, int] = {}
        self._drops_logged_at = float("-inf")
        self._unsaved_full_errors = 0
        """Failed commits on a full disk that could not be counted on it yet (written with the next commit)."""

    @contextmanager
    def _tx(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken up front, so two processes never deadlock.

        `durable=False` commits without an fsync (synchronous=NORMAL, still crash-safe in WAL mode):
        for the uplink's deletes and marks, whose loss to a power cut only means a duplicate (same
        event_id) later, never a lost event. Skipping that fsync doubles the drain rate at the default
        window. Commits of events stay FULL, and the WAL fsync of a FULL commit covers every frame
        before it.
        """
        if not durable:
            self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            with transaction(self._db) as db:
                yield db
        finally:
            if not durable:
                self._db.execute("PRAGMA synchronous=FULL")

    # -- opening -------------------------------------------------------------------------------
    def _connect(self, path: Path) -> sqlite3.Connection:
        create_private(path)  # 0600 whatever the umask; -wal and -shm inherit it (issue 12)
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        enable_wal(db)  # retried: two daemons creating a new outbox at once race for this switch
        db.execute("PRAGMA secure_delete=ON")  # delivered rows are overwritten, not left in free pages
        # FULL: a commit is on stable storage before `append` returns; a power cut loses nothing acked.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
        return db

    def _open_checked(self, path: Path) -> sqlite3.Connection:
        try:
            db = self._connect(path)
            ok = db.execute("PRAGMA quick_check").fetchone()
            if ok is None or ok[0] != "ok":
                raise _QuickCheckError(f"quick_check: {ok}")
            return db
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                # A full disk, a busy or unreadable file is not corruption: moving a good outbox aside
                # would hide its events from the uplink.
                raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
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
        """Commit `events` (one transaction, durable on return); assign per-source seq numbers.

        Raises OutboxFullError (nothing committed, nothing dropped) when the disk is full, and
        OutboxError for any other storage failure; the caller keeps the events and retries.
        """
        if not events:
            return AppendResult((), {})
        # Validate before taking the write lock: schema validation is the slow part of a commit, and
        # the uplink's deletes wait on the lock. The seq is the only field set inside the transaction.
        for ev in events:
            validate(to_wire(ev, 1, self.boot))
        now = self._clock()
        expires = None if self.limits.retention_s is None else now + self.limits.retention_s
        records: list[OutboxRecord] = []
        try:
            with self._tx():
                file_bytes = self._file_bytes()  # before this transaction grows the file
                for ev in events:
                    cur = self._db.execute(
                        "INSERT INTO sources(source_id, last_seq) VALUES(?, 1) "
                        "ON CONFLICT(source_id) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
                        (ev.source_id,),
                    )
                    seq = int(cur.fetchone()[0])
                    payload = encode(to_wire(ev, seq, self.boot))
                    topic = event_topic(ev.origin, ev.kind, self.topic_prefix)
                    prio = PRIORITY[ev.kind]
                    cur = self._db.execute(
                        "INSERT INTO events(event_id, source_id, seq, kind, topic, payload, priority, "
                        "created_ts, expires_ts) VALUES(?,?,?,?,?,?,?,?,?)",
                        (ev.event_id, ev.source_id, seq, ev.kind.value, topic, payload, prio, now, expires),
                    )
                    records.append(OutboxRecord(int(cur.lastrowid or 0), ev.event_id, ev.source_id, seq,
                                                self.boot, ev.kind, topic, payload, prio, now, expires))
                dropped = self._enforce_quota(file_bytes, now)
                self._count_rate(now, records)
                if self._full_since is not None or self._unsaved_full_errors:
                    # The markers a full disk refused are written now that a commit fits.
                    self._db.execute("DELETE FROM meta WHERE key='full_since'")
                    if self._unsaved_full_errors:
                        self._bump("full_errors", self._unsaved_full_errors)
        except sqlite3.Error as exc:
            if _is_full(exc):
                self._note_full(now)
                raise OutboxFullError(f"outbox {self.path} is full (disk or file cap): {len(events)} event(s) "
                                      "not committed; retry once the uplink drains or space is freed") from exc
            raise OutboxError(f"cannot commit {len(events)} event(s) to {self.path}: {exc}") from exc
        self._unsaved_full_errors = 0
        if self._full_since is not None:
            log.warning("outbox writable again after %.1f s full", now - self._full_since)
            self._full_since = None
        if dropped:
            self._log_drops(dropped, now)
        return AppendResult(tuple(records), dropped)

    def _log_drops(self, dropped: dict[str, int], now: float) -> None:
        # At most one line per 10 s with the counts since the last: a full outbox drops on every
        # commit, and a line each time buried everything else in the journal (the counts are exact
        # in the counters and the status either way).
        for kind, n in dropped.items():
            self._drops_unlogged[kind] = self._drops_unlogged.get(kind, 0) + n
        if now - self._drops_logged_at >= 10.0:
            log.warning("outbox quota reached: dropped %s (oldest low-priority first)", self._drops_unlogged)
            self._drops_unlogged, self._drops_logged_at = {}, now

    def _note_full(self, now: float) -> None:
        """Record a full disk where the uplink can see it (best effort: the write may fail too)."""
        first = self._full_since is None
        self._full_since = self._full_since or now
        self._unsaved_full_errors += 1
        try:
            with self._tx() as db:
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('full_since', ?)",
                           (repr(self._full_since),))
                self._bump("full_errors", self._unsaved_full_errors)
        except sqlite3.Error:
            pass  # the disk is full: kept in memory, counted with the next commit that fits
        else:
            self._unsaved_full_errors = 0
        if first:
            log.error("outbox %s is full: commits fail until space returns (nothing is dropped)", self.path)

    def _usage(self) -> tuple[int, int]:
        n = int(self._db.execute("SELECT n FROM tally").fetchone()[0])
        used = int(self._db.execute("PRAGMA page_count").fetchone()[0]) - int(
            self._db.execute("PRAGMA freelist_count").fetchone()[0])
        return n, used * self._page_size

    def _file_bytes(self) -> int:
        return int(self._db.execute("PRAGMA page_count").fetchone()[0]) * self._page_size

    def _quota_bytes(self, file_bytes: int, *, enforce: bool = False) -> int:
        """The byte quota in force: the configured one, lowered so the disk keeps its reserve and WAL headroom."""
        try:
            free = _disk_free(self.path.parent)
        except OSError:
            return self.limits.max_bytes
        headroom = state_files((self.path, *self.limits.state_databases)).wal_headroom
        # Pages already in the file (used or free-listed) are ours to reuse; only growth needs the disk.
        # But not the pages an over-quota commit added before the policy dropped room for it: counted
        # as reusable, they raised the quota by a batch each time and the file crept into the reserve
        # (4 -> 9.4 MiB over a 60,000-event outage on a short disk). So the file counts only up to the
        # quota last enforced.
        reusable = file_bytes if self._granted is None else min(file_bytes, self._granted)
        quota = outbox_quota(max_bytes=self.limits.max_bytes, file_bytes=reusable, free=free,
                             reserve=self.limits.min_free_bytes, wal_headroom=headroom,
                             live_bytes=self.limits.live_bytes)
        if enforce:
            self._granted = quota
        return quota

    def _count_rate(self, now: float, records: Sequence[OutboxRecord]) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='rate'").fetchone()
        window = RateWindow.decode(None if row is None else str(row[0]), now)
        nbytes = sum(len(r.payload) + len(r.topic) for r in records)
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('rate', ?)",
                         (window.add(now, len(records), nbytes).encode(),))

    def _enforce_quota(self, file_bytes: int, now: float) -> dict[str, int]:
        dropped: dict[str, int] = {}
        n, used = self._usage()
        quota = self._quota_bytes(file_bytes, enforce=True)
        while n > self.limits.max_events or used > quota:
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
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('quota_since', ?)", (repr(now),))
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) SELECT 'quota_base', "
                             "COALESCE((SELECT value FROM counters WHERE name = 'dropped_quota'), 0) - ?",
                             (sum(dropped.values()),))
        elif not self._pressed(n, used, quota):
            self._db.execute("DELETE FROM meta WHERE key IN ('quota_since', 'quota_base')")
        return dropped

    def _pressed(self, n: int, used: int, quota: int) -> bool:
        """Still near the quota: the alarm stays up until the outbox is below 90 % of it."""
        return n > QUOTA_CLEAR_FRACTION * self.limits.max_events or used > QUOTA_CLEAR_FRACTION * quota

    def _bump(self, name: str, by: int) -> None:
        self._db.execute("INSERT INTO counters(name, value) VALUES(?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    # -- uplink side ---------------------------------------------------------------------------
    @_guarded
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

    @_guarded
    def pending_after(self, after: int, limit: int, *, upto: int | None = None, exclude: Iterable[int] = (),
                      unsent_only: bool = False) -> list[OutboxRecord]:
        """Up to `limit` rows with `after < row_id <= upto`, oldest first, skipping `exclude` (in flight)."""
        skip = {i for i in exclude if i > after and (upto is None or i <= upto)}
        where = "row_id > ?" + ("" if upto is None else " AND row_id <= ?") + (
            " AND sent_ts IS NULL" if unsent_only else "")
        args: tuple[int, ...] = (after,) if upto is None else (after, upto)
        out: list[OutboxRecord] = []
        for r in self._db.execute(f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY row_id LIMIT ?",  # noqa: S608
                                  (*args, limit + len(skip))):
            if int(r[0]) not in skip:
                out.append(_row(r, self.boot))
                if len(out) >= limit:
                    break
        return out

    @_guarded
    def pending_priority(self, min_priority: int, after: int, upto: int, limit: int, *,
                         exclude: Iterable[int] = (), unsent_only: bool = False) -> list[OutboxRecord]:
        """Up to `limit` rows of at least `min_priority` (alarms) with `after < row_id <= upto`, oldest
        first, skipping `exclude`. The uplink sends these ahead of both lanes: an SOS press must not
        wait for a backlog."""
        skip = {i for i in exclude if after < i <= upto}
        where = "priority >= ? AND row_id > ? AND row_id <= ?" + (" AND sent_ts IS NULL" if unsent_only else "")
        out: list[OutboxRecord] = []
        for r in self._db.execute(f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY row_id LIMIT ?",  # noqa: S608
                                  (min_priority, after, upto, limit + len(skip))):
            if int(r[0]) not in skip:
                out.append(_row(r, self.boot))
                if len(out) >= limit:
                    break
        return out

    @_guarded
    def newest_row_id(self) -> int:
        """The highest row id now in the outbox (0 when empty): the boundary of the live lane."""
        row = self._db.execute("SELECT MAX(row_id) FROM events").fetchone()
        return 0 if row[0] is None else int(row[0])

    @_guarded
    def changed(self) -> bool:
        """True when another connection committed since the last call (PRAGMA data_version: cheap)."""
        version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        changed, self._data_version = version != self._data_version, version
        return changed

    @_guarded
    def delete(self, row_ids: Iterable[int]) -> int:
        """Remove rows the broker (or the platform) has acknowledged."""
        ids = [(i,) for i in row_ids]
        if not ids:
            return 0
        with self._tx(durable=False) as db:
            # rowcount, not len(ids): a row the quota dropped while it was in flight is not delivered twice.
            n = int(db.executemany("DELETE FROM events WHERE row_id = ?", ids).rowcount)
            if n:
                self._bump("delivered", n)
        return n

    @_guarded
    def mark_sent(self, row_ids: Iterable[int], ts: float | None = None) -> None:
        """End-to-end mode: the broker has it; keep the row until the platform's watermark covers it."""
        stamp = self._clock() if ts is None else ts
        ids = [(stamp, i) for i in row_ids]
        if ids:
            with self._tx(durable=False) as db:
                db.executemany("UPDATE events SET sent_ts = ?, attempts = attempts + 1 WHERE row_id = ?", ids)

    @_guarded
    def ack_watermark(self, source_id: str, boot: int, seq: int) -> Covered:
        """Delete rows of `source_id` with seq <= `seq`, if `boot` is this outbox's boot."""
        if boot != self.boot:
            return Covered(0, None)
        with self._tx(durable=False) as db:
            # Read through the (source_id, seq) index before the delete: the uplink holds timeout
            # resends until a mark covers something sent as late as the overdue rows.
            newest = db.execute("SELECT MAX(sent_ts) FROM events WHERE source_id = ? AND seq <= ? AND attempts = 1",
                                (source_id, seq)).fetchone()[0]
            n = int(db.execute("DELETE FROM events WHERE source_id = ? AND seq <= ?", (source_id, seq)).rowcount)
            if n:
                self._bump("delivered", n)
        return Covered(n, None if newest is None else float(newest))

    @_guarded
    def unsend_range(self, source_id: str, boot: int, first: int, last: int) -> int:
        """A platform replay request: send `source_id`'s rows with `first` <= seq <= `last` again (this boot only).

        Rows not sent yet are left alone (they go out anyway); rows no longer held cannot be resent,
        and the status's `seq.floor` tells the platform so. Counted as `replayed`.
        """
        if boot != self.boot or last < first:
            return 0
        with self._tx(durable=False) as db:
            n = int(db.execute("UPDATE events SET sent_ts = NULL WHERE source_id = ? AND seq BETWEEN ? AND ? "
                               "AND sent_ts IS NOT NULL", (source_id, first, last)).rowcount)
            if n:
                self._bump("replayed", n)
        return n

    @_guarded
    def unsend_older_than(self, cutoff_ts: float) -> int:
        """End-to-end mode: rows sent before `cutoff_ts` and still not covered are sent again."""
        with self._tx(durable=False) as db:
            n = int(db.execute("UPDATE events SET sent_ts = NULL WHERE sent_ts IS NOT NULL AND sent_ts < ?",
                               (cutoff_ts,)).rowcount)
        return n

    @_guarded
    def unsend_overdue(self, now: float, timeout_s: float, max_factor: int = 8, *, hold_s: float = 0.0,
                       passed_ts: float | None = None) -> int:
        """End-to-end mode: resend rows the watermark has not covered `timeout_s` after their send.

        The wait doubles with each attempt (up to `max_factor` times the timeout), so a platform
        consumer that is down for hours is not flooded with the whole backlog every timeout.
        With `hold_s` > 0 an overdue row is resent only once the platform has covered a row sent no
        earlier than it (sent at `passed_ts` or before: this one, then, was lost on the way), or
        once it has waited `hold_s` since its send (a platform that is up but lost everything).
        """
        held = "" if hold_s <= 0 else " AND (sent_ts <= ? OR sent_ts < ? - ?)"
        args: tuple[float, ...] = (now, timeout_s, max_factor)
        if hold_s > 0:
            args += (float("-inf") if passed_ts is None else passed_ts, now, hold_s)
        with self._tx(durable=False) as db:
            n = int(db.execute(f"UPDATE events SET sent_ts = NULL WHERE {_OVERDUE}{held}", args).rowcount)  # noqa: S608
            if n:
                self._bump("resent", n)
        return n

    @_guarded
    def count_overdue(self, now: float, timeout_s: float, max_factor: int = 8) -> int:
        """End-to-end mode: rows past their resend timeout and still marked sent (after `unsend_overdue`
        with a hold: the resends it holds)."""
        return int(self._db.execute(f"SELECT COUNT(*) FROM events WHERE {_OVERDUE}",  # noqa: S608
                                    (now, timeout_s, max_factor)).fetchone()[0])

    @_guarded
    def purge_expired(self, now: float | None = None) -> int:
        """Delete events past their retention (counted as `expired`, and `expired.<kind>`)."""
        stamp = self._clock() if now is None else now
        with self._tx(durable=False) as db:
            kinds = db.execute("SELECT kind, COUNT(*) FROM events WHERE expires_ts IS NOT NULL AND expires_ts < ? "
                               "GROUP BY kind", (stamp,)).fetchall()
            n = 0
            if kinds:
                n = int(db.execute("DELETE FROM events WHERE expires_ts IS NOT NULL AND expires_ts < ?",
                                   (stamp,)).rowcount)
                self._bump("expired", n)
                for kind, count in kinds:
                    self._bump(f"expired.{kind}", int(count))
        if n:
            log.warning("purged %d expired event(s) from the outbox", n)
        return n

    # -- observability -------------------------------------------------------------------------
    @_guarded
    def depth(self) -> int:
        """Events not yet delivered."""
        return int(self._db.execute("SELECT n FROM tally").fetchone()[0])

    @_guarded
    def oldest_age_s(self) -> float | None:
        """Age of the oldest pending event in seconds, or None when empty."""
        row = self._db.execute("SELECT created_ts FROM events ORDER BY row_id LIMIT 1").fetchone()
        return None if row is None else max(0.0, self._clock() - float(row[0]))

    @_guarded
    def counters(self) -> dict[str, int]:
        """Lifetime counters (delivered, expired[.kind], dropped_quota[.kind], resent, full_errors, ...)."""
        return {str(k): int(v) for k, v in self._db.execute("SELECT name, value FROM counters")}

    @_guarded
    def last_seq(self) -> dict[str, int]:
        """The last sequence number assigned per source."""
        return {str(k): int(v) for k, v in self._db.execute("SELECT source_id, last_seq FROM sources")}

    @_guarded
    def seq_floor(self) -> dict[str, int]:
        """Per source, the lowest seq still held (last_seq + 1 when none is).

        Everything below the floor has left the outbox for good: delivered, dropped by the quota or
        expired. A platform missing a seq below the floor knows it will never come, and can close
        the gap (end-to-end mode needs that, or its watermark would stall on a dropped event).
        """
        out: dict[str, int] = {}
        for source, last in self.last_seq().items():
            row = self._db.execute("SELECT MIN(seq) FROM events WHERE source_id = ?", (source,)).fetchone()
            out[source] = last + 1 if row[0] is None else int(row[0])
        return out

    @_guarded
    def storage(self) -> StorageState:
        """Bytes used, the byte quota in force, the disk's free space and whether commits hit a full disk."""
        _, used = self._usage()
        try:
            free = _disk_free(self.path.parent)
        except OSError:
            free = -1
        row = self._db.execute("SELECT value FROM meta WHERE key='full_since'").fetchone()
        since = None if row is None else float(row[0])
        n = int(self._db.execute("SELECT n FROM tally").fetchone()[0])
        quota = self._quota_bytes(self._file_bytes())
        files = state_files((self.path, *self.limits.state_databases))
        now = self._clock()
        rate_row = self._db.execute("SELECT value FROM meta WHERE key='rate'").fetchone()
        window = RateWindow.decode(None if rate_row is None else str(rate_row[0]), now)
        rate = window.rate_eps(now)
        # One more pending event costs its payload, topic and row overhead in the file; with a
        # backlog the file itself says it best.
        mean = window.bytes_per_event()
        per_event = used / n if n >= 200 else None if mean is None else mean + _ROW_OVERHEAD_BYTES
        outage = None
        if per_event is not None and free >= 0:
            events_room = max(self.limits.max_events - n, 0) * per_event
            free_room = free - self.limits.min_free_bytes - files.wal_headroom
            outage = outage_seconds(room_bytes=int(min(quota - used, events_room)), rate_eps=rate,
                                    outbox_bytes_per_event=per_event,
                                    other_bytes_per_event=self.limits.other_bytes_per_event,
                                    free_room_bytes=free_room if self.limits.other_bytes_per_event else None)
        full = since is not None or 0 <= free < FULL_FREE_BYTES
        return StorageState(used, quota, free, full, since, state_bytes=files.bytes,
                            wal_headroom_bytes=files.wal_headroom, reserve_bytes=self.limits.min_free_bytes,
                            rate_eps=rate, bytes_per_event=per_event, outage_s=outage)

    @_guarded
    def quota_state(self) -> QuotaState:
        """Whether the quota alarm is up: raised at the first drop, cleared below 90 % of the quota."""
        meta = dict(self._db.execute("SELECT key, value FROM meta WHERE key IN ('quota_since', 'quota_base')"))
        if "quota_since" not in meta:
            return QuotaState(False, None, 0)
        n, used = self._usage()
        if not self._pressed(n, used, self._quota_bytes(self._file_bytes())):
            return QuotaState(False, None, 0)  # drained (the next commit clears the record)
        total = int(self._db.execute("SELECT COALESCE((SELECT value FROM counters WHERE name = 'dropped_quota'), 0)"
                                     ).fetchone()[0])
        return QuotaState(True, float(meta["quota_since"]), total - int(float(meta.get("quota_base", 0))))

    @_guarded
    def put_status(self, component: str, body: dict[str, object]) -> None:
        """Record a component's status (capture writes it, the uplink publishes it)."""
        self._db.execute("INSERT OR REPLACE INTO status(component, updated_ts, body) VALUES(?,?,?)",
                         (component, self._clock(), json.dumps(body, sort_keys=True)))

    @_guarded
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
