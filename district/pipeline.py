"""The transport-independent ingest core: parse → commit (retrying) → acknowledge → watermarks.

The MQTT and AMQP workers hand it batches of messages and a way to publish; it never acknowledges a
message itself. `commit()` returns only once the batch is committed (or the worker is stopping), so
the caller acknowledges strictly after the commit; watermarks are computed and published after that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import psycopg

from district.config import DistrictConfig
from district.errors import DatabaseError
from district.messages import GatewayKey, StatusRow, parse
from district.store import Store, WriteResult
from district.watermarks import ack_body, advance, apply_statuses, due_replays, marks_of, stalled_keys
from edge.backoff import Backoff
from edge.compat import UTC

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message as the transport received it; `tag` is what the transport needs to acknowledge it."""

    topic: str
    payload: bytes
    tag: object
    received: float


class Publisher(Protocol):
    """How the core sends watermarks and replay requests back towards the gateways."""

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        """Queue one QoS 1 message; False if it could not be queued (not connected)."""


@dataclass
class Stats:
    """Counters a worker logs and tests read."""

    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    db_errors: int = 0
    marks_published: int = 0
    replays_sent: int = 0
    peak_unacked: int = 0  # most messages held unacknowledged at once
    peak_unacked_db_down: int = 0  # the same while PostgreSQL was away (what Receive Maximum bounds)


class IngestCore:
    """Shared by the MQTT and AMQP workers: one Store, the watermark bookkeeping, the periodic sweep."""

    def __init__(self, cfg: DistrictConfig, publisher: Publisher, stop: threading.Event) -> None:
        self.cfg = cfg
        self.prefix = cfg.mqtt.topic_prefix
        self.store = Store(cfg.database, cfg.ingest)
        self.publisher = publisher
        self.stop = stop
        self.stats = Stats()
        self._backoff = Backoff(cfg.database.backoff)
        self._dirty: set[GatewayKey] = set()
        self._republish_all = False
        self._next_sweep = 0.0
        self._db_down_since: float | None = None
        self._next_stats = 0.0
        self._next_advance = 0.0
        self._touched: set[int] = set()  # source ids (marks.src)
        self._statuses: list[StatusRow] = []
        self._logged: Stats | None = None

    def commit(self, batch: Sequence[Incoming]) -> WriteResult | None:
        """Parse and commit `batch`, retrying with backoff while PostgreSQL is away; None if stopped first."""
        parsed = [parse(m.topic, m.payload, prefix=self.prefix, max_bytes=self.cfg.ingest.max_payload_bytes)
                  for m in batch]
        received_at = datetime.fromtimestamp(min(m.received for m in batch), UTC)
        while not self.stop.is_set():
            try:
                result = self.store.write(parsed, received_at)
            except DatabaseError as exc:
                self.stats.db_errors += 1
                if self._db_down_since is None:
                    self._db_down_since = time.monotonic()
                    self.stats.peak_unacked_db_down = 0
                    log.warning("cannot commit a batch of %d messages, holding them unacknowledged: %s",
                                len(batch), exc)
                self.stop.wait(self._backoff.next_delay())
                continue
            if self._db_down_since is not None:
                log.warning("PostgreSQL is back after %.1f s (at most %d messages were held unacknowledged)",
                            time.monotonic() - self._db_down_since, self.stats.peak_unacked_db_down)
                self._db_down_since = None
            self._backoff.reset()
            self.stats.batches += 1
            self.stats.received += len(batch)
            self.stats.inserted += result.inserted
            self.stats.duplicates += result.duplicates
            self.stats.rejected += result.rejected
            return result
        return None

    def note_unacked(self, held: int) -> None:
        """The transport's count of messages held unacknowledged right now (any thread)."""
        self.stats.peak_unacked = max(self.stats.peak_unacked, held)
        if self._db_down_since is not None:
            self.stats.peak_unacked_db_down = max(self.stats.peak_unacked_db_down, held)

    def after_commit(self, result: WriteResult) -> None:
        """Note what the batch touched; advance and publish the marks if `mark_interval_ms` has passed."""
        self._touched |= result.touched
        self._statuses.extend(result.statuses)
        self._dirty |= result.duplicate_gateways
        if time.monotonic() >= self._next_advance:
            self.advance_now()

    def advance_now(self) -> None:
        """Advance the marks of every source touched since the last time, and publish those that moved."""
        self._next_advance = time.monotonic() + self.cfg.ingest.mark_interval_ms / 1000.0
        if not self._touched and not self._statuses:
            return
        touched, statuses = self._touched, self._statuses
        self._touched, self._statuses = set(), []
        try:
            conn = self.store.connection()
            keys = set(touched)
            if statuses:
                keys |= apply_statuses(conn, statuses)
            self._dirty |= advance(conn, keys)
            self._dirty |= {s.gw for s in statuses if s.floors}
        except (DatabaseError, psycopg.Error) as exc:
            # Committed runs stay in seq_runs: the sweep (stalled_keys) advances them later.
            log.warning("cannot advance watermarks now (the sweep will): %s", exc)
            self.store.close()
            return
        self.publish_marks()

    def request_republish(self) -> None:
        """After a (re)connect: the broker may have lost the retained marks; publish every gateway's again."""
        self._republish_all = True

    def publish_marks(self) -> None:
        """Publish the retained watermark of every dirty gateway."""
        try:
            conn = self.store.connection()
            if self._republish_all:
                rows = conn.execute("SELECT DISTINCT district, community, gateway FROM marks").fetchall()
                conn.rollback()
                self._dirty |= {GatewayKey(str(d), str(c), str(g)) for d, c, g in rows}
                self._republish_all = False
            if not self._dirty:
                return
            dirty, self._dirty = self._dirty, set()
            marks = marks_of(conn, dirty)
        except (DatabaseError, psycopg.Error) as exc:
            log.warning("cannot read watermarks now: %s", exc)
            self.store.close()
            return
        for gw, (boot, per_source) in marks.items():
            if self.publisher.publish(f"{gw.base(self.prefix)}/ack", ack_body(boot, per_source), retain=True):
                self.stats.marks_published += 1
            else:
                self._dirty.add(gw)

    def tick(self, now: float) -> None:
        """Every `sweep_s`: advance marks a dead worker left behind, and send due replay requests."""
        if now >= self._next_stats:
            self._next_stats = now + 2.0
            if self._logged != self.stats:
                log.info("ingest %s", self.stats)
                self._logged = Stats(**vars(self.stats))
        if now >= self._next_advance:
            self.advance_now()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.cfg.ingest.sweep_s
        try:
            conn = self.store.connection()
            self._dirty |= advance(conn, stalled_keys(conn))
            replays = due_replays(conn, self.cfg.ingest.gap_grace_s, self.cfg.ingest.replay_interval_s)
        except (DatabaseError, psycopg.Error) as exc:
            log.debug("sweep skipped: %s", exc)
            self.store.close()
            return
        self.publish_marks()
        for rq in replays:
            log.warning("gap in %s source %s boot %d: seq %d..%d missing; asking the gateway to replay them",
                        rq.gw.base(self.prefix), rq.source, rq.boot, rq.first, rq.last)
            if self.publisher.publish(f"{rq.gw.base(self.prefix)}/replay", rq.body(), retain=False):
                self.stats.replays_sent += 1

    def close(self) -> None:
        """Close the database connection."""
        self.store.close()
