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
        self.core = IngestCore(cfg, self, self._stop)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5,
                                  manual_ack=True)
        if m.username:
            password = m.password_file.read_text().strip() if m.password_file else None
            self.client.username_pw_set(m.username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
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
        with self._cond:
            self._queue.append(Incoming(msg.topic, bytes(msg.payload), (self._gen, msg.mid, msg.qos), time.time()))
            held = len(self._queue) + self._holding
            self.core.note_unacked(held)
            if len(self._queue) >= self.cfg.ingest.batch_max:
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
        """Wait for the first message, then up to batch_ms more (or until batch_max)."""
        limit = self.cfg.ingest.batch_max
        with self._cond:
            if not self._queue:
                self._cond.wait(timeout=min(self.cfg.ingest.sweep_s, 0.25))
                if not self._queue:
                    return []
            deadline = self._queue[0].received + self.cfg.ingest.batch_ms / 1000.0
            while len(self._queue) < limit and not self._stop.is_set():
                left = deadline - time.time()
                if left <= 0:
                    break
                self._cond.wait(timeout=left)
            n = min(limit, len(self._queue))
            self._holding = n
            return [self._queue.popleft() for _ in range(n)]

    def _ack(self, batch: list[Incoming]) -> None:
        with self._cond:
            gen = self._gen
        for m in batch:
            tag_gen, mid, qos = cast(tuple[int, int, int], m.tag)
            if tag_gen == gen and qos > 0:
                self.client.ack(mid, qos)

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
