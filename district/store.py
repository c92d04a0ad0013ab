"""The idempotent loader: one transaction per batch, COPY into a stage, INSERT … ON CONFLICT DO NOTHING.

A batch holds events, statuses and rejects. Events are copied into a temporary stage table and moved
into the partitioned `events` table with `ON CONFLICT (event_id) DO NOTHING`, so a resent or
redelivered event changes nothing. The seq runs of the batch go into `seq_runs` in the same
transaction, which is what the watermark is later computed from: a mark never covers an event that
is not committed.

Connection loss raises DatabaseError and leaves nothing half-done (the caller keeps the batch and
retries, unacknowledged). A row PostgreSQL itself refuses (a data error the validator did not
foresee) does not stall ingest: the batch is retried row by row and the refused rows become rejects.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper

from district.cases import record_cases
from district.config import DatabaseConfig, IngestConfig
from district.db import connect
from district.errors import DatabaseError
from district.messages import EventRow, GatewayKey, Parsed, Reject, StatusRow
from district.partitions import PartitionCache, uuid7_day
from district.watermarks import SourceKey
from edge.compat import UTC

log = logging.getLogger(__name__)

_EVENT_COLUMNS = ("event_id, ts, district, community, gateway, source, boot, seq, kind, subject_type, "
                  "subject_pseudonym, key_id, payload, received_at")
# Built once from constants (no input reaches them).
_CREATE_STAGE = f"CREATE TEMP TABLE IF NOT EXISTS stage AS SELECT {_EVENT_COLUMNS} FROM events WITH NO DATA"  # noqa: S608
_MOVE_STAGE = (f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM stage "  # noqa: S608
               "ON CONFLICT (event_id) DO NOTHING")
_EVENT_TYPES = ("uuid", "timestamptz", "text", "text", "text", "text", "int8", "int8", "text", "text", "text", "text",
                "jsonb", "timestamptz")
_RUN_TYPES = ("text", "text", "text", "text", "int8", "int8", "int8")
Conn = psycopg.Connection[tuple[object, ...]]


@dataclass
class WriteResult:
    """What one committed batch did."""

    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    statuses: list[StatusRow] = field(default_factory=list)
    touched: set[SourceKey] = field(default_factory=set)
    duplicate_gateways: set[GatewayKey] = field(default_factory=set)


def seq_runs(rows: Sequence[EventRow]) -> list[tuple[SourceKey, int, int]]:
    """Maximal runs of consecutive seqs per (gateway, source, boot) in `rows`."""
    by_key: dict[SourceKey, set[int]] = defaultdict(set)
    for r in rows:
        by_key[SourceKey(r.gw, r.source, r.boot)].add(r.seq)
    out = []
    for key, seqs in by_key.items():
        ordered = sorted(seqs)
        lo = prev = ordered[0]
        for s in ordered[1:]:
            if s != prev + 1:
                out.append((key, lo, prev))
                lo = s
            prev = s
        out.append((key, lo, prev))
    return out


class _RawJsonb(str):
    """JSON text that is already valid (the validator parsed it): sent to jsonb as is, not re-encoded."""


class _JsonbTextBinaryDumper(Dumper):
    """Binary jsonb is a version byte (1) and the JSON text: no json.dumps of a str into a JSON string."""

    format = pq.Format.BINARY

    def dump(self, obj: object) -> bytes:
        return b"\x01" + str(obj).encode("utf-8")


def jsonb_passthrough(conn: Conn) -> None:
    """Make binary COPY send `str` values to jsonb columns as the JSON text they are.

    COPY … (FORMAT BINARY) with set_types() looks dumpers up by column type, so registering this one
    for jsonb's oid is what the loader's COPY uses; nothing else on the connection changes.
    """
    info = conn.adapters.types["jsonb"]
    assert info is not None

    class _Dumper(_JsonbTextBinaryDumper):
        oid = info.oid

    conn.adapters.register_dumper(_RawJsonb, _Dumper)


class Store:
    """Owns one PostgreSQL connection and writes batches through it."""

    def __init__(self, db: DatabaseConfig, ingest: IngestConfig) -> None:
        self.db_cfg = db
        self.cfg = ingest
        self.partitions = PartitionCache()
        self._conn: Conn | None = None
        self._duplicates_likely = False
        self._stage_batches = 0

    # -- connection ------------------------------------------------------------------------------
    def connection(self) -> Conn:
        """The open connection (reconnecting if needed), with its temporary stage table."""
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self.close()
        conn = connect(self.db_cfg.dsn, timeout_s=self.db_cfg.connect_timeout_s)
        try:
            jsonb_passthrough(conn)
            conn.execute("SET synchronous_commit = on")
            conn.execute(_CREATE_STAGE)
            conn.commit()
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseError(f"cannot prepare the ingest session: {exc}") from exc
        self.partitions.forget()  # a new server (or a restored one) may lack partitions we knew of
        self._conn = conn
        return conn

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    # -- batches ---------------------------------------------------------------------------------
    def write(self, items: Sequence[Parsed], received_at: datetime | None = None) -> WriteResult:
        """Commit one batch; raise DatabaseError (nothing committed) if PostgreSQL is unreachable."""
        now = received_at or datetime.now(UTC)
        events, statuses, rejects = self._split(items, now)
        try:
            conn = self.connection()
            self.partitions.ensure(conn, {uuid7_day(e.event_id) for e in events})
            try:
                result = self._write_tx(conn, events, statuses, rejects, now)
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                log.warning("a batch of %d events was refused (%s); retrying it row by row", len(events),
                            exc.sqlstate)
                result = self._write_rows(conn, events, statuses, rejects, now)
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseError(f"PostgreSQL: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") \
                from exc
        except psycopg.InterfaceError as exc:
            self.close()
            raise DatabaseError(f"PostgreSQL connection lost: {exc}") from exc
        return result

    def _split(self, items: Sequence[Parsed], now: datetime) -> tuple[list[EventRow], list[StatusRow], list[Reject]]:
        lo = (now - timedelta(days=self.cfg.accept_past_days)).date()
        hi = (now + timedelta(days=self.cfg.accept_future_days)).date()
        events, statuses, rejects = [], [], []
        for it in items:
            if isinstance(it, EventRow):
                day = uuid7_day(it.event_id)
                if lo <= day <= hi:
                    events.append(it)
                else:
                    # A partition per claimed day would let one bad clock (or a forger) create thousands.
                    rejects.append(Reject(f"{it.gw.base('*')}/events/{it.kind}",
                                          f"event_id time ({day}) is outside the accepted window {lo}..{hi}",
                                          len(it.payload), ""))
            elif isinstance(it, StatusRow):
                statuses.append(it)
            else:
                rejects.append(it)
        return events, statuses, rejects

    def _write_tx(self, conn: Conn, events: Sequence[EventRow], statuses: Sequence[StatusRow],
                  rejects: Sequence[Reject], now: datetime) -> WriteResult:
        result = WriteResult(rejected=len(rejects), statuses=list(statuses))
        with conn.transaction(), conn.cursor() as cur:
            if events:
                result.inserted, result.duplicates = self._load(conn, cur, events, now)
                record_cases(cur, events, now)  # alarms become cases in this same transaction
                runs = seq_runs(events)
                with cur.copy("COPY seq_runs (district, community, gateway, source, boot, lo, hi) FROM STDIN "
                              "(FORMAT BINARY)") as cp:
                    cp.set_types(_RUN_TYPES)
                    for key, lo, hi in runs:
                        cp.write_row((key.gw.district, key.gw.community, key.gw.gateway, key.source, key.boot, lo, hi))
                result.touched = {k for k, _, _ in runs}
                if result.duplicates:
                    # A resend means the gateway still holds what we already have: its watermark is
                    # behind or was lost, so publish it again even if it does not move.
                    result.duplicate_gateways = {e.gw for e in events}
            if rejects:
                cur.executemany("INSERT INTO rejects (received_at, topic, reason, size, payload_sha256) "
                                "VALUES (%s, %s, %s, %s, %s)",
                                [(now, r.topic, r.reason[:500], r.size, r.payload_sha256) for r in rejects])
            if statuses:
                cur.executemany(
                    "INSERT INTO gateway_status (district, community, gateway, received_at, online, boot, "
                    "outbox_depth, oldest_pending_age_s, alarms, models, audit_seq, audit_hash, body) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(s.gw.district, s.gw.community, s.gw.gateway, now, s.online, s.boot, s.outbox_depth,
                      s.oldest_pending_age_s, list(s.alarms), s.models, s.audit_seq, s.audit_hash, s.body)
                     for s in statuses])
        return result

    def _copy(self, cur: psycopg.Cursor[tuple[object, ...]], table: str, events: Sequence[EventRow],
              now: datetime) -> None:
        with cur.copy(f"COPY {table} ({_EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(_EVENT_TYPES)
            for e in events:
                cp.write_row((e.event_id, e.ts, e.gw.district, e.gw.community, e.gw.gateway, e.source, e.boot, e.seq,
                              e.kind, e.subject_type, e.subject_pseudonym, e.key_id, e.payload, now))

    def _load(self, conn: Conn, cur: psycopg.Cursor[tuple[object, ...]], events: Sequence[EventRow],
              now: datetime) -> tuple[int, int]:
        """(inserted, duplicates). Fast path: a binary COPY straight into `events`, which is all a batch
        of new events needs. If any event_id is already there (a resend, a redelivery), PostgreSQL
        refuses the whole COPY; back at the savepoint, the batch goes through a stage table and
        INSERT … ON CONFLICT (event_id) DO NOTHING instead. Either way each event_id is stored once."""
        if not self._duplicates_likely:
            try:
                with conn.transaction():
                    self._copy(cur, "events", events, now)
                return len(events), 0
            except psycopg.errors.UniqueViolation:
                pass
        self._copy(cur, "stage", events, now)
        cur.execute(_MOVE_STAGE)
        inserted = max(cur.rowcount, 0)
        cur.execute("TRUNCATE stage")
        # After a duplicate, more usually follow (a gateway resending its backlog): take the stage
        # path for a while rather than paying a failed COPY per batch.
        self._duplicates_likely = inserted < len(events) and self._stage_batches < 20
        self._stage_batches = self._stage_batches + 1 if self._duplicates_likely else 0
        return inserted, len(events) - inserted

    def _write_rows(self, conn: Conn, events: Sequence[EventRow], statuses: Sequence[StatusRow],
                    rejects: Sequence[Reject], now: datetime) -> WriteResult:
        """The slow path after a refused batch: each row alone; refused ones become rejects."""
        good_events: list[EventRow] = []
        good_statuses: list[StatusRow] = []
        refused = list(rejects)
        for e in events:
            try:
                self._write_tx(conn, [e], [], [], now)
                good_events.append(e)
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                refused.append(Reject(f"{e.gw.base('*')}/events/{e.kind}",
                                      f"PostgreSQL refused the event (SQLSTATE {exc.sqlstate})",
                                      len(e.payload), ""))
        for s in statuses:
            try:
                self._write_tx(conn, [], [s], [], now)
                good_statuses.append(s)
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                refused.append(Reject(f"{s.gw.base('*')}/status", f"PostgreSQL refused the status "
                                      f"(SQLSTATE {exc.sqlstate})", len(s.body), ""))
        # Single-row writes above are already committed (idempotent); one more for the rejects and
        # the bookkeeping, so the result covers the whole batch.
        result = self._write_tx(conn, [], [], refused, now)
        result.statuses = good_statuses
        runs = seq_runs(good_events)
        result.touched = {k for k, _, _ in runs}
        result.duplicate_gateways = {e.gw for e in good_events}
        return result
