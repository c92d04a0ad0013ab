"""The district ingest worker on MQTT 5: a shared subscription, manual PUBACK after the commit.

Many workers join one shared-subscription group; the broker spreads the gateways' messages over
them. paho's network thread only queues what arrives; the worker thread batches (≤ batch_max or
batch_ms), commits, and only then acknowledges each message (`manual_ack`). The broker sends at
most Receive Maximum unacknowledged messages to one worker, so memory stays bounded while
PostgreSQL is away, and what a killed worker held is redelivered (or, if the broker strands it,
resent by the gateway, whose outbox stays the durability boundary until the watermark covers it).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections import deque
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from district.config import DistrictConfig
from district.pipeline import Incoming, IngestCore

log = logging.getLogger(__name__)


def _props(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho's Properties is untyped


_PUBACK = 0x40
# The paho 2.x internals the lean paths below use; without them (another paho) the stock paths run.
_LEAN = all(hasattr(mqtt.Client, n) for n in ("_handle_publish", "_packet_queue"))


class _IngestClient(mqtt.Client):
    """paho's client with a lighter inbound PUBLISH and batched PUBACKs, for the ingest worker only.

    Stock paho builds a Properties object for every MQTT 5 PUBLISH (~12 µs: two dicts of every
    property name, rebuilt per message), then an MQTTMessage, then looks the topic up in its
    per-topic callbacks; and it queues each PUBACK as its own packet, which costs a wake-up write
    and a send() per message. py-spy put that at about a quarter of a worker's samples. The worker
    needs none of it: it reads the topic, payload, packet id and QoS, and it never asks the broker
    for topic aliases (Topic Alias Maximum stays 0) or subscription identifiers, so the properties
    of a PUBLISH to it carry nothing it uses; they are skipped by their length, as MQTT 5 allows.
    """

    on_fast_message: Any = None  # (topic, payload, mid, qos) -> None

    def _handle_publish(self) -> Any:
        handler = self.on_fast_message
        pkt = self._in_packet  # paho 2.x internals (see _LEAN)
        header, data = pkt["command"], pkt["packet"]
        qos = (header & 0x06) >> 1
        if handler is None or qos == 2 or self._protocol != mqtt.MQTTv5 or not self._manual_ack:
            return super()._handle_publish()
        try:
            tlen = int.from_bytes(data[0:2], "big")
            topic = bytes(data[2:2 + tlen]).decode("utf-8")
            pos = 2 + tlen
            mid = 0
            if qos:
                mid = int.from_bytes(data[pos:pos + 2], "big")
                pos += 2
            plen, shift = 0, 0
            while True:  # the properties' length, a variable byte integer
                b = data[pos]
                pos += 1
                plen |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
                if shift > 21:
                    raise ValueError("malformed property length")
            pos += plen
            if pos > len(data) or not topic:
                raise ValueError("malformed PUBLISH")
        except (IndexError, ValueError, UnicodeDecodeError):
            return super()._handle_publish()  # paho reports what is wrong
        handler(topic, bytes(data[pos:]), mid, qos)
        return mqtt.MQTT_ERR_SUCCESS

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK every QoS 1 message in `mids`, as one write."""
        if not mids:
            return
        if not _LEAN:
            for mid in mids:
                self.ack(mid, 1)
            return
        packet = b"".join(_PUBACK_STRUCT.pack(_PUBACK, 2, mid) for mid in mids)
        self._packet_queue(_PUBACK, packet, 0, 0)


_PUBACK_STRUCT = struct.Struct("!BBH")


