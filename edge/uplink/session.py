"""One broker connection at a time: build the paho client, CONNECT, wait for CONNACK, explain failures.

Every connection is a fresh client, so nothing lives only in paho's memory. A broker that only speaks
MQTT 3.1.1 (it answers "unsupported protocol version", or hangs up on an MQTT 5 CONNECT twice) gets
3.1.1 for the rest of the process; a 3.1.1 guess that fares no better goes back to MQTT 5. Errors are
kept in words an installer can act on (TLS, credentials, refused, no CONNACK).
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import ssl
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.types import Origin
from edge.uplink.config import MqttConfig
from edge.uplink.stats import UplinkStats
from edge.uplink.tlsprobe import speaks_tls

log = logging.getLogger(__name__)

_RC_UNSUPPORTED_PROTOCOL = 132
_RC_BAD_CREDENTIALS = (134, 135)  # "Bad user name or password", "Not authorized" (3.1.1 codes 4, 5 map here)
_CONNACK_TIMEOUT_S = 10.0

PublishCallback = Callable[[int, Any], None]
"""Called with (mid, reason code) when the broker acknowledges a QoS 1 publish."""
MessageCallback = Callable[[mqtt.MQTTMessage], None]
"""Called with each message that arrives on a subscription."""


def new_properties(packet_type: int) -> Properties:
    """An empty paho Properties object for `packet_type` (paho's class is untyped)."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def reason_text(rc: Any) -> str:
    """A paho reason code (or int) as text."""
    return str(getattr(rc, "getName", lambda: rc)())


def _rc_value(rc: Any) -> int:
    return int(getattr(rc, "value", rc))


def pump(client: mqtt.Client, timeout: float) -> int:
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


class BrokerSession:
    """Connects to the configured broker; owns the protocol choice and the connection's error text."""

    def __init__(self, mqtt_cfg: MqttConfig, origin: Origin, status_topic: str, stats: UplinkStats, *,
                 password: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.mqtt_cfg = mqtt_cfg
        self.origin = origin
        self.status_topic = status_topic
        self.stats = stats
        self.protocol = mqtt_cfg.protocol
        self.stats.protocol = mqtt_cfg.protocol
        self.retry_now = False
        """Set when a protocol fallback means the next attempt should come at once."""
        self.probing = False
        """A probe (edgegw check): its own client id and no will, so it never disturbs the daemon."""
        self._password = password
        self._clock = clock
        self._connack: bool | None = None
        self._answered = False  # a CONNACK came, whatever it said
        self._connect_note: str | None = None
        self._closed_before_connack = 0
        self._probing_311 = False  # on 3.1.1 only because MQTT 5 connections were hung up on
        self._subscriptions: tuple[str, ...] = ()

    def v5(self) -> bool:
        """Whether the current connection speaks MQTT 5."""
        return self.protocol == "5"

    @property
    def where(self) -> str:
        """host:port of the broker, for messages."""
        return f"{self.mqtt_cfg.host}:{self.mqtt_cfg.port}"

    # -- building the client --------------------------------------------------------------------
    def _make_client(self, on_publish: PublishCallback, on_message: MessageCallback) -> mqtt.Client:
        cid = self.mqtt_cfg.client_id or f"edgegw-{self.origin.gateway}-uplink"
        if self.probing:
            cid += "-check"  # never take the running daemon's session over
        if self.v5():
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5,
                                 reconnect_on_failure=False)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311,
                                 clean_session=True, reconnect_on_failure=False)
        # The window is ours (edge.uplink.window), so paho gets no limit of its own: with one, it walks
        # its whole message table on every PUBACK looking for queued messages (O(window) per ack).
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
        if self.v5() and self.mqtt_cfg.will_delay_s:
            # Will Delay: a blip shorter than this does not flip the platform's view to offline.
            will_props = new_properties(PacketTypes.WILLMESSAGE)
            will_props.WillDelayInterval = self.mqtt_cfg.will_delay_s
        if not self.probing:  # a probe killed mid-check must not announce the gateway offline
            client.will_set(self.status_topic, will, qos=1, retain=True, properties=will_props)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = lambda _c, _u, mid, rc, _p: on_publish(mid, rc)
        client.on_message = lambda _c, _u, msg: on_message(msg)
        # While connecting only: paho reports socket and TLS failures (e.g. a server that wants a
        # client certificate) through its log, not as exceptions; keep the last one for the status.
        client.on_log = self._on_log
        return client

    # -- paho callbacks -------------------------------------------------------------------------
    def _on_log(self, _c: mqtt.Client, _u: Any, level: int, buf: str) -> None:
        if level in (mqtt.MQTT_LOG_ERR, mqtt.MQTT_LOG_WARNING):
            self._connect_note = buf

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._answered = True
        if rc.is_failure:
            self._connack = False
            value = _rc_value(rc)
            if value == _RC_UNSUPPORTED_PROTOCOL and self.v5():
                self._fall_back("the broker answered 'unsupported protocol version' to MQTT 5")
            elif value in _RC_BAD_CREDENTIALS:
                self.stats.last_error = (f"broker refused the credentials ({reason_text(rc)}): check "
                                         "mqtt.username and mqtt.password_file")
            else:
                self.stats.last_error = f"broker refused the connection: {reason_text(rc)}"
            return
        self._connack = True
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if self.stats.connected:
            self.stats.disconnects += 1
            log.warning("disconnected from broker: %s", reason_text(rc))
        self.stats.connected = False
        if self._connack is None:
            self._connack = False  # refused or dropped while waiting for CONNACK

    # -- protocol choice and error text ---------------------------------------------------------
    def _fall_back(self, why: str, *, probe: bool = False) -> None:
        log.warning("uplink: %s; falling back to MQTT 3.1.1 (message expiry is then enforced locally only, "
                    "and the last will has no delay)", why)
        self.protocol = "3.1.1"
        self.stats.protocol = "3.1.1"
        self.stats.last_error = f"{why}; using MQTT 3.1.1"
        self._probing_311 = probe
        self.retry_now = True

    def _no_connack(self, *, closed: bool) -> None:
        """Explain a connection that got no CONNACK; guess at a 3.1.1-only broker when it hangs up."""
        note = f" ({self._connect_note})" if self._connect_note else ""
        if not closed:
            self.stats.last_error = f"no CONNACK from broker {self.where} within {_CONNACK_TIMEOUT_S:.0f} s{note}"
            return
        self.stats.last_error = f"broker {self.where} closed the connection before CONNACK{note}"
        if self._connect_note is not None and any(w in self._connect_note for w in ("SSL", "TLS", "certificate")):
            return  # a TLS failure (e.g. a client certificate the broker wants): not the protocol version
        if self.mqtt_cfg.tls is None and speaks_tls(self.mqtt_cfg.host, self.mqtt_cfg.port):
            # Plain MQTT to a TLS listener is hung up on just like MQTT 5 to a 3.1.1-only broker:
            # name the real cause, and do not guess at the protocol version.
            self.stats.last_error = (f"broker {self.where} speaks TLS on this port, but mqtt.tls is not set: "
                                     "configure mqtt.tls (ca_file) or use the broker's plain MQTT port")
            return
        if self._probing_311:
            # 3.1.1 was only a guess, and it fared no better: go back to MQTT 5 for the next attempt.
            self.protocol = self.mqtt_cfg.protocol
            self.stats.protocol = self.protocol
            self._probing_311 = False
            self._closed_before_connack = 0
            return
        self._closed_before_connack += 1
        if self.v5() and self._closed_before_connack >= 2:
            # Some 3.1.1-only brokers hang up on an MQTT 5 CONNECT instead of answering it.
            self._fall_back("the broker closed two MQTT 5 connections before CONNACK", probe=True)

    def _connect_error(self, exc: OSError) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (f"TLS: the certificate of broker {self.where} failed verification: "
                    f"{exc.verify_message or exc} (check mqtt.tls.ca_file and the broker's certificate)")
        if isinstance(exc, ssl.SSLError):
            return f"TLS handshake with broker {self.where} failed: {exc.reason or exc}"
        if isinstance(exc, ConnectionRefusedError):
            return f"cannot reach broker {self.where}: connection refused"
        return f"cannot reach broker {self.where}: {exc}"

    # -- connecting -----------------------------------------------------------------------------
    def connect(self, on_publish: PublishCallback, on_message: MessageCallback, *,
                subscribe: tuple[str, ...] = (), stop: Callable[[], bool] = lambda: False) -> mqtt.Client | None:
        """A connected client (CONNACK received, subscriptions sent), or None with `stats.last_error` set."""
        self.retry_now = False
        self._subscriptions = subscribe
        client = self._make_client(on_publish, on_message)
        self._connack = None
        self._answered = False
        self._connect_note = None
        self.stats.attempts += 1
        props = None
        if self.v5():
            props = new_properties(PacketTypes.CONNECT)
            # The session must outlive the will delay, or the broker sends the will at once.
            props.SessionExpiryInterval = max(self.mqtt_cfg.will_delay_s + 5, 0)
        try:
            if self.v5():
                client.connect(self.mqtt_cfg.host, self.mqtt_cfg.port, self.mqtt_cfg.keepalive_s,
                               clean_start=True, properties=props)
            else:
                client.connect(self.mqtt_cfg.host, self.mqtt_cfg.port, self.mqtt_cfg.keepalive_s)
        except OSError as exc:  # ssl.SSLError and its certificate error are OSErrors
            self.stats.last_error = self._connect_error(exc)
            return None
        except ValueError as exc:
            self.stats.last_error = f"cannot connect to broker {self.where}: {exc}"
            return None
        deadline = time.monotonic() + _CONNACK_TIMEOUT_S
        rc = int(mqtt.MQTT_ERR_SUCCESS)
        while self._connack is None and time.monotonic() < deadline and not stop():
            try:
                rc = pump(client, 0.1)
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
            return None
        client.on_log = None  # hot path from here on: no per-packet log formatting
        self._closed_before_connack = 0
        self._probing_311 = False  # whatever got us here works: keep it
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.connected_since = self._clock()
        self.stats.last_error = None
        self.stats.retry_in_s = None
        return client

    def probe(self) -> str | None:
        """Connect once with this configuration (TLS, credentials, protocol) and disconnect.

        Returns None when the broker accepted the connection, else the error an installer should
        read. Uses its own client id and no will, so it is safe while the uplink daemon runs.
        """
        self.probing = True
        try:
            client = self.connect(lambda _mid, _rc: None, lambda _msg: None)
            if client is None:
                return self.stats.last_error or "the broker did not accept the connection"
            self.stats.connected = False
            with contextlib.suppress(OSError):
                client.disconnect()
            return None
        finally:
            self.probing = False
