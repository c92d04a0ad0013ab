"""The city-scale ingest worker: RabbitMQ quorum queue over AMQP, manual acks after the commit.

Gateways publish with MQTT (3.1.1 on Debian 12's RabbitMQ 3.10) to the cluster's MQTT plugin, which
routes `edgegw/d/c/g/events/k` through `amq.topic` as routing key `edgegw.d.c.g.events.k`. The
platform declares one durable quorum queue bound to the events and status keys, so a gateway's
PUBACK (sent once the queue confirmed the message) means a majority of the nodes hold it. Workers
consume with a prefetch window and acknowledge (`multiple=True`) only after the batch is committed;
what a dead worker or node held is redelivered, and event_id absorbs the duplicates.

Watermarks and replay requests go back the same way: published to `amq.topic` with the MQTT topic's
routing key, the MQTT plugin delivers them to the gateway's subscription. (They are not retained: a
gateway that reconnects gets its mark with the next batch, or when its resend is seen as a duplicate.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import pika
import pika.exceptions

from district.config import DistrictConfig
from district.pipeline import Incoming, IngestCore

log = logging.getLogger(__name__)

_EXCHANGE = "amq.topic"


def mqtt_topic(routing_key: str) -> str:
    """`edgegw.d.c.g.events.k` → `edgegw/d/c/g/events/k` (the MQTT plugin maps '/' to '.')."""
    return routing_key.replace(".", "/")


def routing_key(topic: str) -> str:
    """The inverse of `mqtt_topic`."""
    return topic.replace("/", ".")


def declare(channel: Any, cfg: DistrictConfig) -> None:
    """Declare the quorum queue and its bindings (idempotent; every worker does it on connect)."""
    prefix = cfg.mqtt.topic_prefix
    channel.queue_declare(queue=cfg.amqp.queue, durable=True, arguments={"x-queue-type": "quorum"})
    for key in (f"{prefix}.*.*.*.events.*", f"{prefix}.*.*.*.status"):
        channel.queue_bind(queue=cfg.amqp.queue, exchange=_EXCHANGE, routing_key=key)


class AmqpIngestWorker:
    """One worker consuming the quorum queue; `run()` blocks until `stop()`."""

    def __init__(self, cfg: DistrictConfig) -> None:
        self.cfg = cfg
        self._stop = threading.Event()
        self._channel: Any = None
        self._buffer: list[Incoming] = []
        self.core = IngestCore(cfg, self, self._stop)
        self._params = [pika.URLParameters(u.strip()) for u in cfg.amqp.url.split(",") if u.strip()]
        for p in self._params:
            p.heartbeat = 15
            p.blocked_connection_timeout = 30

    # -- Publisher -------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        """Send a watermark or replay request back to the gateway through amq.topic."""
        if self._channel is None or not self._channel.is_open:
            return False
        try:
            self._channel.basic_publish(_EXCHANGE, routing_key(topic), payload,
                                        pika.BasicProperties(delivery_mode=1, content_type="application/json"))
        except pika.exceptions.AMQPError:
            return False
        return True

    # -- consuming -------------------------------------------------------------------------------
    def _on_message(self, _ch: Any, method: Any, _props: Any, body: bytes) -> None:
        self._buffer.append(Incoming(mqtt_topic(method.routing_key), body, method.delivery_tag, time.time()))

    def _session(self, conn: pika.BlockingConnection) -> None:
        ch = conn.channel()
        declare(ch, self.cfg)
        ch.basic_qos(prefetch_count=self.cfg.amqp.prefetch)
        ch.basic_consume(self.cfg.amqp.queue, self._on_message, auto_ack=False)
        self._channel = ch
        self.core.request_republish()
        log.info("AMQP ingest worker consuming %s", self.cfg.amqp.queue)
        batch_s = self.cfg.ingest.batch_ms / 1000.0
        while not self._stop.is_set():
            if conn.is_closed:
                raise pika.exceptions.StreamLostError("the connection closed")
            conn.process_data_events(time_limit=batch_s if not self._buffer else 0.005)
            first = self._buffer[0].received if self._buffer else None
            limit = self.cfg.ingest.batch_max
            if self._buffer and (len(self._buffer) >= limit or time.time() - (first or 0) >= batch_s):
                batch, self._buffer = self._buffer[:limit], self._buffer[limit:]
                result = self.core.commit(batch)
                if result is None:
                    return  # stopping: unacknowledged, the queue redelivers
                # Tags grow per channel: acknowledging the highest with multiple=True covers the batch.
                ch.basic_ack(delivery_tag=max(int(str(m.tag)) for m in batch), multiple=True)
                self.core.after_commit(result)
            self.core.tick(time.monotonic())

    def run(self) -> None:
        """Connect to any node of the cluster (retrying), consume until stop()."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                conn = pika.BlockingConnection(self._params)
            except pika.exceptions.AMQPError as exc:
                log.warning("cannot reach any RabbitMQ node: %s", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            try:
                self._session(conn)
            except (pika.exceptions.AMQPError, OSError, ValueError) as exc:
                # (pika raises ValueError from process_data_events when the socket died under it.)
                # Unacknowledged deliveries return to the queue; what was buffered is simply dropped here.
                log.warning("AMQP connection lost (%s); reconnecting", exc or type(exc).__name__)
                self._stop.wait(0.5)
            finally:
                self._channel = None
                self._buffer = []
                if conn.is_open:
                    with contextlib.suppress(pika.exceptions.AMQPError, OSError, ValueError):
                        conn.close()
        self.core.close()
        log.info("AMQP ingest worker stopped: %s", self.core.stats)

    def stop(self) -> None:
        """Ask run() to return (signal-safe)."""
        self._stop.set()
