"""The uplink daemon: drains the outbox to the district broker over MQTT (paho-mqtt 2).

At-least-once with stable event ids: up to `window` QoS 1 publishes are in flight; a row leaves the
outbox only after its PUBACK (or, in end-to-end mode, after the platform's committed watermark
covers it). Every connection is a fresh client, so nothing lives only in paho's memory: after a
disconnect, whatever was not acknowledged is simply read from the outbox again (duplicates ≤ window,
same event_id). Reconnects use jittered exponential backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.backoff import Backoff
from edge.config import MqttConfig, UplinkConfig
from edge.events import base_topic, status_topic
from edge.outbox import Outbox
from edge.types import Origin

log = logging.getLogger(__name__)


@dataclass
class UplinkStats:
    """Counters and state the uplink reports in its status."""

    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    acked: int = 0
    rejected: int = 0
    last_error: str | None = None
    connected_since: float | None = None
    protocol: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _reason_text(rc: Any) -> str:
    return str(getattr(rc, "getName", lambda: rc)())


class Uplink:
    """Publishes outbox rows to MQTT; `run()` blocks until `stop()`; `drain_once()` is for tests."""

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
    ) -> None:
        self.outbox = outbox
        self.origin = origin
        self.mqtt_cfg = mqtt_cfg
        self.cfg = uplink_cfg
        self._password = password
        self._status_extra = status_extra
        self._heartbeat = heartbeat or (lambda: None)
        self._clock = clock
        self._stop = threading.Event()
        self._backoff = Backoff(uplink_cfg.backoff)
        self.stats = UplinkStats(protocol=mqtt_cfg.protocol)
        self._client: mqtt.Client | None = None
        self._inflight: dict[int, int] = {}  # mid -> row_id
        self._acked: list[int] = []
        self._nacked: list[int] = []
        self._connack: bool | None = None
        self._live_from = 0
        self._tokens = 0.0
        self._token_ts = clock()
        self._next_status = 0.0
        self._next_purge = 0.0
        self._drain_exit = threading.Event()
        self.status_topic = status_topic(origin, mqtt_cfg.topic_prefix)
        self.ack_topic = f"{base_topic(origin, mqtt_cfg.topic_prefix)}/ack"

    # -- connection ----------------------------------------------------------------------------
    def _v5(self) -> bool:
        return self.mqtt_cfg.protocol == "5"

    def _make_client(self) -> mqtt.Client:
        cid = self.mqtt_cfg.client_id or f"edgegw-{self.origin.gateway}-uplink"
        if self._v5():
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311,
                                 clean_session=True)
        client.max_inflight_messages_set(self.cfg.window)
        client.max_queued_messages_set(self.cfg.window * 2)
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
            will_props = Properties(PacketTypes.WILLMESSAGE)
            will_props.WillDelayInterval = self.mqtt_cfg.will_delay_s
        client.will_set(self.status_topic, will, qos=1, retain=True, properties=will_props)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self._connack = False
            self.stats.last_error = f"broker refused the connection: {_reason_text(rc)}"
            return
        self._connack = True
        if self.cfg.ack_mode == "end_to_end":
            client.subscribe(self.ack_topic, qos=1)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if self.stats.connected:
            self.stats.disconnects += 1
            log.warning("disconnected from broker: %s", _reason_text(rc))
        self.stats.connected = False
        if self._connack is None:
            self._connack = False  # refused or dropped while waiting for CONNACK

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        row = self._inflight.pop(mid, None)
        if row is None:
            return
        if rc is not None and getattr(rc, "is_failure", False):
            # e.g. quota exceeded or not authorised: keep the row, it goes out again later.
            self._nacked.append(row)
            self.stats.rejected += 1
            self.stats.last_error = f"broker rejected a publish: {_reason_text(rc)}"
        else:
            self._acked.append(row)

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
        for source, seq in marks.items():
            self.outbox.ack_watermark(source, boot, seq)

    def _connect(self) -> bool:
        client = self._make_client()
        self._connack = None
        self._inflight.clear()
        self._acked.clear()
        self._nacked.clear()
        props = None
        if self._v5():
            props = Properties(PacketTypes.CONNECT)
            # The session must outlive the will delay, or the broker sends the will at once.
            props.SessionExpiryInterval = max(self.mqtt_cfg.will_delay_s + 5, 0)
        try:
            if self._v5():
                client.connect(self.mqtt_cfg.host, self.mqtt_cfg.port, self.mqtt_cfg.keepalive_s,
                               clean_start=True, properties=props)
            else:
                client.connect(self.mqtt_cfg.host, self.mqtt_cfg.port, self.mqtt_cfg.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.stats.last_error = f"cannot reach broker {self.mqtt_cfg.host}:{self.mqtt_cfg.port}: {exc}"
            return False
        deadline = time.monotonic() + 10.0
        while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        if not self._connack:
            if self._connack is None:
                self.stats.last_error = self.stats.last_error or "no CONNACK from broker"
            with contextlib.suppress(OSError):
                client.disconnect()
            return False
        self._client = client
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.connected_since = self._clock()
        self.stats.last_error = None
        self._backoff.reset()
        # Two lanes: rows committed after this moment are "live" and go first when a backlog rate
        # is configured; older rows drain behind them at that rate.
        rows = self.outbox.pending(1, newest_first=True)
        self._live_from = rows[0].row_id if rows else 0
        self._next_status = 0.0
        log.info("connected to broker %s:%d (MQTT %s)", self.mqtt_cfg.host, self.mqtt_cfg.port,
                 self.mqtt_cfg.protocol)
        return True

    # -- draining ------------------------------------------------------------------------------
    def _publish_props(self, expires_ts: float | None) -> tuple[Properties | None, bool]:
        if expires_ts is None:
            return None, True
        remaining = int(expires_ts - self._clock())
        if remaining <= 0:
            return None, False
        if not self._v5():
            return None, True  # 3.1.1 has no expiry: enforced locally by purge_expired
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = remaining
        return props, True

    def _candidates(self, room: int) -> list[Any]:
        unsent = self.cfg.ack_mode == "end_to_end"
        exclude = set(self._inflight.values())
        if self.cfg.backlog_rate is None:
            return self.outbox.pending(room, exclude=exclude, unsent_only=unsent)
        live = [r for r in self.outbox.pending(room, exclude=exclude, newest_first=True, unsent_only=unsent)
                if r.row_id > self._live_from][::-1]
        now = self._clock()
        self._tokens = min(float(self.cfg.window), self._tokens + (now - self._token_ts) * self.cfg.backlog_rate)
        self._token_ts = now
        budget = min(room - len(live), int(self._tokens))
        if budget <= 0:
            return live
        backlog = [r for r in self.outbox.pending(budget, exclude=exclude | {r.row_id for r in live},
                                                  unsent_only=unsent) if r.row_id <= self._live_from]
        self._tokens -= len(backlog)
        return live + backlog

    def _fill_window(self) -> None:
        assert self._client is not None
        room = self.cfg.window - len(self._inflight)
        if room <= 0:
            return
        for rec in self._candidates(room):
            props, alive = self._publish_props(rec.expires_ts)
            if not alive:
                continue  # expired: purge_expired counts and removes it
            info = self._client.publish(rec.topic, rec.payload, qos=1, retain=False, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            self._inflight[info.mid] = rec.row_id
            self.stats.published += 1

    def _settle(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            if self.cfg.ack_mode == "end_to_end":
                self.outbox.mark_sent(acked)
            else:
                self.outbox.delete(acked)
            self.stats.acked += len(acked)
        self._nacked.clear()

    def _housekeeping(self) -> None:
        self._heartbeat()  # systemd watchdog: the loop is alive even while disconnected
        now = self._clock()
        if now >= self._next_purge:
            self.outbox.purge_expired(now)
            if self.cfg.ack_mode == "end_to_end":
                self.outbox.unsend_older_than(now - self.cfg.ack_timeout_s)
            self._next_purge = now + 10.0
        if self._client is not None and now >= self._next_status:
            self.publish_status(online=True)
            self._next_status = now + self.cfg.status_interval_s

    def status(self, online: bool) -> dict[str, Any]:
        """The retained status body: online, backlog, drops, component states."""
        counters = self.outbox.counters()
        body: dict[str, Any] = {
            "online": online,
            "gateway": self.origin.gateway,
            "ts": round(self._clock(), 3),
            "outbox_depth": self.outbox.depth(),
            "oldest_pending_age_s": self.outbox.oldest_age_s(),
            "delivered": counters.get("delivered", 0),
            "dropped": counters.get("dropped_quota", 0),
            "expired": counters.get("expired", 0),
            "alarm": counters.get("dropped_quota", 0) > 0 or counters.get("corrupt_replaced", 0) > 0,
            "uplink": {"protocol": self.stats.protocol, "connects": self.stats.connects,
                       "last_error": self.stats.last_error},
            "components": self.outbox.get_status(),
        }
        if self._status_extra is not None:
            body.update(self._status_extra())
        return body

    def publish_status(self, online: bool) -> None:
        """Publish the retained status message."""
        if self._client is None:
            return
        self._client.publish(self.status_topic, json.dumps(self.status(online), sort_keys=True), qos=1, retain=True)

    def _record_state(self) -> None:
        self.outbox.put_status("uplink", {"connected": self.stats.connected, "last_error": self.stats.last_error,
                                          "published": self.stats.published, "acked": self.stats.acked})

    def run(self, *, until_empty: bool = False, idle_exit_s: float | None = None) -> None:
        """Drain until stop() (or, with `until_empty`, until the outbox stays empty for `idle_exit_s`)."""
        empty_since: float | None = None
        last_error: str | None = None
        while not self._stop.is_set():
            if self._client is None or not self.stats.connected:
                self._client = None
                if not self._connect():
                    if self.stats.last_error != last_error:
                        log.warning("uplink: %s; retrying with backoff", self.stats.last_error)
                        last_error = self.stats.last_error
                    self._record_state()
                    self._heartbeat()
                    self._stop.wait(self._backoff.next_delay())
                    continue
                last_error = None
                self._record_state()
            client = self._client
            assert client is not None
            self._fill_window()
            rc = client.loop(timeout=0.02 if self._inflight else 0.2)
            self._settle()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self.stats.connected = False
                self.stats.disconnects += 1
                self.stats.last_error = f"connection lost ({mqtt.error_string(rc)})"
                log.warning("uplink: %s", self.stats.last_error)
                self._record_state()
                continue
            self._housekeeping()
            if until_empty or self._drain_exit.is_set():
                if not self._inflight and self.outbox.depth() == 0:
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
                client.loop(timeout=0.05)
                self._settle()
            client.loop(timeout=0.1)
            client.disconnect()  # a clean DISCONNECT: the broker discards the will
            client.loop(timeout=0.1)
        except OSError:
            pass
        self._client = None
        self.stats.connected = False
        self._record_state()

    def stop(self) -> None:
        """Ask `run()` to return (thread-safe)."""
        self._stop.set()

    def drain_and_stop(self) -> None:
        """Ask `run()` to return once the outbox is empty and nothing is in flight (thread-safe)."""
        self._drain_exit.set()