class MqttIngestWorker:
    """One worker process's MQTT side; `run()` blocks until `stop()`."""

    def __init__(self, cfg: DistrictConfig, *, client_id: str | None = None) -> None:
        self.cfg = cfg
        m = cfg.mqtt
        self.client_id = client_id or m.client_id or f"edgegw-ingest-{socket.gethostname()}-{os.getpid()}"
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._queue: deque[Incoming] = deque()
        self._gen = 0  # connection generation: a message id is only valid on the connection it came on
        self._holding = 0  # messages taken into the batch being committed (not acknowledged yet)
        self._connected = threading.Event()
        self._fill = min(cfg.ingest.batch_max, m.receive_max)  # a full batch: take it without waiting
        self.core = IngestCore(cfg, self, self._stop)
        self.client = _IngestClient(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5,
                                    manual_ack=True)
        if m.username:
            password = m.password_file.read_text().strip() if m.password_file else None
            self.client.username_pw_set(m.username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        if _LEAN:
            self.client.on_fast_message = self._on_fast_message
        self.client.reconnect_delay_set(1, 10)
        # paho keeps acknowledged outgoing publishes in memory only; a large queue is fine here.
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(1000)

    # -- network thread --------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("broker refused the ingest worker: %s", rc)
            return
        with self._cond:
            self._gen += 1
        prefix, group = self.cfg.mqtt.topic_prefix, self.cfg.mqtt.group
        client.subscribe([(f"$share/{group}/{prefix}/+/+/+/events/#", 1), (f"$share/{group}/{prefix}/+/+/+/status", 1)])
        self._connected.set()
        self.core.request_republish()
        log.info("ingest worker %s connected to %s:%d", self.client_id, self.cfg.mqtt.host, self.cfg.mqtt.port)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._connected.clear()
        with self._cond:
            self._gen += 1
        if not self._stop.is_set():
            log.warning("ingest worker lost the broker: %s", rc)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_fast_message(msg.topic, bytes(msg.payload), msg.mid, msg.qos)

    def _on_fast_message(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        with self._cond:
            self._queue.append(Incoming(topic, payload, (self._gen, mid, qos), time.time()))
            held = len(self._queue) + self._holding
            self.core.note_unacked(held)
            if len(self._queue) >= self._fill:
                self._cond.notify()

    # -- Publisher -------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        """QoS 1 publish of a watermark or replay request; False while disconnected."""
        if not self._connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    # -- worker thread ---------------------------------------------------------------------------
    def _take_batch(self) -> list[Incoming]:
        """Wait for the first message, then up to batch_ms more, or until the batch is full: batch_max
        messages, or Receive Maximum where that is smaller.

        Nothing is held unacknowledged when a batch is taken (the previous one was acknowledged), so
        once the queue holds Receive Maximum messages the broker sends no more until this batch is
        acknowledged: waiting out batch_ms then only idles. With a window below batch_max (the fault
        tests' 300) that wait came on every batch, catching up after an outage included."""
        with self._cond:
            if not self._queue:
                self._cond.wait(timeout=min(self.cfg.ingest.sweep_s, 0.25))
                if not self._queue:
                    return []
            deadline = self._queue[0].received + self.cfg.ingest.batch_ms / 1000.0
            while len(self._queue) < self._fill and not self._stop.is_set():
                left = deadline - time.time()
                if left <= 0:
                    break
                self._cond.wait(timeout=left)
            # Up to batch_max: mosquitto overshoots the window once acknowledgements flow (§1).
            n = min(self.cfg.ingest.batch_max, len(self._queue))
            self._holding = n
            return [self._queue.popleft() for _ in range(n)]

    def _ack(self, batch: list[Incoming]) -> None:
        with self._cond:
            gen = self._gen
        mids = []
        for m in batch:
            tag_gen, mid, qos = cast(tuple[int, int, int], m.tag)
            if tag_gen == gen and qos == 1:
                mids.append(mid)
            elif tag_gen == gen and qos == 2:
                self.client.ack(mid, qos)
        self.client.ack_many(mids)

    def run(self) -> None:
        """Connect (retrying) and ingest until stop()."""
        props = _props(PacketTypes.CONNECT)
        props.ReceiveMaximum = self.cfg.mqtt.receive_max
        props.SessionExpiryInterval = self.cfg.mqtt.session_expiry_s
        self.client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()
        try:
            while not self._stop.is_set():
                batch = self._take_batch()
                if batch:
                    result = self.core.commit(batch)
                    if result is None:
                        break  # stopping: leave the batch unacknowledged; it will be delivered again
                    with self._cond:
                        # Before the PUBACKs go out: the broker sends more only once it has them.
                        self._holding = 0
                    self._ack(batch)
                    self.core.after_commit(result)
                elif self._connected.is_set():
                    self.core.publish_marks()
                self.core.tick(time.monotonic())
        finally:
            # An orderly stop ends the session too (Session Expiry 0 on DISCONNECT): otherwise the broker
            # keeps routing this worker's share of the group to a session nobody will resume.
            bye = _props(PacketTypes.DISCONNECT)
            bye.SessionExpiryInterval = 0
            self.client.disconnect(properties=bye)
            self.client.loop_stop()
            self.core.close()
            log.info("ingest worker %s stopped: %s", self.client_id, self.core.stats)

    def stop(self) -> None:
        """Ask run() to return (thread- and signal-safe)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
