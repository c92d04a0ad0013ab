"""The bridge's PostgreSQL side: the watch-hit cursor, the notification outbox, subscriptions, state.

The cursor reads `watch_hit` alarms by `received_at`. Ingest workers commit batches in parallel,
so arrival times do not commit in order: each scan looks back `lookback_s` behind the cursor and
skips events already in the outbox (which is unique by event id). A hit is therefore enqueued
exactly once, however often it is scanned, and its NotificationID is fixed when it is enqueued.

A row is `pending` until the upper platform's ResponseStatusObject for its NotificationID says 0;
then `delivered`. A refusal or an outage puts it back with a backoff (same id, same body); after
`max_attempts` it is `dead`. A body the guard refuses is `refused` and is never sent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from district.config import ViidConfig
from district.viid import protocol as p
from district.viid.guard import GuardRefusedError, check_outgoing
from district.viid.ids import SubType, object_id, sequence_id
from district.viid.notify import DeviceState, WatchHit, disposition_object, report_object
from edge.compat import UTC

log = logging.getLogger(__name__)
Conn = psycopg.Connection[tuple[Any, ...]]
_CURSOR = "watch_hit"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One pending notification."""

    id: int
    kind: str
    notification_id: str
    url: str
    body: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription the upper platform placed with us."""

    subscribe_id: str
    details: tuple[str, ...]
    resource_uri: str
    receive_addr: str
    title: str = ""
    applicant: str = ""
    begin_at: datetime | None = None
    end_at: datetime | None = None
    report_interval_s: float | None = None


class Outbox:
    """All the bridge's statements, over one connection from `connect` (an autocommit one), kept open.

    The bridge's loop and our subscription endpoint share it under a lock: the endpoint's calls are
    rare and short. A connection that fails is dropped and the next call opens a new one.
    """

    def __init__(self, cfg: ViidConfig, connect: Callable[[], Conn]) -> None:
        self.cfg = cfg
        self.tz = ZoneInfo(cfg.timezone)
        self._connect = connect
        self._lock = threading.Lock()
        self._conn: Conn | None = None

    @contextmanager
    def _session(self) -> Iterator[Conn]:
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            try:
                yield self._conn
            except psycopg.OperationalError:
                self._drop()
                raise

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the connection (the next call would open another)."""
        with self._lock:
            self._drop()

    # -- watch hits → disposition notifications ----------------------------------------------------
    def collect_watch_hits(self, limit: int = 500) -> int:
        """Enqueue the watch_hit alarms not yet in the outbox; return how many rows were made."""
        made = 0
        with self._session() as conn, conn.transaction():
            if self._pending(conn) >= self.cfg.max_outbox:
                log.warning("VIID outbox holds %d pending notifications: not reading more watch hits",
                            self.cfg.max_outbox)
                return 0
            row = conn.execute("SELECT received_at FROM viid_cursor WHERE name = %s FOR UPDATE", (_CURSOR,)).fetchone()
            since = (row[0] if row else _EPOCH) - timedelta(seconds=self.cfg.lookback_s)
            rows = conn.execute(
                "SELECT e.event_id, e.ts, e.district, e.community, e.gateway, e.payload, e.received_at FROM events e "
                "WHERE e.kind = 'alarm' AND (e.payload -> 'attrs' ->> 'code') = 'watch_hit' AND e.received_at > %s "
                "AND NOT EXISTS (SELECT 1 FROM viid_outbox o WHERE o.event_id = e.event_id) "
                "ORDER BY e.received_at, e.event_id LIMIT %s", (since, limit)).fetchall()
            high = row[0] if row else _EPOCH
            for event_id, ts, d, c, g, payload, received_at in rows:
                hit = WatchHit(event_id, ts, f"{d}/{c}/{g}", payload.get("attrs") or {}, payload.get("links") or [])
                made += self._enqueue_hit(conn, hit)
                high = max(high, received_at)
            conn.execute("INSERT INTO viid_cursor (name, received_at) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET "
                         "received_at = greatest(viid_cursor.received_at, excluded.received_at), updated_at = now()",
                         (_CURSOR, high))
        return made

    def _enqueue_hit(self, conn: Conn, hit: WatchHit) -> int:
        url = self.cfg.server_url.rstrip("/") + p.DISPOSITION_NOTIFICATIONS
        for bump in range(100):
            nid = object_id(self.cfg.device_id, SubType.DISPOSITION_NOTIFICATION, hit.event_id, self.tz, bump)
            obj = disposition_object(hit, self.cfg, self.tz, nid)
            state, error = "pending", None
            try:
                check_outgoing(obj)
            except GuardRefusedError as exc:
                state, error = "refused", str(exc)
                log.warning("VIID: watch hit %s not sent: %s", hit.event_id, exc)
            try:
                with conn.transaction():  # a savepoint: an id collision must not undo the batch
                    cur = conn.execute(
                        "INSERT INTO viid_outbox (kind, notification_id, event_id, url, body, state, last_error) "
                        "VALUES ('disposition', %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
                        (nid, hit.event_id, url, Jsonb(obj), state, error))
            except psycopg.errors.UniqueViolation:
                continue  # another event took this NotificationID: the next serial
            return cur.rowcount
        raise RuntimeError(f"no free NotificationID for event {hit.event_id} after 100 serials")

    # -- subscriptions ---------------------------------------------------------------------------
    def upsert_subscription(self, sub: Subscription) -> None:
        """Create or replace a subscription (active, reported at once)."""
        with self._session() as conn:
            conn.execute(
                "INSERT INTO viid_subscriptions (subscribe_id, details, resource_uri, receive_addr, title, applicant, "
                "begin_at, end_at, report_interval_s) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (subscribe_id) DO UPDATE SET details = excluded.details, resource_uri = "
                "excluded.resource_uri, receive_addr = excluded.receive_addr, title = excluded.title, applicant = "
                "excluded.applicant, begin_at = excluded.begin_at, end_at = excluded.end_at, report_interval_s = "
                "excluded.report_interval_s, status = 0, updated_at = now(), last_report_at = NULL",
                (sub.subscribe_id, list(sub.details), sub.resource_uri, sub.receive_addr, sub.title, sub.applicant,
                 sub.begin_at, sub.end_at, sub.report_interval_s))

    def cancel_subscriptions(self, ids: Iterable[str]) -> list[str]:
        """Cancel; pending reports for them are dropped (nobody wants them now). Returns the ids known."""
        ids = list(ids)
        with self._session() as conn, conn.transaction():
            known = [str(r[0]) for r in conn.execute(
                "UPDATE viid_subscriptions SET status = 1, updated_at = now() WHERE subscribe_id = ANY(%s) "
                "RETURNING subscribe_id", (ids,)).fetchall()]
            conn.execute("DELETE FROM viid_outbox WHERE state = 'pending' AND subscribe_id = ANY(%s)", (ids,))
        return known

    def enqueue_reports(self, now: datetime | None = None) -> int:
        """Expire ended subscriptions; queue a report for each active one that is due.

        One report per subscription is pending at most: while the receiver does not acknowledge it,
        it is retried under its own id, and no newer snapshot piles up behind it.
        """
        now = now or datetime.now(UTC)
        made = 0
        with self._session() as conn, conn.transaction():
            conn.execute("UPDATE viid_subscriptions SET status = 2, updated_at = now() "
                         "WHERE status = 0 AND end_at IS NOT NULL AND end_at < %s", (now,))
            if self._pending(conn) >= self.cfg.max_outbox:
                return 0
            due = conn.execute(
                "SELECT subscribe_id, details, resource_uri, receive_addr FROM viid_subscriptions s WHERE status = 0 "
                "AND (begin_at IS NULL OR begin_at <= %s) AND (last_report_at IS NULL OR last_report_at + "
                "make_interval(secs => coalesce(report_interval_s, %s)) <= %s) AND NOT EXISTS (SELECT 1 FROM "
                "viid_outbox o WHERE o.subscribe_id = s.subscribe_id AND o.state = 'pending') FOR UPDATE OF s",
                (now, self.cfg.report_interval_s, now)).fetchall()
            if not due:
                return 0
            devices = self._device_states(conn, now)
            for sid, details, resource_uri, receive_addr in due:
                seq = int(conn.execute("SELECT nextval('viid_outbox_id_seq')").fetchone()[0])  # type: ignore[index]
                nid = sequence_id(self.cfg.device_id, SubType.SUBSCRIBE_NOTIFICATION, now, seq, self.tz)
                obj = report_object(sid, details, resource_uri, devices, cfg=self.cfg, tz=self.tz, notification_id=nid,
                                    now=now)
                state, error = "pending", None
                try:
                    check_outgoing(obj)
                except GuardRefusedError as exc:
                    state, error = "refused", str(exc)
                conn.execute("INSERT INTO viid_outbox (id, kind, notification_id, subscribe_id, url, body, state, "
                             "last_error) VALUES (%s, 'subscribe', %s, %s, %s, %s, %s, %s)",
                             (seq, nid, sid, receive_addr, Jsonb(obj), state, error))
                conn.execute("UPDATE viid_subscriptions SET last_report_at = %s WHERE subscribe_id = %s", (now, sid))
                made += 1
        return made

    def _device_states(self, conn: Conn, now: datetime) -> list[DeviceState]:
        latest = {f"{r[0]}/{r[1]}/{r[2]}": (bool(r[3]), r[4]) for r in conn.execute(
            "SELECT district, community, gateway, online, received_at FROM gateway_latest").fetchall()}
        out = []
        stale = now - timedelta(seconds=self.cfg.offline_after_s)
        for key, dev in sorted(self.cfg.devices.items()):
            online, seen = latest.get(key, (False, None))
            out.append(DeviceState(key, dev, online and seen is not None and seen >= stale))
        return out

    # -- delivery --------------------------------------------------------------------------------
    def due(self, limit: int) -> list[OutboxRow]:
        """Pending rows whose time has come, oldest first (alarms before reports at equal times)."""
        with self._session() as conn:
            rows = conn.execute(
                "SELECT id, kind, notification_id, url, body, attempts FROM viid_outbox WHERE state = 'pending' "
                "AND next_at <= now() ORDER BY (kind = 'subscribe'), next_at, id LIMIT %s", (limit,)).fetchall()
        return [OutboxRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), dict(r[4]), int(r[5])) for r in rows]

    def delivered(self, ids: Sequence[int]) -> None:
        """Acknowledged with StatusCode 0."""
        if ids:
            with self._session() as conn:
                conn.execute("UPDATE viid_outbox SET state = 'delivered', delivered_at = now(), attempts = attempts "
                             "+ 1, last_error = NULL WHERE id = ANY(%s) AND state = 'pending'", (list(ids),))

    def failed(self, ids: Sequence[int], error: str, delay_s: Callable[[int], float]) -> int:
        """Not acknowledged: back off (same id, same body), or `dead` after max_attempts; returns deaths."""
        dead = 0
        if not ids:
            return 0
        with self._session() as conn, conn.transaction():
            for rid, attempts in conn.execute("SELECT id, attempts FROM viid_outbox WHERE id = ANY(%s) FOR UPDATE",
                                              (list(ids),)).fetchall():
                n = int(attempts) + 1
                if n >= self.cfg.max_attempts:
                    conn.execute("UPDATE viid_outbox SET state = 'dead', attempts = %s, last_error = %s WHERE id = %s",
                                 (n, error[:500], rid))
                    dead += 1
                else:
                    conn.execute("UPDATE viid_outbox SET attempts = %s, last_error = %s, next_at = now() + "
                                 "make_interval(secs => %s) WHERE id = %s", (n, error[:500], delay_s(n), rid))
        return dead

    def retry_now(self) -> None:
        """Make every pending row due (after a re-registration: the backlog goes at once)."""
        with self._session() as conn:
            conn.execute("UPDATE viid_outbox SET next_at = now() WHERE state = 'pending' AND next_at > now()")

    def prune(self) -> int:
        """Delete delivered, refused and dead rows older than keep_days (pending rows are never pruned)."""
        with self._session() as conn:
            cur = conn.execute("DELETE FROM viid_outbox WHERE state <> 'pending' AND created_at < now() - "
                               "make_interval(days => %s)", (self.cfg.keep_days,))
            return cur.rowcount

    @staticmethod
    def _pending(conn: Conn) -> int:
        return int(conn.execute("SELECT count(*) FROM viid_outbox WHERE state = 'pending'").fetchone()[0])  # type: ignore[index]

    # -- state -----------------------------------------------------------------------------------
    def set_state(self, **values: Any) -> None:
        """Record state keys (registered, last keepalive, clock offset …) for `viid status`."""
        with self._session() as conn:
            for k, v in values.items():
                conn.execute("INSERT INTO viid_state (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                             "SET value = excluded.value, updated_at = now()", (k, Jsonb(v)))

    def status(self) -> dict[str, Any]:
        """State keys, outbox counts by kind and state, subscriptions by status, the cursor."""
        with self._session() as conn:
            state = {str(k): v for k, v in conn.execute("SELECT key, value FROM viid_state ORDER BY key").fetchall()}
            counts: dict[str, dict[str, int]] = {}
            for kind, st, n in conn.execute("SELECT kind, state, count(*) FROM viid_outbox GROUP BY 1, 2").fetchall():
                counts.setdefault(str(kind), {})[str(st)] = int(n)
            subs = {str(s): int(n) for s, n in conn.execute(
                "SELECT CASE status WHEN 0 THEN 'active' WHEN 1 THEN 'cancelled' ELSE 'expired' END, count(*) "
                "FROM viid_subscriptions GROUP BY 1").fetchall()}
            cur = conn.execute("SELECT received_at FROM viid_cursor WHERE name = %s", (_CURSOR,)).fetchone()
        return {"state": state, "outbox": counts, "subscriptions": subs,
                "cursor": cur[0].isoformat() if cur else None}

