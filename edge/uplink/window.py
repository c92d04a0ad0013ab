"""The in-flight window: which outbox rows go out next, which are in flight, which are acknowledged.

Up to `window` QoS 1 publishes are in flight at once. Rows are read through cursors: everything at
or below a cursor was published on this connection (or is in flight); `rewind()` sends the reader
back when rows must go out again (a rejected publish, an end-to-end resend, a new connection). With
a `backlog_rate`, two lanes: rows committed after the connection came up are "live" and go first;
older rows drain behind them through a token bucket at that rate.

A row leaves the outbox only once acknowledged: after its PUBACK it is deleted (or, in end-to-end
mode, marked sent until the platform's watermark covers it). An acknowledgement that cannot be
stored yet (a locked outbox) stays queued here and is stored on the next settle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.events import PRIORITY
from edge.outbox import Outbox
from edge.types import EventKind, OutboxRecord
from edge.uplink.config import UplinkConfig
from edge.uplink.session import reason_text
from edge.uplink.stats import UplinkStats

ALARM_PRIORITY = PRIORITY[EventKind.ALARM]

AckListener = Callable[[Sequence[OutboxRecord], float], None]
"""Called with the records the broker just acknowledged and the time of the acknowledgement."""


class _PackedProperties(Properties):
    """Publish properties packed once: paho packs a Properties object again on every publish."""

    def __init__(self, expiry_s: int) -> None:
        super().__init__(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self.MessageExpiryInterval = expiry_s
        packed = super().pack()  # type: ignore[no-untyped-call]
        object.__setattr__(self, "_packed", packed)  # Properties.__setattr__ only takes MQTT names

    def pack(self) -> bytes:
        """The bytes packed at construction."""
        packed: bytes = object.__getattribute__(self, "_packed")
        return packed


class InflightWindow:
    """Reads rows from the outbox into QoS 1 publishes and settles their acknowledgements."""

    def __init__(self, outbox: Outbox, cfg: UplinkConfig, stats: UplinkStats, *,
                 clock: Callable[[], float] = time.time, on_acked: AckListener | None = None) -> None:
        self.outbox = outbox
        self.cfg = cfg
        self.stats = stats
        self._clock = clock
        self._on_acked = on_acked
        self.inflight: dict[int, OutboxRecord] = {}  # mid -> record
        self.acked: list[OutboxRecord] = []
        self._nacked: list[OutboxRecord] = []
        self._cursor = 0
        self._live_cursor = 0
        self._live_from = 0
        self.more = True
        """The outbox may hold rows the cursors have not reached yet."""
        self.pause_until = 0.0
        """Monotonic time before which nothing is sent (after the broker rejected a publish)."""
        self._expired_seen = False
        self._props_cache: tuple[int, Properties] | None = None
        self._tokens = 0.0
        self._token_ts = clock()
        self._v5 = True  # set per connection: 3.1.1 has no message expiry
        self._urgent: set[int] = set()
        self._urgent_upto = 0
        """Every alarm row up to here was sent ahead on this connection (or is gone)."""

    # -- connection life ------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget what was in flight on the previous connection (it is read from the outbox again)."""
        self.inflight.clear()
        self.acked.clear()
        self._nacked.clear()

    def start_connection(self, v5: bool) -> None:
        """A new connection: rows committed from now on are live; read the outbox from its start."""
        self._v5 = v5
        self._live_from = self.outbox.newest_row_id()
        self.rewind()

    def rewind(self) -> None:
        """Read the outbox from its start again (after a rejected publish or an end-to-end resend)."""
        self._cursor = 0
        self._live_cursor = self._live_from
        self._urgent_upto = 0
        self.more = True

    def full(self) -> bool:
        """No room for another publish."""
        return len(self.inflight) >= self.cfg.window

    def idle(self) -> bool:
        """Nothing in flight and nothing acknowledged but unstored."""
        return not self.inflight and not self.acked

    # -- choosing rows --------------------------------------------------------------------------
    def _publish_props(self, expires_ts: float | None) -> tuple[Properties | None, bool]:
        if expires_ts is None:
            return None, True
        remaining = int(expires_ts - self._clock())
        if remaining <= 0:
            return None, False
        if not self._v5:
            return None, True  # 3.1.1 has no expiry: enforced locally by purge_expired
        # paho's Properties cost ~50 µs to build; consecutive rows mostly share the same remaining
        # lifetime in whole seconds, and paho only reads the object while packing it.
        if self._props_cache is None or self._props_cache[0] != remaining:
            self._props_cache = (remaining, _PackedProperties(remaining))
        return self._props_cache[1], True

    def _lane(self, after: int, limit: int, upto: int, exclude: set[int]) -> tuple[list[OutboxRecord], bool]:
        """Rows of (after, upto]; and whether the lane may hold more than were returned."""
        if limit <= 0 or after >= upto:
            return [], after < upto
        rows = self.outbox.pending_after(after, limit, upto=upto, exclude=exclude,
                                         unsent_only=self.cfg.ack_mode == "end_to_end")
        return rows, len(rows) >= limit

    def _candidates(self, room: int) -> list[OutboxRecord]:
        # In flight, or acknowledged but not stored yet (a settle that hit a locked outbox).
        exclude = {r.row_id for r in self.inflight.values()} | {r.row_id for r in self.acked}
        # Rows committed later have higher ids (AUTOINCREMENT), so everything up to `newest` that a
        # short answer did not return is published or in flight: the cursor may jump to `newest`.
        newest = self.outbox.newest_row_id()
        urgent: list[OutboxRecord] = []
        self._urgent = set()
        if self.cfg.alarms_first and self._urgent_upto < newest:
            # Alarms go out ahead of both lanes and move no lane cursor; the lanes skip them while in
            # flight and find them gone once acknowledged. Looked up only when rows were committed
            # since the last look (or after a rewind), so draining a backlog costs nothing more.
            urgent = self.outbox.pending_priority(ALARM_PRIORITY, self._urgent_upto, newest, room, exclude=exclude,
                                                  unsent_only=self.cfg.ack_mode == "end_to_end")
            self._urgent_upto = urgent[-1].row_id if len(urgent) >= room else newest
            self._urgent = {r.row_id for r in urgent}
            exclude |= self._urgent
            room -= len(urgent)
        return urgent + self._lanes(room, exclude, newest)

    def _lanes(self, room: int, exclude: set[int], newest: int) -> list[OutboxRecord]:
        if self.cfg.backlog_rate is None:
            rows, more = self._lane(self._cursor, room, newest, exclude)
            if not more:
                self._cursor = max(self._cursor, newest)
            self.more = more
            return rows
        live, live_more = self._lane(max(self._live_cursor, self._live_from), room, newest, exclude)
        if not live_more:
            self._live_cursor = max(self._live_cursor, newest)
        now = self._clock()
        self._tokens = min(float(self.cfg.window), self._tokens + (now - self._token_ts) * self.cfg.backlog_rate)
        self._token_ts = now
        budget = min(room - len(live), int(self._tokens))
        backlog, backlog_more = self._lane(self._cursor, budget, self._live_from, exclude)
        if budget > 0 and not backlog_more:
            self._cursor = max(self._cursor, self._live_from)
        self._tokens -= len(backlog)
        self.more = live_more or backlog_more or (budget <= 0 and self._cursor < self._live_from)
        return live + backlog

    def fill(self, client: mqtt.Client) -> None:
        """Publish candidate rows until the window is full or the outbox has no more."""
        room = self.cfg.window - len(self.inflight)
        if room <= 0:
            return
        for rec in self._candidates(room):
            props, alive = self._publish_props(rec.expires_ts)
            if not alive:
                self._expired_seen = True  # purged (and counted) right after this fill
                continue
            info = client.publish(rec.topic, rec.payload, qos=1, retain=False, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self.rewind()
                break
            self.inflight[info.mid] = rec
            self.stats.published += 1
            if rec.row_id in self._urgent:
                continue  # sent ahead of its lane: the lane's cursor has not reached it
            if rec.row_id > self._live_from and self.cfg.backlog_rate is not None:
                self._live_cursor = max(self._live_cursor, rec.row_id)
            else:
                self._cursor = max(self._cursor, rec.row_id)

    # -- acknowledgements -----------------------------------------------------------------------
    def on_publish(self, mid: int, rc: Any) -> None:
        """paho's PUBACK callback: move the record from in flight to acknowledged (or rejected)."""
        rec = self.inflight.pop(mid, None)
        if rec is None:
            return
        if rc is not None and getattr(rc, "is_failure", False):
            # e.g. quota exceeded or not authorised: keep the row, it goes out again later.
            self._nacked.append(rec)
            self.stats.rejected += 1
            self.stats.last_error = f"broker rejected a publish: {reason_text(rc)}"
        else:
            self.acked.append(rec)

    def settle(self) -> None:
        """Store acknowledgements in the outbox; schedule rejected rows to go out again."""
        if self.acked:
            acked = self.acked
            now = self._clock()
            if self.cfg.ack_mode == "end_to_end":
                self.outbox.mark_sent([r.row_id for r in acked], now)
            else:
                self.outbox.delete([r.row_id for r in acked])
            self.acked = []  # only once stored: a failed delete is retried on the next settle
            self.stats.acked += len(acked)
            self.stats.latencies.extend(now - r.created_ts for r in acked)
            if self._on_acked is not None:
                self._on_acked(acked, now)
        if self._nacked:
            # Rejected (quota, authorisation): send them again, after a pause so a refusing broker
            # is not hammered.
            self._nacked.clear()
            self.rewind()
            self.pause_until = time.monotonic() + min(self.cfg.backoff.max_s, max(self.cfg.backoff.initial_s, 1.0))
        if self._expired_seen:
            self._expired_seen = False
            self.outbox.purge_expired()

