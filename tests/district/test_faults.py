"""Faults between the gateways and PostgreSQL: the database crashes, is away, restarts; the broker is
killed and restarted. After each, every event a gateway committed is stored exactly once.

The database here is our own server (initdb on a free port): the machine's PostgreSQL is never stopped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from district.db import migrate
from edge.outbox import Outbox
from tests._chaos import gateway_config, outbox_depth, producer, uplink_daemon, wait_until
from tests.conftest import Broker
from tests.district._pg import OwnPostgres
from tests.district.conftest import Database, district_config, worker


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    """A PostgreSQL server of our own, with the `edgegw` database migrated."""
    server = OwnPostgres()
    server.start()
    server.create_database()
    migrate(server.dsn)
    yield server
    server.close()


def _stream_through_faults(tmp_path: Path, db: Database, broker: Broker, *, events: int, rate: int,
                           fault: object, outage_s: float) -> dict[str, float]:
    outbox = tmp_path / "outbox.db"
    Outbox(outbox).close()
    # Receive Maximum 300: while the database is away each worker holds at most 300 unacknowledged
    # messages; the broker queues the rest, and the gateways keep everything the watermark does not cover.
    cfg = district_config(tmp_path, mqtt={"receive_max": 300})
    procs = [worker(cfg, db, broker.port, tmp_path, client_id=f"f{i}") for i in range(2)]
    up = uplink_daemon(gateway_config(tmp_path, broker.port, uplink={"ack_mode": "end_to_end", "ack_timeout_s": 3}),
                       tmp_path)
    prod = producer(outbox, tmp_path, "--count", str(events), "--batch", "5", "--rate", str(rate))
    figures: dict[str, float] = {}
    count = lambda: int(str(db.scalar("SELECT count(*) FROM events")))  # noqa: E731
    try:
        assert wait_until(lambda: count() >= events // 4, 60), procs[0].log_path.read_text()[-2000:]
        if isinstance(fault, OwnPostgres):
            fault.stop("immediate")  # a crash: connections cut, uncommitted batches gone
            time.sleep(outage_s)
            fault.start()
            back = time.monotonic()
            base = count()
            # Catch-up: the backlog that piled up during the outage, against the arrival rate.
            assert wait_until(lambda: count() >= min(events, base + int(rate * outage_s)), 120)
            figures["catch_up_events_per_s"] = (count() - base) / max(time.monotonic() - back, 1e-3)
            figures["arrival_events_per_s"] = rate
            assert wait_until(lambda: count() >= events * 2 // 3, 120)
            fault.restart()  # an orderly restart: every connection is cut once more
        else:
            broker.stop()  # kill -9, no persistence: whatever it held is gone
            time.sleep(outage_s)
            broker.start()
        assert prod.wait(180) == 0
        acked = set(prod.ids())
        assert len(acked) == events
        assert wait_until(lambda: acked <= {str(r[0]) for r in db.query("SELECT event_id FROM events")}, 120, 0.3), \
            procs[0].log_path.read_text()[-3000:]
        assert wait_until(lambda: outbox_depth(outbox) == 0, 60), "the gateway kept rows the watermark covers"
        assert count() == events  # exactly once
    finally:
        up.stop()
        prod.stop()
        for p in procs:
            p.stop()
    return figures


def test_postgres_crash_outage_and_restart_lose_nothing(tmp_path: Path, own_pg: OwnPostgres, broker: Broker) -> None:
    db = Database("edgegw", own_pg.dsn)
    _stream_through_faults(tmp_path, db, broker, events=1500, rate=200, fault=own_pg, outage_s=3.0)
    logs = [p.read_text() for p in tmp_path.glob("worker-*.log")]
    assert all("holding them unacknowledged" in t and "PostgreSQL is back" in t for t in logs)
    # Bounded while the database was away (the crash, the first outage) by the Receive Maximum (300).
    # mosquitto 2.0.11 overshoots the window by part of what it released while acknowledgements were
    # still flowing (docs/district.md §1; measured 301 and 354 here under load), hence the slack; an
    # unbounded worker would also hold the gateway's resends (every 3 s) of all it had not acknowledged.
    first = [int(re.findall(r"at most (\d+) messages were held unacknowledged", t)[0]) for t in logs]
    assert max(first) <= 400, first


@pytest.mark.slow
def test_postgres_unreachable_for_60_s_then_catches_up(tmp_path: Path, own_pg: OwnPostgres, broker: Broker) -> None:
    db = Database("edgegw", own_pg.dsn)
    fig = _stream_through_faults(tmp_path, db, broker, events=20_000, rate=200, fault=own_pg, outage_s=60.0)
    print(f"PostgreSQL away 60 s at 200 events/s: caught up at {fig['catch_up_events_per_s']:.0f} events/s "
          f"({fig['catch_up_events_per_s'] / fig['arrival_events_per_s']:.1f}x the arrival rate), 0 lost")


def test_broker_killed_and_restarted_loses_nothing(tmp_path: Path, pg: Database, broker: Broker) -> None:
    _stream_through_faults(tmp_path, pg, broker, events=1200, rate=200, fault=broker, outage_s=1.0)
