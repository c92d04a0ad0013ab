"""Load: 300 simulated gateways multiplexed on asyncio in this one process, 10 events/s each (3,000/s)
for 60 s, through mosquitto into PostgreSQL with two ingest workers: 0 lost. The rate reached and
the event → committed latency are printed (and measured in bench/bench_district.py), not asserted:
this is a shared 2-core machine."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from district.loadgen import run_fleet
from tests.conftest import Broker
from tests.district.conftest import Database, district_config, worker


@pytest.mark.slow
def test_three_thousand_events_per_second_for_a_minute_lose_nothing(tmp_path: Path, pg: Database,
                                                                    broker: Broker) -> None:
    cfg = district_config(tmp_path)
    procs = [worker(cfg, pg, broker.port, tmp_path, client_id=f"load{i}") for i in range(2)]
    try:
        time.sleep(2.0)
        res = asyncio.run(run_fleet("127.0.0.1", broker.port, gateways=300, rate_per_gateway=10.0, duration_s=60.0,
                                    settle_s=120.0))
    finally:
        for p in procs:
            p.stop()
    stored = {str(r[0]) for r in pg.query("SELECT event_id FROM events")}
    lost = [e for e in res.event_ids if e not in stored]
    assert not lost, f"{len(lost)} of {res.generated} lost"
    assert pg.scalar("SELECT count(*) FROM events") == res.generated
    assert res.uncovered == 0
    print(f"load: {res.gateways} gateways, {res.rate:.0f} events/s for {res.duration_s:.0f} s, 0 lost, "
          f"event → committed p50 {res.p50_s * 1000:.0f} ms, p99 {res.p99_s * 1000:.0f} ms")
