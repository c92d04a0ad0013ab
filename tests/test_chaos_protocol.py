"""A broker that only speaks MQTT 3.1.1: the uplink falls back cleanly and keeps its guarantees.

The 3.1.1-only broker is mosquitto behind a front that refuses MQTT 5 the two ways real ones do:
a 3.1.1 CONNACK "unacceptable protocol version" (RabbitMQ 3.x), or hanging up (some others).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from edge.configbase import BackoffConfig
from edge.outbox import Outbox, OutboxLimits
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Origin
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.uplink.uplink import Uplink
from tests._chaos import ORIGIN, Subscriber, V311OnlyProxy, observations, wait_until
from tests.conftest import Broker

FAST = UplinkConfig(window=16, status_interval_s=0.3, backoff=BackoffConfig(initial_s=0.05, max_s=0.3))


def _events(n: int, start: int = 0) -> list[object]:
    boundary = PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin(*ORIGIN))
    return [boundary.to_event(o) for o in observations(n, start)]


@pytest.mark.parametrize("mode", ["connack", "close"])
def test_falls_back_to_311_and_delivers_everything_in_order(tmp_path: Path, broker: Broker, mode: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    proxy = V311OnlyProxy(broker.port, mode)
    ob = Outbox(tmp_path / "outbox.db")
    sent = [r for i in range(10) for r in ob.append(_events(30, i * 30)).records]  # type: ignore[arg-type]
    sub = Subscriber(broker.port, client_id="platform")
    up = Uplink(ob, Origin(*ORIGIN), MqttConfig(port=proxy.port, protocol="5"), FAST)
    caplog.set_level(logging.INFO, "edge.uplink")
    t = threading.Thread(target=up.run, daemon=True)
    t.start()
    try:
        assert not sub.wait_for({r.event_id for r in sent}, 30)
        assert wait_until(lambda: ob.depth() == 0, 10)
        assert wait_until(lambda: bool(sub.statuses), 10)
    finally:
        up.stop()
        t.join(10)
        sub.close()
        proxy.close()
    assert proxy.refused >= 1 and proxy.relayed >= 1
    assert up.protocol == "3.1.1" and sub.statuses[-1]["uplink"]["protocol"] == "3.1.1"
    assert "falling back to MQTT 3.1.1" in caplog.text
    for source in {r.source_id for r in sent}:
        seqs = [g.seq for g in sub.got if g.source == source]
        assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))
    ob.close()


def test_a_path_that_hangs_up_on_everything_does_not_pin_311(tmp_path: Path, broker: Broker) -> None:
    proxy = V311OnlyProxy(broker.port, "close-all")
    ob = Outbox(tmp_path / "outbox.db")
    sent = ob.append(_events(20)).records  # type: ignore[arg-type]
    sub = Subscriber(broker.port, client_id="platform")
    up = Uplink(ob, Origin(*ORIGIN), MqttConfig(port=proxy.port, protocol="5"), FAST)
    t = threading.Thread(target=up.run, daemon=True)
    t.start()
    try:
        assert wait_until(lambda: proxy.levels.count(4) >= 2, 20)
        proxy.mode = "relay-all"  # the path heals; the broker speaks MQTT 5
        assert not sub.wait_for({r.event_id for r in sent}, 20)
    finally:
        up.stop()
        t.join(10)
        sub.close()
        proxy.close()
    # 3.1.1 was tried as a guess, then MQTT 5 again: the guess did not stick.
    assert up.protocol == "5"
    levels = proxy.levels
    assert levels.count(5) >= 2 * levels.count(4) - 1
    ob.close()


def test_311_enforces_expiry_locally_and_counts_it(tmp_path: Path, broker: Broker) -> None:
    now = [1_800_000_000.0]
    ob = Outbox(tmp_path / "outbox.db", limits=OutboxLimits(retention_s=60), clock=lambda: now[0])
    old = ob.append(_events(40)).records  # type: ignore[arg-type]
    now[0] += 61  # their retention passed while the broker was unreachable
    fresh = ob.append(_events(40, 40)).records  # type: ignore[arg-type]
    sub = Subscriber(broker.port, client_id="platform")
    up = Uplink(ob, Origin(*ORIGIN), MqttConfig(host=broker.host, port=broker.port, protocol="3.1.1"), FAST,
                clock=lambda: now[0])
    t = threading.Thread(target=up.run, daemon=True)
    t.start()
    try:
        assert not sub.wait_for({r.event_id for r in fresh}, 20)
        assert wait_until(lambda: ob.depth() == 0, 10)
        assert wait_until(lambda: any(s["drops"]["expired"] == len(old) for s in sub.statuses), 10)
    finally:
        up.stop()
        t.join(10)
        sub.close()
    assert not sub.ids() & {r.event_id for r in old}  # an expired event is never published
    counters = ob.counters()
    assert counters["expired"] == len(old) and counters["delivered"] == len(fresh)
    by_kind = sub.statuses[-1]["drops"]["expired_by_kind"]
    assert sum(by_kind.values()) == len(old)
    assert json.loads(fresh[0].payload)["event_id"] == fresh[0].event_id
    ob.close()
