"""A test subscriber that records every message it receives from a real broker."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass
class Received:
    """One message as the subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool
    properties: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


ALL_PAYLOADS: list[bytes] = []
"""Every payload any Collector received in this test session; conftest scans it at the end."""
RAW_IDENTIFIERS: set[str] = set()
"""Raw identifiers tests fed into the gateway; none may appear in any payload."""


class Collector:
    """Subscribes to `topic` and collects messages (thread-safe)."""

    def __init__(self, host: str, port: int, topic: str = "#", client_id: str = "test-collector") -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("collector could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props: dict[str, Any] = {}
        if msg.properties is not None and hasattr(msg.properties, "MessageExpiryInterval"):
            props["MessageExpiryInterval"] = msg.properties.MessageExpiryInterval
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), props))
            ALL_PAYLOADS.append(bytes(msg.payload))

    def events(self) -> list[Received]:
        """Messages on .../events/... topics."""
        with self._lock:
            return [m for m in self.messages if "/events/" in m.topic]

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Received]:
        """Wait until at least `n` event messages arrived; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = self.events()
            if len(ev) >= n:
                return ev
            time.sleep(0.02)
        return self.events()

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()
