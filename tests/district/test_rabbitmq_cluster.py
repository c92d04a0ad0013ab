"""City scale: gateways publish over MQTT to our own 3-node RabbitMQ cluster (quorum queue), workers
consume over AMQP; one node is killed mid-stream and restarted: 0 events lost, duplicates absorbed."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from district.loadgen import run_fleet
from tests._chaos import wait_until
from tests.district._rabbit import BIN, RabbitCluster
from tests.district.conftest import Database, district_config, worker

pytestmark = pytest.mark.slow


def test_node_killed_mid_stream_loses_nothing(tmp_path: Path, pg: Database) -> None:
    if not (BIN / "rabbitmq-server").exists() or shutil.which("epmd") is None:
        pytest.fail("rabbitmq-server is not installed: apt-get install rabbitmq-server (.ci/run does)")
    cluster = RabbitCluster(tmp_path / "rabbit")
    cluster.start()
    w = None
    try:
        assert cluster.running_nodes() == 3
        cfg = district_config(tmp_path, amqp={"url": cluster.urls(), "prefetch": 2000})
        w = worker(cfg, pg, 0, tmp_path, client_id="amqp", transport="amqp")
        assert wait_until(lambda: "consuming" in w.log_path.read_text(), 60), w.log_path.read_text()[-2000:]
        events: list[str] = []

        def faults(elapsed: float) -> None:
            if 5 <= elapsed < 6 and not events:
                events.append("killed")
                cluster.kill9(0)  # crash: the worker's node, the queue's first leader, a third of the gateways
            elif 9 <= elapsed < 10 and events == ["killed"]:
                events.append("restarting")
                cluster.restart(0)  # rejoins from its data dir and catches up its replica
                events.append("restarted")

        ports = tuple(n.mqtt_port for n in cluster.nodes)
        res = asyncio.run(run_fleet("127.0.0.1", ports, gateways=30, rate_per_gateway=10.0, duration_s=20.0,
                                    settle_s=90.0, ack_timeout_s=10.0, during=faults))
        assert events == ["killed", "restarting", "restarted"]
        assert cluster.running_nodes() == 3
        stored = {str(r[0]) for r in pg.query("SELECT event_id FROM events")}
        lost = [e for e in res.event_ids if e not in stored]
        assert not lost, f"{len(lost)} of {res.generated} events lost"
        assert pg.scalar("SELECT count(*) FROM events") == res.generated  # exactly once by event_id
        assert res.uncovered == 0  # every simulated gateway's watermark covered everything it sent
        print(f"rabbitmq cluster: {res.generated} events, node killed and restarted, 0 lost, "
              f"{res.resent} resent, p99 {res.p99_s * 1000:.0f} ms")
    finally:
        if w is not None:
            w.stop()
        cluster.stop()
        time.sleep(0.5)
