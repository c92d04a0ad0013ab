"""Chaos 1: the broker goes away during a burst and comes back: 0 lost, per-source order, every id received.

What "received" can honestly mean depends on who holds the message while the broker is down:
- PUBACK mode: a PUBACK hands custody to the broker, so the broker must keep it. The test stops it
  the way an upgrade or `systemctl restart` does (SIGTERM, persistence on, the platform subscriber
  on a persistent session): mosquitto saves its sessions and queued messages and restores them.
- End-to-end mode: custody stays with the gateway until the platform's committed watermark covers
  an event, so the broker may crash (`kill -9`, persistence off: it forgets everything) and the
  real district ingest worker commit to PostgreSQL; whatever the crash swallowed is sent again.
A broker crash in PUBACK mode can lose what the broker acknowledged but had not delivered yet;
that is the broker's guarantee, not the gateway's, and the reason end-to-end mode exists
(docs/delivery.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edge.outbox import Outbox
from tests._chaos import (
    Subscriber,
    first_receipt_order_ok,
    gateway_config,
    mosquitto,  # noqa: F401  (fixture)
    outbox_depth,
    pg_rows,
    platform_dsn,  # noqa: F401  (fixture)
    platform_worker,
    platform_worker_config,
    producer,
    uplink_daemon,
    uplink_state,
    wait_until,
)


def _outage_puback(tmp_path: Path, mosquitto: Any, *, events: int, rate: int, outage_s: float) -> None:  # noqa: F811
    store = tmp_path / "broker-store"
    store.mkdir()
    broker = mosquitto(f"persistence true\npersistence_location {store}/\n")
    db = tmp_path / "outbox.db"
    Outbox(db).close()
    sub = Subscriber(broker.port, client_id="platform", persistent=True)
    up = uplink_daemon(gateway_config(tmp_path, broker.port), tmp_path)
    prod = producer(db, tmp_path, "--count", str(events), "--batch", "5", "--rate", str(rate))
    try:
        assert wait_until(lambda: len(sub.got) > events // 5, 60), up.log_path.read_text()[-3000:]
        broker.terminate()
        down_at = time.monotonic()
        # While it is down: capture keeps committing, the uplink reports why it cannot deliver.
        assert wait_until(lambda: "connection refused" in str(uplink_state(db).get("last_error")), 10)
        time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
        broker.start()
        assert prod.wait(max(60, events / rate * 3)) == 0
        acked = set(prod.ids())
        assert len(acked) == events
        missing = sub.wait_for(acked, timeout=120)
        assert not missing, f"{len(missing)} acknowledged event(s) never reached the platform subscriber"
        assert wait_until(lambda: uplink_state(db).get("connected") is True, 10)
    finally:
        up.stop()
        prod.stop()
        sub.close()
    order = first_receipt_order_ok(sub.got)
    assert set(order) == {"cam1", "cam2", "reader1", "sniffer1"} and all(order.values()), order
    ob = Outbox(db)
    assert ob.depth() == 0 and ob.counters()["delivered"] >= events
    ob.close()
    print(f"chaos broker (puback, orderly restart): {events} events, outage {outage_s:.0f} s, "
          f"{len(sub.got) - len(acked)} duplicate deliveries")


def _outage_end_to_end(tmp_path: Path, mosquitto: Any, dsn: str, *, events: int, rate: int,  # noqa: F811
                       outage_s: float) -> None:
    broker = mosquitto("persistence false\n")
    db = tmp_path / "outbox.db"
    Outbox(db).close()
    # The real district ingest worker into PostgreSQL; it reconnects to the restarted broker by itself.
    consumer = platform_worker(platform_worker_config(tmp_path, broker.port), dsn, broker.port, tmp_path,
                               "chaos-broker-worker")
    cfg = gateway_config(tmp_path, broker.port, uplink={"ack_mode": "end_to_end", "ack_timeout_s": 2.0})
    up = uplink_daemon(cfg, tmp_path)
    prod = producer(db, tmp_path, "--count", str(events), "--batch", "5", "--rate", str(rate))
    try:
        assert wait_until(lambda: pg_rows(dsn, "SELECT count(*) FROM events")[0][0] > events // 5, 60), \
            consumer.log_path.read_text()[-3000:]
        broker.kill9()  # everything the broker held in memory is gone
        time.sleep(outage_s)
        broker.start()
        assert prod.wait(max(60, events / rate * 3)) == 0
        acked = set(prod.ids())
        assert len(acked) == events

        def all_committed() -> bool:
            return acked <= {str(r[0]) for r in pg_rows(dsn, "SELECT event_id FROM events")}

        assert wait_until(all_committed, 120, step=0.2), "the platform never committed every acknowledged event"
        ob = Outbox(db)
        last, boot = ob.last_seq(), ob.boot
        ob.close()
        # The platform's watermark reaches every source's last seq: nothing missing below it.
        assert wait_until(lambda: dict(pg_rows(dsn, "SELECT source, seq FROM marks WHERE boot = %s",
                                               (boot,))) == last, 30)
        assert not pg_rows(dsn, "SELECT * FROM gaps")
        # ...and the gateway, seeing the watermark, lets go of every row.
        assert wait_until(lambda: outbox_depth(db) == 0, 30)
    finally:
        up.stop()
        prod.stop()
        consumer.stop()
    # Exactly once: every event stored, none twice, nothing else.
    assert pg_rows(dsn, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(events, events)]
    ob = Outbox(db)
    resent = ob.counters().get("resent", 0)
    ob.close()
    print(f"chaos broker (end-to-end, kill -9): {events} events, outage {outage_s:.0f} s, {resent} resent, "
          "duplicates absorbed by event_id, 0 lost")


def test_broker_restarted_mid_burst_puback_mode(tmp_path: Path, mosquitto: Any) -> None:  # noqa: F811
    _outage_puback(tmp_path, mosquitto, events=800, rate=300, outage_s=2)


def test_broker_crash_mid_burst_end_to_end_mode(tmp_path: Path, mosquitto: Any,  # noqa: F811
                                                 platform_dsn: str) -> None:  # noqa: F811
    _outage_end_to_end(tmp_path, mosquitto, platform_dsn, events=800, rate=300, outage_s=2)


@pytest.mark.slow
def test_broker_down_for_a_minute_during_10k_burst_puback_mode(tmp_path: Path, mosquitto: Any) -> None:  # noqa: F811
    _outage_puback(tmp_path, mosquitto, events=10_000, rate=100, outage_s=65)


@pytest.mark.slow
def test_broker_crashed_for_a_minute_during_10k_burst_end_to_end_mode(tmp_path: Path, mosquitto: Any,  # noqa: F811
                                                                      platform_dsn: str) -> None:  # noqa: F811
    _outage_end_to_end(tmp_path, mosquitto, platform_dsn, events=10_000, rate=100, outage_s=65)
