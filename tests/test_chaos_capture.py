"""Chaos 3: `kill -9` of the committing process at random points, many times, while the uplink drains.

Every event whose commit returned (printed by the producer) must survive: still in the outbox or
delivered to the subscriber. `PRAGMA integrity_check` must be ok after each crash.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from edge.configbase import BackoffConfig
from edge.outbox import Outbox
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.uplink.uplink import Uplink
from tests._chaos import Subscriber, producer
from tests._events import ORIGIN
from tests.conftest import Broker


def _crash_producer_repeatedly(tmp_path: Path, broker: Broker, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    db = tmp_path / "outbox.db"
    uplink_ob = Outbox(db)
    sub = Subscriber(broker.port, client_id="platform")
    up = Uplink(uplink_ob, ORIGIN, MqttConfig(host=broker.host, port=broker.port),
                UplinkConfig(window=16, backoff=BackoffConfig(initial_s=0.05, max_s=0.3)))
    t = threading.Thread(target=up.run, daemon=True)
    t.start()
    acked: list[str] = []
    seqs_seen: dict[str, int] = {}
    try:
        for i in range(kills):
            # Batches of 1..40 events at full speed: a kill lands inside a transaction most of the time.
            prod = producer(db, tmp_path, "--batch", str(rng.randint(1, 40)), "--start", str(i * 100_000))
            prod.wait_ready()
            time.sleep(rng.uniform(0.01, 0.4))
            prod.kill9()
            acked += prod.ids()
            check = Outbox(db)  # what the restarted daemon would open
            assert check.integrity_ok(), f"integrity_check failed after crash {i}"
            last = check.last_seq()
            # Sequence numbers never go backwards across crashes (no reuse after a torn transaction).
            assert all(last.get(s, 0) >= n for s, n in seqs_seen.items())
            seqs_seen = last
            check.close()
        assert acked, "the producer never acknowledged anything"
        missing = sub.wait_for(set(acked), timeout=60)
        assert not missing, f"{len(missing)} acknowledged event(s) lost"
    finally:
        up.stop()
        t.join(10)
        sub.close()
    got_seqs: dict[str, set[int]] = {}
    for g in sub.got:
        got_seqs.setdefault(g.source, set()).add(g.seq)
    # Every seq a crashed process assigned was either committed whole (and delivered) or not at all.
    final = Outbox(db)
    for source, last_seq in final.last_seq().items():
        assert got_seqs[source] == set(range(1, last_seq + 1)), f"gap in {source}"
    assert final.depth() == 0
    final.close()
    uplink_ob.close()
    print(f"chaos capture: {kills} crashes, {len(acked)} acknowledged events, all delivered")


def test_capture_killed_at_random_points_loses_no_acknowledged_event(tmp_path: Path, broker: Broker) -> None:
    _crash_producer_repeatedly(tmp_path, broker, kills=6, seed=3)


@pytest.mark.slow
def test_capture_killed_a_hundred_times(tmp_path: Path, broker: Broker) -> None:
    _crash_producer_repeatedly(tmp_path, broker, kills=100, seed=11)
