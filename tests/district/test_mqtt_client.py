"""The ingest worker's lean MQTT 5 client against a real mosquitto: what its own PUBLISH decoding hands
over is what was published (with and without properties), and its batched PUBACKs acknowledge exactly
the messages named: a resumed session gets the others again, and only those."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from district.mqtt_worker import _LEAN, _IngestClient
from tests.conftest import Broker


class _Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes, int, int]] = []
        self.lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        with self.lock:
            self.got.append((topic, payload, mid, qos))

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes, int, int]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got) >= n:
                    return list(self.got)
            time.sleep(0.02)
        with self.lock:
            return list(self.got)


def _subscriber(broker: Broker, sink: _Sink, client_id: str) -> _IngestClient:
    c = _IngestClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)
    c.on_fast_message = sink
    subscribed = threading.Event()
    c.on_subscribe = lambda *_a: subscribed.set()
    c.on_connect = lambda cl, *_a: cl.subscribe("t/#", qos=1)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 300
    c.connect(broker.host, broker.port, clean_start=False, properties=props)
    c.loop_start()
    assert subscribed.wait(10)
    return c


def _publisher(broker: Broker) -> mqtt.Client:
    p = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
    p.connect(broker.host, broker.port)
    p.loop_start()
    return p


def test_lean_publish_decoding_and_batched_acks(broker: Broker) -> None:
    assert _LEAN  # paho 2.x as pinned: the lean path is the one under test
    sink = _Sink()
    sub = _subscriber(broker, sink, "lean-1")
    pub = _publisher(broker)
    sent = []
    for i in range(40):
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if i % 2:  # half with properties the client must skip: user properties, expiry, content type
            props.UserProperty = [("k", "v" * (i * 7))]
            props.MessageExpiryInterval = 600
            props.ContentType = "application/json"
        body = ("é" * i + "{}").encode() if i % 3 else b""
        topic = f"t/{'ü' * (i % 4)}x/{i}"
        pub.publish(topic, body, qos=1 if i % 5 else 0, properties=props).wait_for_publish(10)
        sent.append((topic, body, 1 if i % 5 else 0))
    got = sink.wait(40)
    assert [(t, b, q) for t, b, _m, q in got] == sent
    qos1 = [m for _t, _b, m, q in got if q == 1]
    assert len(set(qos1)) == len(qos1) == 32 and all(m > 0 for m in qos1)
    # Acknowledge the first half of the QoS 1 messages in one write; the session resumes on a new
    # connection and the broker sends the unacknowledged half again, and nothing else.
    acked, unacked = qos1[:16], qos1[16:]
    sub.ack_many(acked)
    time.sleep(0.5)  # the write goes out on paho's network thread
    sub.disconnect()
    sub.loop_stop()
    sink2 = _Sink()
    sub2 = _subscriber(broker, sink2, "lean-1")
    again = sink2.wait(16)
    time.sleep(1.0)  # anything beyond the 16 would arrive now
    redelivered = [(t, b) for t, b, _m, q in sink2.got if q == 1]
    expected = [(t, b) for (t, b, q) in sent if q == 1][16:]
    assert sorted(redelivered) == sorted(expected), (len(again), len(unacked))
    sub2.ack_many([m for _t, _b, m, q in sink2.got if q == 1])
    time.sleep(0.3)
    sub2.disconnect()
    sub2.loop_stop()
    pub.disconnect()
    pub.loop_stop()
