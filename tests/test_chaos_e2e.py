"""Chaos 6: end-to-end acknowledgement mode with the real district ingest worker, `kill -9`ed mid-burst.

The worker (`python -m district ingest`, a real process) loads events into a real PostgreSQL
database (created and dropped here), acknowledges after the commit and publishes each gateway's
retained watermark. It runs on a clean session (`session_expiry_s = 0`, a new client id per start),
so whatever the broker routes while it is dead is gone — the worst case of a shared subscriber
dying with messages in flight. The gateway must notice that the watermark does not cover those
events and send them again; every event it committed ends up stored exactly once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from district.config import load_config
from district.mqtt_worker import MqttIngestWorker
from edge.configbase import BackoffConfig
from edge.outbox import Outbox, OutboxLimits
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Origin
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.uplink.uplink import Uplink
from tests._chaos import (
    ORIGIN,
    gateway_config,
    observations,
    outbox_depth,
    pg_rows,
    platform_dsn,  # noqa: F401  (fixture)
    platform_worker,
    platform_worker_config,
    producer,
    uplink_daemon,
    wait_until,
)
from tests.conftest import Broker


def _consumer_killed_mid_burst(tmp_path: Path, broker: Broker, dsn: str, *, events: int, rate: int,
                               kills: int) -> None:
    db = tmp_path / "outbox.db"
    Outbox(db).close()
    # A dead worker loses what the broker routed meanwhile for every source at once, so no mark moves
    # past the loss and the gateway holds its timeout resend (it cannot tell a platform that lost
    # messages from one that is away) until its bound, 8 x ack_timeout_s = 12 s after the send. The
    # platform's replay requests, which would fill the gaps first, come only after 30 s here, so
    # the test shows the gateway's own path.
    wcfg = platform_worker_config(tmp_path, broker.port, replay_after_s=30.0)
    starts = iter(range(kills + 1))
    consumer = platform_worker(wcfg, dsn, broker.port, tmp_path, f"chaos-worker-{next(starts)}")
    cfg = gateway_config(tmp_path, broker.port, uplink={"ack_mode": "end_to_end", "ack_timeout_s": 1.5})
    up = uplink_daemon(cfg, tmp_path)
    prod = producer(db, tmp_path, "--count", str(events), "--batch", "5", "--rate", str(rate))
    try:
        for k in range(kills):
            target = (k + 1) * events // (kills + 2)
            assert wait_until(lambda t=target: pg_rows(dsn, "SELECT count(*) FROM events")[0][0] >= t, 60), \
                consumer.log_path.read_text()[-3000:]
            consumer.kill9()  # uncommitted batch, unacknowledged messages, unpublished watermark: all lost
            time.sleep(1.0)  # events routed meanwhile go nowhere (clean session)
            consumer = platform_worker(wcfg, dsn, broker.port, tmp_path, f"chaos-worker-{next(starts)}")
        assert prod.wait(120) == 0
        acked = set(prod.ids())
        assert len(acked) == events
        assert wait_until(lambda: acked <= {str(r[0]) for r in pg_rows(dsn, "SELECT event_id FROM events")}, 90,
                          0.2), "events the platform never committed"
        assert wait_until(lambda: outbox_depth(db) == 0, 30), "the gateway kept rows the watermark covers"
    finally:
        up.stop()
        prod.stop()
        consumer.stop()
    ob = Outbox(db)
    counters, last, boot = ob.counters(), ob.last_seq(), ob.boot
    ob.close()
    # Exactly once: every committed event stored, none twice (event_id is the key), nothing else stored.
    assert pg_rows(dsn, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(events, events)]
    assert dict(pg_rows(dsn, "SELECT source, seq FROM marks WHERE boot = %s", (boot,))) == last
    assert not pg_rows(dsn, "SELECT * FROM gaps")
    assert not pg_rows(dsn, "SELECT * FROM rejects")
    # The resend path really ran: events the dead worker missed were sent again after the hold's bound.
    assert counters.get("resent", 0) > 0
    print(f"chaos e2e: {events} events, {kills} worker kills, {counters['resent']} resent, "
          f"{counters.get('replayed', 0)} replayed, 0 lost, 0 duplicated")


def test_platform_worker_killed_mid_burst_gateway_resends_uncovered(tmp_path: Path, broker: Broker,
                                                                     platform_dsn: str) -> None:  # noqa: F811
    _consumer_killed_mid_burst(tmp_path, broker, platform_dsn, events=600, rate=300, kills=1)


@pytest.mark.slow
def test_platform_worker_killed_many_times(tmp_path: Path, broker: Broker, platform_dsn: str) -> None:  # noqa: F811
    _consumer_killed_mid_burst(tmp_path, broker, platform_dsn, events=6000, rate=200, kills=8)


def test_watermark_passes_events_the_gateway_dropped_by_quota(tmp_path: Path, broker: Broker,
                                                              platform_dsn: str) -> None:  # noqa: F811
    """A quota drop must not stall the watermark forever: the status's seq floor closes the gap."""
    dsn = platform_dsn
    ob = Outbox(tmp_path / "outbox.db", limits=OutboxLimits(max_events=100))
    boundary = PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin(*ORIGIN))
    res = [ob.append([boundary.to_event(o) for o in observations(40, i * 40)]) for i in range(5)]
    assert sum(sum(r.dropped.values()) for r in res) == 100  # 200 committed, quota 100
    cfg = load_config(platform_worker_config(tmp_path, broker.port))
    cfg = cfg.model_copy(update={"database": cfg.database.model_copy(update={"dsn": dsn})})
    worker = MqttIngestWorker(cfg, client_id="quota-worker")  # the real worker, on a thread
    wt = threading.Thread(target=worker.run, daemon=True)
    wt.start()
    up = Uplink(ob, Origin(*ORIGIN), MqttConfig(host=broker.host, port=broker.port),
                UplinkConfig(window=16, ack_mode="end_to_end", ack_timeout_s=1.0, status_interval_s=0.3,
                             backoff=BackoffConfig(initial_s=0.05, max_s=0.3)))
    ut = threading.Thread(target=up.run, daemon=True)
    ut.start()
    try:
        last = ob.last_seq()
        assert wait_until(lambda: dict(pg_rows(dsn, "SELECT source, seq FROM marks WHERE boot = %s",
                                             (ob.boot,))) == last, 30)
        assert wait_until(lambda: ob.depth() == 0, 10)
    finally:
        up.stop()
        worker.stop()
        ut.join(10)
        wt.join(10)
    gaps = pg_rows(dsn, "SELECT source, seq_from, seq_to FROM gaps")
    lost = sum(b - a + 1 for _, a, b in gaps)
    assert lost == ob.counters()["dropped_quota"]  # every drop the gateway counted, the platform sees as a gap
    assert pg_rows(dsn, "SELECT count(*) FROM events")[0][0] == 100  # and it stored every event the gateway kept
    ob.close()
