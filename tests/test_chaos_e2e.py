"""Chaos 6: end-to-end acknowledgement mode with a platform consumer that is `kill -9`ed mid-burst.

The consumer (edge/platform_ack.py, a real process) commits events to SQLite and publishes its
committed watermark; it runs on a clean session, so whatever the broker routes while it is dead is
gone. The gateway must notice that the watermark does not cover those events and send them again.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from district.ack import PlatformConsumer
from edge.configbase import BackoffConfig
from edge.outbox import Outbox, OutboxLimits
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Origin
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.uplink.uplink import Uplink
from tests._chaos import ORIGIN, gateway_config, observations, platform_consumer, producer, uplink_daemon, wait_until
from tests.conftest import Broker


def _rows(path: Path, query: str) -> list[Any]:
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=10)
    try:
        return db.execute(query).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def _consumer_killed_mid_burst(tmp_path: Path, broker: Broker, *, events: int, rate: int, kills: int) -> None:
    db = tmp_path / "outbox.db"
    Outbox(db).close()
    cdb = tmp_path / "platform.db"
    consumer = platform_consumer(cdb, broker.port, tmp_path)
    cfg = gateway_config(tmp_path, broker.port, uplink={"ack_mode": "end_to_end", "ack_timeout_s": 1.5})
    up = uplink_daemon(cfg, tmp_path)
    prod = producer(db, tmp_path, "--count", str(events), "--batch", "5", "--rate", str(rate))
    try:
        for k in range(kills):
            target = (k + 1) * events // (kills + 2)
            assert wait_until(lambda t=target: len(_rows(cdb, "SELECT 1 FROM events")) >= t, 60), \
                consumer.log_path.read_text()[-3000:]
            consumer.kill9()  # uncommitted batch, unpublished watermark: all lost with it
            time.sleep(1.0)  # events routed meanwhile go nowhere (clean session)
            consumer = platform_consumer(cdb, broker.port, tmp_path)
        assert prod.wait(120) == 0
        acked = set(prod.ids())
        assert len(acked) == events
        assert wait_until(lambda: acked <= {r[0] for r in _rows(cdb, "SELECT event_id FROM events")}, 90, 0.2), \
            "events the platform never committed"
        assert wait_until(lambda: _depth(db) == 0, 30), "the gateway kept rows the watermark covers"
    finally:
        up.stop()
        prod.stop()
        consumer.stop()
    ob = Outbox(db)
    counters, last = ob.counters(), ob.last_seq()
    ob.close()
    assert dict(_rows(cdb, "SELECT source, seq FROM marks")) == last
    assert not _rows(cdb, "SELECT * FROM gaps")
    # The resend path really ran: events the dead consumer missed were sent again after the timeout.
    assert counters.get("resent", 0) > 0
    print(f"chaos e2e: {events} events, {kills} consumer kills, {counters['resent']} resent, 0 lost")


def _depth(db: Path) -> int:
    ob = Outbox(db)
    try:
        return ob.depth()
    finally:
        ob.close()


def test_platform_consumer_killed_mid_burst_gateway_resends_uncovered(tmp_path: Path, broker: Broker) -> None:
    _consumer_killed_mid_burst(tmp_path, broker, events=600, rate=300, kills=1)


@pytest.mark.slow
def test_platform_consumer_killed_many_times(tmp_path: Path, broker: Broker) -> None:
    _consumer_killed_mid_burst(tmp_path, broker, events=6000, rate=200, kills=8)


def test_watermark_passes_events_the_gateway_dropped_by_quota(tmp_path: Path, broker: Broker) -> None:
    """A quota drop must not stall the watermark forever: the status's seq floor closes the gap."""
    ob = Outbox(tmp_path / "outbox.db", limits=OutboxLimits(max_events=100))
    boundary = PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin(*ORIGIN))
    res = [ob.append([boundary.to_event(o) for o in observations(40, i * 40)]) for i in range(5)]
    assert sum(sum(r.dropped.values()) for r in res) == 100  # 200 committed, quota 100
    consumer = PlatformConsumer(tmp_path / "platform.db", broker.host, broker.port)
    ct = threading.Thread(target=consumer.run, daemon=True)
    ct.start()
    up = Uplink(ob, Origin(*ORIGIN), MqttConfig(host=broker.host, port=broker.port),
                UplinkConfig(window=16, ack_mode="end_to_end", ack_timeout_s=1.0, status_interval_s=0.3,
                             backoff=BackoffConfig(initial_s=0.05, max_s=0.3)))
    ut = threading.Thread(target=up.run, daemon=True)
    ut.start()
    try:
        last = ob.last_seq()
        assert wait_until(lambda: dict(_rows(tmp_path / "platform.db", "SELECT source, seq FROM marks")) == last, 30)
        assert wait_until(lambda: ob.depth() == 0, 10)
    finally:
        up.stop()
        consumer.stop()
        ut.join(10)
        ct.join(10)
    gaps = _rows(tmp_path / "platform.db", "SELECT source, seq_from, seq_to FROM gaps")
    lost = sum(b - a + 1 for _, a, b in gaps)
    assert lost == ob.counters()["dropped_quota"]  # every drop the gateway counted, the platform sees as a gap
    ob.close()
