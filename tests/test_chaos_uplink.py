"""Chaos 2: `kill -9` of the real uplink daemon mid-burst, restarted: 0 lost, duplicates ≤ W, same event_id."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from edge.outbox import Outbox
from tests._chaos import Subscriber, first_receipt_order_ok, gateway_config, producer, uplink_daemon, wait_until
from tests.conftest import Broker

WINDOW = 16


def _kill_uplink_repeatedly(tmp_path: Path, broker: Broker, *, events: int, rate: int, kills: int,
                            seed: int) -> None:
    rng = random.Random(seed)
    db = tmp_path / "outbox.db"
    Outbox(db).close()
    sub = Subscriber(broker.port, client_id="platform")
    cfg = gateway_config(tmp_path, broker.port, uplink={"window": WINDOW})
    prod = producer(db, tmp_path, "--count", str(events), "--batch", "5", "--rate", str(rate))
    up = uplink_daemon(cfg, tmp_path)
    try:
        for _ in range(kills):
            # Kill only once it is really publishing, at a random point of the burst.
            target = len(sub.got) + rng.randint(20, 200)
            assert wait_until(lambda t=target: len(sub.got) > t, 30), up.log_path.read_text()[-3000:]
            up.kill9()
            up = uplink_daemon(cfg, tmp_path)
        assert prod.wait(120) == 0, prod.log_path.read_text()[-3000:]
        acked = set(prod.ids())
        assert len(acked) == events
        missing = sub.wait_for(acked, timeout=60)
        assert not missing, f"{len(missing)} acknowledged event(s) never reached the subscriber"
    finally:
        up.stop()
        prod.stop()
        sub.close()
    counts = Counter(g.event_id for g in sub.got)
    duplicates = sum(c - 1 for c in counts.values())
    # At most the window (in flight, or acknowledged but not yet deleted) per kill goes out twice.
    assert duplicates <= WINDOW * kills, f"{duplicates} duplicates for {kills} kills"
    print(f"chaos uplink: {events} events, {kills} kills, {duplicates} duplicate deliveries (bound {WINDOW * kills})")
    first: dict[str, bytes] = {}
    for g in sub.got:
        assert first.setdefault(g.event_id, g.payload) == g.payload  # a duplicate is the same event, byte for byte
    assert all(first_receipt_order_ok(sub.got).values())
    ob = Outbox(db)
    assert ob.depth() == 0 and ob.integrity_ok()
    assert ob.counters()["delivered"] >= events
    ob.close()


def test_uplink_killed_mid_burst_loses_nothing_and_duplicates_at_most_the_window(tmp_path: Path,
                                                                                 broker: Broker) -> None:
    _kill_uplink_repeatedly(tmp_path, broker, events=1000, rate=500, kills=2, seed=2)


@pytest.mark.slow
def test_uplink_killed_many_times_during_a_long_burst(tmp_path: Path, broker: Broker) -> None:
    _kill_uplink_repeatedly(tmp_path, broker, events=10_000, rate=400, kills=12, seed=7)
