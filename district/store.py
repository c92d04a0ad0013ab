"""The idempotent loader: one transaction per batch, COPY into a stage, INSERT … ON CONFLICT DO NOTHING.

A batch holds events, statuses and rejects. Events are copied into a temporary stage table and moved
into the partitioned `events` table with `ON CONFLICT (event_id) DO NOTHING`, so a resent or
redelivered event changes nothing. The seq runs of the batch go into `seq_runs` in the same
transaction, which is what the watermark is later computed from: a mark never covers an event that
is not committed. Runs are keyed by the source's integer id (`marks.src`, migration 0008) and each
event carries its gateway's integer id (`gateways.id`, migration 0010: the key of the gateway + time
index); the store caches both: a batch of new sources first gets its ids in a transaction of its own.

Connection loss raises DatabaseError and leaves nothing half-done (the caller keeps the batch and
retries, unacknowledged). A row PostgreSQL itself refuses (a data error the validator did not
foresee) does not stall ingest: the batch is retried row by row and the refused rows become rejects.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper

from district.cases import record_cases
from district.config import DatabaseConfig, IngestConfig
from district.db import connect
from district.errors import DatabaseError
from district.messages import EventRow, GatewayKey, Parsed, Reject, StatusRow
from district.partitions import PartitionCache
from district.watermarks import SourceKey, source_ids
from edge.compat import UTC

log = logging.getLogger(__name__)

_EVENT_COLUMNS = ("event_id, ts, district, community, gateway, source, boot, seq, kind, subject_type, "
                  "subject_pseudonym, key_id, payload, received_at, gateway_id")
# Built once from constants (no input reaches them).
# ON COMMIT DELETE ROWS: the stage empties itself at each commit, no TRUNCATE round trip per batch.
_CREATE_STAGE = (f"CREATE TEMP TABLE IF NOT EXISTS stage ON COMMIT DELETE ROWS AS SELECT {_EVENT_COLUMNS} "  # noqa: S608
                 "FROM events WITH NO DATA")
_MOVE_STAGE = (f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM stage "  # noqa: S608
               "ON CONFLICT (event_id) DO NOTHING")
_EVENT_TYPES = ("uuid", "timestamptz", "text", "text", "text", "text", "int8", "int8", "text", "text", "text", "text",
                "jsonb", "timestamptz", "int4")
# One statement with three arrays: one round trip (a COPY takes two). The arrays go as binary
# parameters (%b): measured 2.2 ms per 1000-event batch against 2.7-2.9 ms as text (docs/district.md §6).
_INSERT_RUNS = "INSERT INTO seq_runs (src, lo, hi) SELECT * FROM unnest(%b::int8[], %b::int8[], %b::int8[])"
# Source ids a store remembers; past this the cache starts over (a city has ~40k sources per boot).
_MAX_CACHED_SOURCES = 200_000
_DAY_MS = 86_400_000
_EPOCH_DAY = date(1970, 1, 1)
Conn = psycopg.Connection[tuple[object, ...]]


@dataclass
class WriteResult:
    """What one committed batch did."""

    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    statuses: list[StatusRow] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)  # the `marks.src` of every source with a new run
    duplicate_gateways: set[GatewayKey] = field(default_factory=set)


def gateway_ids(conn: Conn, keys: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
    """The `gateways.id` of each (district, community, gateway), creating the rows it lacks.

    Its own committed transaction, before any batch refers to the ids: an id a worker caches always
    names a row."""
    ordered = sorted(set(keys))
    if not ordered:
        return {}
    with conn.transaction():
        rows = conn.execute("SELECT o_district, o_community, o_gateway, o_id FROM gateway_ids(%s, %s, %s)",
                            ([k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered])).fetchall()
    return {(str(d), str(c), str(g)): int(str(i)) for d, c, g, i in rows}


def seq_runs(srcs: Sequence[int], seqs: Sequence[int]) -> list[tuple[int, int, int]]:
    """Maximal runs (src, lo, hi) of consecutive seqs per source id; `srcs[i]` is the source of `seqs[i]`.

    Plain ints and lists: this runs for every event of every batch, so no per-row objects."""
    by_src: dict[int, list[int]] = {}
    for src, seq in zip(srcs, seqs, strict=True):
        got = by_src.get(src)
        if got is None:
            by_src[src] = [seq]
        else:
            got.append(seq)
    out = []
    for src, got in by_src.items():
        got.sort()  # a batch mostly arrives in order: timsort's linear case
        lo = prev = got[0]
        for seq in got[1:]:
            if seq > prev + 1:
                out.append((src, lo, prev))
                lo = seq
            prev = seq
        out.append((src, lo, prev))
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
        # (district, community, gateway, source, boot) -> (marks.src, gateways.id)
        self._src: dict[tuple[str, str, str, str, int], tuple[int, int]] = {}
        self._one_by_one = False  # in _write_rows: every event through the stage

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
        self._src.clear()  # ... and source ids
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
        events, statuses, rejects, days = self._split(items, now)
        try:
            conn = self.connection()
            self.partitions.ensure(conn, days)
            srcs, gws = self._ids(conn, events)
            try:
                try:
                    result = self._write_tx(conn, events, statuses, rejects, now, srcs=srcs, gws=gws)
                except psycopg.errors.UniqueViolation:
                    if self._duplicates_likely:
                        raise  # not the fast path's COPY: something else refused the batch
                    # The fast path's COPY met an event already stored (a resend, a redelivery) and
                    # the transaction rolled back: again, through the stage.
                    self._duplicates_likely = True
                    result = self._write_tx(conn, events, statuses, rejects, now, srcs=srcs, gws=gws)
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                log.warning("a batch of %d events was refused (%s); retrying it row by row", len(events),
                            exc.sqlstate)
                result = self._write_rows(conn, events, statuses, rejects, now, srcs=srcs, gws=gws)
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseError(f"PostgreSQL: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") \
                from exc
        except psycopg.InterfaceError as exc:
            self.close()
            raise DatabaseError(f"PostgreSQL connection lost: {exc}") from exc
        return result

    def _ids(self, conn: Conn, events: Sequence[EventRow]) -> tuple[list[int], list[int]]:
        """The `marks.src` of each event's source and the `gateways.id` of its gateway, asking
        PostgreSQL only for sources not seen before (one dict lookup per event on the hot path)."""
        cache = self._src
        # Plain tuples of str: their hash and == run in C (a dataclass's are Python functions).
        keys = [(e.gw.district, e.gw.community, e.gw.gateway, e.source, e.boot) for e in events]
        missing = {k for k in keys if k not in cache}
        if missing:
            if len(cache) + len(missing) > _MAX_CACHED_SOURCES:
                cache.clear()
            gw = gateway_ids(conn, {k[:3] for k in missing})
            got = source_ids(conn, [SourceKey(GatewayKey(d, c, g), s, b) for d, c, g, s, b in missing])
            for key, src in got.items():
                gk = (key.gw.district, key.gw.community, key.gw.gateway)
                cache[(gk[0], gk[1], gk[2], key.source, key.boot)] = (src, gw[gk])
        ids = [cache[k] for k in keys]
        return [i[0] for i in ids], [i[1] for i in ids]

    def _split(self, items: Sequence[Parsed], now: datetime) \
            -> tuple[list[EventRow], list[StatusRow], list[Reject], set[date]]:
        """Events inside the accepted window, statuses, rejects, and the UTC days of the events."""
        lo = (now - timedelta(days=self.cfg.accept_past_days)).date()
        hi = (now + timedelta(days=self.cfg.accept_future_days)).date()
        # Day numbers since the epoch: an integer shift and division per event, not a datetime.
        lo_n, hi_n = (lo - _EPOCH_DAY).days, (hi - _EPOCH_DAY).days
        events, statuses, rejects = [], [], []
        days: set[int] = set()
        for it in items:
            if isinstance(it, EventRow):
                n = (it.event_id.int >> 80) // _DAY_MS  # a UUIDv7 starts with its Unix time in ms
                if lo_n <= n <= hi_n:
                    events.append(it)
                    days.add(n)
                else:
                    day = _EPOCH_DAY + timedelta(days=n)
                    # A partition per claimed day would let one bad clock (or a forger) create thousands.
                    rejects.append(Reject(f"{it.gw.base('*')}/events/{it.kind}",
                                          f"event_id time ({day}) is outside the accepted window {lo}..{hi}",
                                          len(it.payload), ""))
            elif isinstance(it, StatusRow):
                statuses.append(it)
            else:
                rejects.append(it)
        return events, statuses, rejects, {_EPOCH_DAY + timedelta(days=n) for n in days}

    def _write_tx(self, conn: Conn, events: Sequence[EventRow], statuses: Sequence[StatusRow],
                  rejects: Sequence[Reject], now: datetime, *, srcs: Sequence[int] = (),
                  gws: Sequence[int] = ()) -> WriteResult:
        """One transaction: events, their seq runs (`srcs[i]`, `gws[i]`: the source and gateway ids of
        `events[i]`), rejects, statuses."""
        result = WriteResult(rejected=len(rejects), statuses=list(statuses))
        with conn.transaction(), conn.cursor() as cur:
            if events:
                result.inserted, result.duplicates = self._load(conn, cur, events, gws, now)
                record_cases(cur, events, now)  # alarms become cases in this same transaction
                runs = seq_runs(srcs, [e.seq for e in events])
                cur.execute(_INSERT_RUNS, ([r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs]))
                result.touched = set(srcs)
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
              gws: Sequence[int], now: datetime) -> None:
        with cur.copy(f"COPY {table} ({_EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(_EVENT_TYPES)
            for e, gw in zip(events, gws, strict=True):
                cp.write_row((e.event_id, e.ts, e.gw.district, e.gw.community, e.gw.gateway, e.source, e.boot, e.seq,
                              e.kind, e.subject_type, e.subject_pseudonym, e.key_id, e.payload, now, gw))

    def _load(self, conn: Conn, cur: psycopg.Cursor[tuple[object, ...]], events: Sequence[EventRow],
              gws: Sequence[int], now: datetime) -> tuple[int, int]:
        """(inserted, duplicates). Fast path: a binary COPY straight into `events`, which is all a batch
        of new events needs. If any event_id is already there (a resend, a redelivery), PostgreSQL
        refuses the whole COPY with UniqueViolation, the transaction rolls back and write() runs it
        again with `_duplicates_likely` set: the batch goes through a stage table and INSERT … ON
        CONFLICT (event_id) DO NOTHING. Either way each event_id is stored once. (No savepoint around
        the COPY: it would cost two round trips on every batch to save a retry on the rare resent one.)"""
        if not self._duplicates_likely and not self._one_by_one:
            self._copy(cur, "events", events, gws, now)
            return len(events), 0
        self._copy(cur, "stage", events, gws, now)
        cur.execute(_MOVE_STAGE)
        inserted = max(cur.rowcount, 0)
        # After a duplicate, more usually follow (a gateway resending its backlog): take the stage
        # path for a while rather than paying a failed COPY per batch.
        self._duplicates_likely = inserted < len(events) and self._stage_batches < 20
        self._stage_batches = self._stage_batches + 1 if self._duplicates_likely else 0
        return inserted, len(events) - inserted

    def _write_rows(self, conn: Conn, events: Sequence[EventRow], statuses: Sequence[StatusRow],
                    rejects: Sequence[Reject], now: datetime, *, srcs: Sequence[int] = (),
                    gws: Sequence[int] = ()) -> WriteResult:
        """The slow path after a refused batch: each row alone; refused ones become rejects."""
        good_srcs: set[int] = set()
        good_statuses: list[StatusRow] = []
        refused = list(rejects)
        self._one_by_one = True  # a duplicate is not a refusal: the stage absorbs it
        try:
            for e, src, gw in zip(events, srcs, gws, strict=True):
                try:
                    self._write_tx(conn, [e], [], [], now, srcs=[src], gws=[gw])
                    good_srcs.add(src)
                except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                    refused.append(Reject(f"{e.gw.base('*')}/events/{e.kind}",
                                          f"PostgreSQL refused the event (SQLSTATE {exc.sqlstate})",
                                          len(e.payload), ""))
        finally:
            self._one_by_one = False
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
        result.touched = good_srcs
        result.duplicate_gateways = {e.gw for e, src in zip(events, srcs, strict=True) if src in good_srcs}
        return result
