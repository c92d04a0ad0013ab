"""The uplink daemon: drains the outbox to the district broker over MQTT (paho-mqtt 2).

At-least-once with stable event ids: up to `window` QoS 1 publishes are in flight; a row leaves the
outbox only after its PUBACK (or, in end-to-end mode, after the platform's committed watermark
covers it). Every connection is a fresh client, so nothing lives only in paho's memory: after a
disconnect, whatever was not acknowledged is simply read from the outbox again (duplicates ≤ window,
same event_id). Reconnects use jittered exponential backoff.

A broker that only speaks MQTT 3.1.1 (it answers "unsupported protocol version", or closes the
connection on an MQTT 5 CONNECT) gets 3.1.1 for the rest of the process: the guarantees stay (QoS 1,
delete after PUBACK), retention is enforced locally only, and the last will has no delay.
See docs/delivery.md for the semantics the platform can rely on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.backoff import Backoff
from edge.config import MqttConfig, UplinkConfig
from edge.errors import OutboxError
from edge.events import base_topic, status_topic
from edge.outbox import Outbox
from edge.types import Origin, OutboxRecord

log = logging.getLogger(__name__)

_RC_UNSUPPORTED_PROTOCOL = 132
_RC_BAD_CREDENTIALS = (134, 135)  # "Bad user name or password", "Not authorized" (3.1.1 codes 4, 5 map here)
_IDLE_POLL_S = 0.02  # how soon a commit by the capture process is noticed when the outbox was empty
_ACK_WAIT_S = 0.05  # select() returns as soon as a PUBACK arrives; this only bounds a silent wait
_STATUS_CHECK_S = 1.0  # how often a change of alarm state is looked for (then status goes out at once)
_PURGE_INTERVAL_S = 10.0

AckListener = Callable[[Sequence[OutboxRecord], float], None]
"""Called with the records the broker just acknowledged and the time of the acknowledgement."""


@dataclass
class UplinkStats:
    """Counters and state the uplink reports in its status."""

    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    attempts: int = 0
    published: int = 0
    acked: int = 0
    rejected: int = 0
    last_error: str | None = None
    connected_since: float | None = None
    protocol: str = ""
    retry_in_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    """Commit → PUBACK seconds of the latest acknowledged events."""

    def latency_ms(self) -> dict[str, float] | None:
        """p50/p99 of commit → PUBACK over the latest acknowledgements, in milliseconds."""
        if not self.latencies:
            return None
        xs = sorted(self.latencies)
        return {"p50": round(xs[len(xs) // 2] * 1000, 1), "p99": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))] *
                                                                      1000, 1), "n": len(xs)}


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


def _props(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho's Properties is untyped


def _reason_text(rc: Any) -> str:
    return str(getattr(rc, "getName", lambda: rc)())


def _rc_value(rc: Any) -> int:
    return int(getattr(rc, "value", rc))


class Uplink:
    """Publishes outbox rows to MQTT; `run()` blocks until `stop()` (or until drained, for tests and `run`)."""

    def __init__(
        self,
        outbox: Outbox,
        origin: Origin,
        mqtt_cfg: MqttConfig,
        uplink_cfg: UplinkConfig,
        *,
        password: str | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
        heartbeat: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        on_acked: AckListener | None = None,
    ) -> None:
        self.outbox = outbox
        self.origin = origin
        self.mqtt_cfg = mqtt_cfg
        self.cfg = uplink_cfg
        self._password = password
        self._status_extra = status_extra
        self._heartbeat = heartbeat or (lambda: None)
        self._clock = clock
        self._on_acked = on_acked
        self._stop = threading.Event()
        self._backoff = Backoff(uplink_cfg.backoff)
        self.protocol = mqtt_cfg.protocol
        self.stats = UplinkStats(protocol=mqtt_cfg.protocol)
        self._client: mqtt.Client | None = None
        self._inflight: dict[int, OutboxRecord] = {}  # mid -> record
        self._acked: list[OutboxRecord] = []
        self._nacked: list[OutboxRecord] = []
        self._connack: bool | None = None
        self._answered = False  # a CONNACK came, whatever it said
        self._connect_note: str | None = None
        self._closed_before_connack = 0
        self._probing_311 = False  # on 3.1.1 only because MQTT 5 connections were hung up on
        self._retry_now = False
        self._probing = False
        # Read positions. Everything at or below a cursor was published on this connection (or is in
        # flight); `rewind()` sends the reader back when rows must go out again.
        self._cursor = 0
        self._live_cursor = 0
        self._live_from = 0
        self._more = True
        self._pause_until = 0.0
        self._expired_seen = False
        self._props_cache: tuple[int, Properties] | None = None
        self._tokens = 0.0
        self._token_ts = clock()
        self._next_status = 0.0
        self._next_status_check = 0.0
        self._alarm_sig: tuple[object, ...] | None = None
        self._next_purge = 0.0
        self._next_resend = 0.0
        self._store_error: str | None = None
        self._drain_exit = threading.Event()
        self.status_topic = status_topic(origin, mqtt_cfg.topic_prefix)
        self.ack_topic = f"{base_topic(origin, mqtt_cfg.topic_prefix)}/ack"

    # -- connection ----------------------------------------------------------------------------
    def _v5(self) -> bool:
        return self.protocol == "5"

    def _make_client(self) -> mqtt.Client:
        cid = self.mqtt_cfg.client_id or f"edgegw-{self.origin.gateway}-uplink"
        if self._probing:
            cid += "-check"  # never take the running daemon's session over
        if self._v5():
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5,
                                 reconnect_on_failure=False)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311,
                                 clean_session=True, reconnect_on_failure=False)
        # The window is ours (`_inflight`), so paho gets no limit of its own: with one, it walks its
        # whole message table on every PUBACK looking for queued messages (O(window) per ack).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        if self.mqtt_cfg.username:
            client.username_pw_set(self.mqtt_cfg.username, self._password)
        tls = self.mqtt_cfg.tls
        if tls is not None:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        will = json.dumps({"online": False, "gateway": self.origin.gateway, "reason": "connection lost"})
        will_props = None
        if self._v5() and self.mqtt_cfg.will_delay_s:
            # Will Delay: a blip shorter than this does not flip the platform's view to offline.
            will_props = _props(PacketTypes.WILLMESSAGE)
            will_props.WillDelayInterval = self.mqtt_cfg.will_delay_s
        if not self._probing:  # a probe killed mid-check must not announce the gateway offline
            client.will_set(self.status_topic, will, qos=1, retain=True, properties=will_props)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        # While connecting only: paho reports socket and TLS failures (e.g. a server that wants a
        # client certificate) through its log, not as exceptions; keep the last one for the status.
        client.on_log = self._on_log
        return client

    def _on_log(self, _c: mqtt.Client, _u: Any, level: int, buf: str) -> None:
        if level in (mqtt.MQTT_LOG_ERR, mqtt.MQTT_LOG_WARNING):
            self._connect_note = buf

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._answered = True
        if rc.is_failure:
            self._connack = False
            value = _rc_value(rc)
            if value == _RC_UNSUPPORTED_PROTOCOL and self._v5():
                self._fall_back("the broker answered 'unsupported protocol version' to MQTT 5")
            elif value in _RC_BAD_CREDENTIALS:
                self.stats.last_error = (f"broker refused the credentials ({_reason_text(rc)}): check "
                                         "mqtt.username and mqtt.password_file")
            else:
                self.stats.last_error = f"broker refused the connection: {_reason_text(rc)}"
            return
        self._connack = True
        if self.cfg.ack_mode == "end_to_end":
            client.subscribe(self.ack_topic, qos=1)

    def _fall_back(self, why: str, *, probe: bool = False) -> None:
        log.warning("uplink: %s; falling back to MQTT 3.1.1 (message expiry is then enforced locally only, "
                    "and the last will has no delay)", why)
        self.protocol = "3.1.1"
        self.stats.protocol = "3.1.1"
        self.stats.last_error = f"{why}; using MQTT 3.1.1"
        self._probing_311 = probe
        self._retry_now = True

    def _no_connack(self, *, closed: bool) -> None:
        """Explain a connection that got no CONNACK; guess at a 3.1.1-only broker when it hangs up."""
        where = f"{self.mqtt_cfg.host}:{self.mqtt_cfg.port}"
        note = f" ({self._connect_note})" if self._connect_note else ""
        if not closed:
            self.stats.last_error = f"no CONNACK from broker {where} within 10 s{note}"
            return
        self.stats.last_error = f"broker {where} closed the connection before CONNACK{note}"
        if self._connect_note is not None and any(w in self._connect_note for w in ("SSL", "TLS", "certificate")):
            return  # a TLS failure (e.g. a client certificate the broker wants): not the protocol version
        if self._probing_311:
            # 3.1.1 was only a guess, and it fared no better: go back to MQTT 5 for the next attempt.
            self.protocol = self.mqtt_cfg.protocol
            self.stats.protocol = self.protocol
            self._probing_311 = False
            self._closed_before_connack = 0
            return
        self._closed_before_connack += 1
        if self._v5() and self._closed_before_connack >= 2:
            # Some 3.1.1-only brokers hang up on an MQTT 5 CONNECT instead of answering it.
            self._fall_back("the broker closed two MQTT 5 connections before CONNACK", probe=True)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if self.stats.connected:
            self.stats.disconnects += 1
            log.warning("disconnected from broker: %s", _reason_text(rc))
        self.stats.connected = False
        if self._connack is None:
            self._connack = False  # refused or dropped while waiting for CONNACK

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        rec = self._inflight.pop(mid, None)
        if rec is None:
            return
        if rc is not None and getattr(rc, "is_failure", False):
            # e.g. quota exceeded or not authorised: keep the row, it goes out again later.
            self._nacked.append(rec)
            self.stats.rejected += 1
            self.stats.last_error = f"broker rejected a publish: {_reason_text(rc)}"
        else:
            self._acked.append(rec)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != self.ack_topic:
            return
        try:
            body = json.loads(msg.payload)
            boot = int(body["boot"])
            marks = {str(k): int(v) for k, v in body["marks"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed acknowledgement message on %s", msg.topic)
            return
        try:
            for source, seq in marks.items():
                self.outbox.ack_watermark(source, boot, seq)
        except OutboxError as exc:
            # The mark is retained and sent again on the next connection; rows stay until then.
            log.warning("cannot apply the platform's watermark now: %s", exc)

    def _connect_error(self, exc: OSError) -> str:
        where = f"{self.mqtt_cfg.host}:{self.mqtt_cfg.port}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (f"TLS: the certificate of broker {where} failed verification: {exc.verify_message or exc} "
                    "(check mqtt.tls.ca_file and the broker's certificate)")
        if isinstance(exc, ssl.SSLError):
            return f"TLS handshake with broker {where} failed: {exc.reason or exc}"
        if isinstance(exc, ConnectionRefusedError):
            return f"cannot reach broker {where}: connection refused"
        return f"cannot reach broker {where}: {exc}"

    def _connect(self) -> bool:
        self._retry_now = False
        client = self._make_client()
        self._connack = None
        self._answered = False
        self._connect_note = None
        self._inflight.clear()
        self._acked.clear()
        self._nacked.clear()
        self.stats.attempts += 1
        props = None
        if self._v5():
            props = _props(PacketTypes.CONNECT)
            # The session must outlive the will delay, or the broker sends the will at once.
            props.SessionExpiryInterval = max(self.mqtt_cfg.will_delay_s + 5, 0)
        try:
            if self._v5():
                client.connect(self.mqtt_cfg.host, self.mqtt_cfg.port, self.mqtt_cfg.keepalive_s,
                               clean_start=True, properties=props)
            else:
                client.connect(self.mqtt_cfg.host, self.mqtt_cfg.port, self.mqtt_cfg.keepalive_s)
        except OSError as exc:  # ssl.SSLError and its certificate error are OSErrors
            self.stats.last_error = self._connect_error(exc)
            return False
        except ValueError as exc:
            self.stats.last_error = f"cannot connect to broker {self.mqtt_cfg.host}:{self.mqtt_cfg.port}: {exc}"
            return False
        deadline = time.monotonic() + 10.0
        rc = int(mqtt.MQTT_ERR_SUCCESS)
        while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
            try:
                rc = self._io(client, 0.1)
            except OSError as exc:
                self._connect_note = str(exc)
                rc = int(mqtt.MQTT_ERR_CONN_LOST)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                break
        if not self._connack:
            if not self._answered:
                self._no_connack(closed=rc != mqtt.MQTT_ERR_SUCCESS)
            with contextlib.suppress(OSError):
                client.disconnect()
            return False
        client.on_log = None  # hot path from here on: no per-packet log formatting
        self._closed_before_connack = 0
        self._probing_311 = False  # whatever got us here works: keep it
        self._client = client
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.connected_since = self._clock()
        self.stats.last_error = None
        self.stats.retry_in_s = None
        self._backoff.reset()
        # Two lanes: rows committed after this moment are "live" and go first when a backlog rate
        # is configured; older rows drain behind them at that rate.
        self._live_from = self.outbox.newest_row_id()
        self.rewind()
        self._next_status = 0.0
        log.info("connected to broker %s:%d (MQTT %s)", self.mqtt_cfg.host, self.mqtt_cfg.port, self.protocol)
        return True

    @staticmethod
    def _io(client: mqtt.Client, timeout: float) -> int:
        """One select() on the broker socket, then paho's read, write and keepalive steps.

        paho's own `loop()` adds a wake-up socket pair and writes a byte to it on every publish:
        a second system call per event. Driving paho as an external event loop avoids it.
        """
        sock = client.socket()
        if sock is None:
            return int(mqtt.MQTT_ERR_NO_CONN)
        pending = getattr(sock, "pending", None)
        if callable(pending) and pending() > 0:
            readable, writable = True, client.want_write()  # TLS bytes already decrypted: no wait
        else:
            r, w, _ = select.select([sock], [sock] if client.want_write() else [], [], timeout)
            readable, writable = bool(r), bool(w)
        if readable:
            rc = client.loop_read()
            if rc != mqtt.MQTT_ERR_SUCCESS or client.socket() is None:
                return int(rc) or int(mqtt.MQTT_ERR_CONN_LOST)
        if writable:
            rc = client.loop_write()
            if rc != mqtt.MQTT_ERR_SUCCESS or client.socket() is None:
                return int(rc) or int(mqtt.MQTT_ERR_CONN_LOST)
        return int(client.loop_misc())

    # -- draining ------------------------------------------------------------------------------
    def rewind(self) -> None:
        """Read the outbox from its start again (after a rejected publish or an end-to-end resend)."""
        self._cursor = 0
        self._live_cursor = self._live_from
        self._more = True

    def _publish_props(self, expires_ts: float | None) -> tuple[Properties | None, bool]:
        if expires_ts is None:
            return None, True
        remaining = int(expires_ts - self._clock())
        if remaining <= 0:
            return None, False
        if not self._v5():
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
        exclude = {r.row_id for r in self._inflight.values()} | {r.row_id for r in self._acked}
        # Rows committed later have higher ids (AUTOINCREMENT), so everything up to `newest` that a
        # short answer did not return is published or in flight: the cursor may jump to `newest`.
        newest = self.outbox.newest_row_id()
        if self.cfg.backlog_rate is None:
            rows, more = self._lane(self._cursor, room, newest, exclude)
            if not more:
                self._cursor = max(self._cursor, newest)
            self._more = more
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
        self._more = live_more or backlog_more or (budget <= 0 and self._cursor < self._live_from)
        return live + backlog

    def _fill_window(self) -> None:
        assert self._client is not None
        room = self.cfg.window - len(self._inflight)
        if room <= 0:
            return
        for rec in self._candidates(room):
            props, alive = self._publish_props(rec.expires_ts)
            if not alive:
                self._expired_seen = True  # purged (and counted) right after this fill
                continue
            info = self._client.publish(rec.topic, rec.payload, qos=1, retain=False, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self.rewind()
                break
            self._inflight[info.mid] = rec
            self.stats.published += 1
            if rec.row_id > self._live_from and self.cfg.backlog_rate is not None:
                self._live_cursor = max(self._live_cursor, rec.row_id)
            else:
                self._cursor = max(self._cursor, rec.row_id)

    def _settle(self) -> None:
        if self._acked:
            acked = self._acked
            now = self._clock()
            if self.cfg.ack_mode == "end_to_end":
                self.outbox.mark_sent([r.row_id for r in acked], now)
            else:
                self.outbox.delete([r.row_id for r in acked])
            self._acked = []  # only once stored: a failed delete is retried on the next settle
            self.stats.acked += len(acked)
            self.stats.latencies.extend(now - r.created_ts for r in acked)
            if self._on_acked is not None:
                self._on_acked(acked, now)
        if self._nacked:
            # Rejected (quota, authorisation): send them again, after a pause so a refusing broker
            # is not hammered.
            self._nacked.clear()
            self.rewind()
            self._pause_until = time.monotonic() + min(self.cfg.backoff.max_s, max(self.cfg.backoff.initial_s, 1.0))
        if self._expired_seen:
            self._expired_seen = False
            self.outbox.purge_expired()

    def _housekeeping(self) -> None:
        self._heartbeat()  # systemd watchdog: the loop is alive even while disconnected
        now = self._clock()
        if now >= self._next_purge:
            self.outbox.purge_expired(now)
            self._next_purge = now + _PURGE_INTERVAL_S
        if self.cfg.ack_mode == "end_to_end" and now >= self._next_resend:
            if self.outbox.unsend_overdue(now, self.cfg.ack_timeout_s):
                self.rewind()
            self._next_resend = now + min(_PURGE_INTERVAL_S, self.cfg.ack_timeout_s / 4)
        if self._client is None:
            return
        if now >= self._next_status_check:
            self._next_status_check = now + _STATUS_CHECK_S
            sig = self._alarm_signature()
            if sig != self._alarm_sig:
                self._next_status = 0.0  # an alarm appeared or cleared: tell the platform now
        if now >= self._next_status:
            self.publish_status(online=True)
            self._next_status = now + self.cfg.status_interval_s

    def _alarm_signature(self) -> tuple[object, ...]:
        c = self.outbox.counters()
        return (c.get("dropped_quota", 0), c.get("corrupt_replaced", 0), c.get("expired", 0),
                self.outbox.storage().disk_full)

    def status(self, online: bool) -> dict[str, Any]:
        """The retained status body: online, backlog, drops, disk, camera and port states."""
        counters = self.outbox.counters()
        storage = self.outbox.storage()
        components = self.outbox.get_status()
        capture = components.get("capture", {})
        alarms = [name for name, on in (
            ("outbox_quota", counters.get("dropped_quota", 0) > 0),
            ("outbox_corrupt", counters.get("corrupt_replaced", 0) > 0),
            ("disk_full", storage.disk_full),
        ) if on]
        by_kind = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("dropped_quota.")}
        expired_by_kind = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("expired.")}
        body: dict[str, Any] = {
            "online": online,
            "gateway": self.origin.gateway,
            "ts": round(self._clock(), 3),
            "boot": self.outbox.boot,
            "outbox_depth": self.outbox.depth(),
            "oldest_pending_age_s": self.outbox.oldest_age_s(),
            "delivered": counters.get("delivered", 0),
            "dropped": counters.get("dropped_quota", 0),
            "expired": counters.get("expired", 0),
            "drops": {"quota": counters.get("dropped_quota", 0), "quota_by_kind": by_kind,
                      "expired": counters.get("expired", 0), "expired_by_kind": expired_by_kind},
            "alarm": bool(alarms),
            "alarms": alarms,
            "disk_full": storage.disk_full,
            "storage": {"used_bytes": storage.used_bytes, "quota_bytes": storage.quota_bytes,
                        "disk_free_bytes": storage.disk_free_bytes, "full_since": storage.full_since,
                        "full_errors": counters.get("full_errors", 0)},
            "cameras": capture.get("cameras", {}),
            "ports": capture.get("ports", {}),
            "seq": {"last": self.outbox.last_seq(), "floor": self.outbox.seq_floor()},
            "uplink": {"protocol": self.protocol, "connects": self.stats.connects, "attempts": self.stats.attempts,
                       "last_error": self.stats.last_error, "ack_mode": self.cfg.ack_mode, "window": self.cfg.window,
                       "resent": counters.get("resent", 0), "latency_ms": self.stats.latency_ms()},
            "components": components,
        }
        if self._status_extra is not None:
            body.update(self._status_extra())
        return body

    def publish_status(self, online: bool) -> None:
        """Publish the retained status message."""
        if self._client is None:
            return
        body = self.status(online)
        self._alarm_sig = self._alarm_signature()
        self._client.publish(self.status_topic, json.dumps(body, sort_keys=True), qos=1, retain=True)

    def _record_state(self) -> None:
        try:
            self.outbox.put_status("uplink", {
                "connected": self.stats.connected, "last_error": self.stats.last_error, "protocol": self.protocol,
                "published": self.stats.published, "acked": self.stats.acked, "attempts": self.stats.attempts,
                "retry_in_s": self.stats.retry_in_s})
        except OutboxError as exc:
            log.debug("cannot record uplink state: %s", exc)

    def _step(self) -> int:
        """One turn of the drain loop: fill the window, move packets, store acknowledgements."""
        client = self._client
        assert client is not None
        changed = self.outbox.changed()
        paused = time.monotonic() < self._pause_until
        if not paused and (self._more or changed) and len(self._inflight) < self.cfg.window:
            self._fill_window()
        if self._more and not paused and len(self._inflight) < self.cfg.window:
            timeout = 0.0  # more to send and room for it: do not wait
        else:
            timeout = _ACK_WAIT_S if self._inflight else _IDLE_POLL_S
        rc = self._io(client, timeout)
        self._settle()
        return int(rc)

    def run(self, *, until_empty: bool = False, idle_exit_s: float | None = None) -> None:
        """Drain until stop() (or, with `until_empty`, until the outbox stays empty for `idle_exit_s`)."""
        empty_since: float | None = None
        last_error: str | None = None
        while not self._stop.is_set():
            if self._client is None or not self.stats.connected:
                self._client = None
                if not self._connect():
                    if self._retry_now:
                        continue  # protocol fallback: try 3.1.1 at once
                    delay = self._backoff.next_delay()
                    self.stats.retry_in_s = round(delay, 2)
                    if self.stats.last_error != last_error:
                        log.warning("uplink: %s; retrying with backoff", self.stats.last_error)
                        last_error = self.stats.last_error
                    self._record_state()
                    self._heartbeat()
                    self._stop.wait(delay)
                    continue
                last_error = None
                self._record_state()
            try:
                rc = self._step()
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    self.stats.connected = False
                    self.stats.disconnects += 1
                    self.stats.last_error = f"connection lost ({mqtt.error_string(rc)})"
                    log.warning("uplink: %s", self.stats.last_error)
                    self._record_state()
                    continue
                self._housekeeping()
                if self._store_error is not None:
                    log.warning("uplink: the outbox is usable again")
                    self._store_error = None
            except OutboxError as exc:
                # A locked or full disk: what was acknowledged stays queued in memory and is stored
                # (or, after a crash, simply sent again) later. Keep the connection.
                if str(exc) != self._store_error:
                    log.warning("uplink: outbox error, retrying: %s", exc)
                    self._store_error = str(exc)
                self._stop.wait(min(1.0, self.cfg.backoff.max_s))
                continue
            if until_empty or self._drain_exit.is_set():
                if not self._inflight and not self._acked and self.outbox.depth() == 0:
                    empty_since = empty_since or time.monotonic()
                    if time.monotonic() - empty_since >= (idle_exit_s or 0.0):
                        break
                else:
                    empty_since = None
        self._shutdown()

    def _shutdown(self) -> None:
        client = self._client
        if client is None:
            return
        self.stats.connected = False  # our own DISCONNECT is not a connection loss to report
        try:
            self.publish_status(online=False)
            deadline = time.monotonic() + 2.0
            while self._inflight and time.monotonic() < deadline:
                self._io(client, 0.05)
                self._settle()
            self._io(client, 0.1)
            client.disconnect()  # a clean DISCONNECT: the broker discards the will
            self._io(client, 0.1)
        except (OSError, OutboxError):
            pass
        self._client = None
        self.stats.connected = False
        self._record_state()

    def probe(self) -> str | None:
        """Connect once with this configuration (TLS, credentials, protocol) and disconnect.

        Returns None when the broker accepted the connection, else the error an installer should
        read. Uses its own client id and no will, so it is safe while the uplink daemon runs.
        """
        self._probing = True
        try:
            if not self._connect():
                return self.stats.last_error or "the broker did not accept the connection"
            client = self._client
            self._client = None
            self.stats.connected = False
            if client is not None:
                with contextlib.suppress(OSError):
                    client.disconnect()
            return None
        finally:
            self._probing = False

    def stop(self) -> None:
        """Ask `run()` to return (thread-safe)."""
        self._stop.set()

    def drain_and_stop(self) -> None:
        """Ask `run()` to return once the outbox is empty and nothing is in flight (thread-safe)."""
        self._drain_exit.set()
