"""The GA/T 1400 bridge's pace: backlog drain rate and watch-hit → acknowledgement latency.

Against the test suite's mock upper platform (tests/district/_viid_mock.py, a real HTTP server)
and a scratch PostgreSQL database: N watch hits are loaded through the real loader, the bridge's
real loop delivers them, and the time to the last acknowledgement gives notifications/s; then,
with the bridge idle, single hits are ingested one at a time and the time from commit to the mock's
acknowledgement is taken (it is bounded below by the bridge's tick).

    .venv/bin/python bench/bench_viid.py [--backlog 2000] [--batch 50] [--single 20] [--tick 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from district.config import DatabaseConfig, IngestConfig, ViidConfig
from district.db import connect
from district.messages import parse
from district.simulate import event, payload
from district.store import Store
from district.testing import free_port, scratch_database
from district.viid.bridge import Bridge
from district.viid.client import ViidClient
from district.viid.outbox import Outbox
from tests.district._viid_mock import MockViid

DEVICE = "31010000002000000001"
APE = "31010100001320000001"


def _hits(n: int, seq0: int) -> list[bytes]:
    out = []
    for i in range(n):
        passage = event("d1", "c1", "gw1", "cam2", 1, seq0 + 2 * i)
        hit = event("d1", "c1", "gw1", "cam2", 1, seq0 + 2 * i + 1, kind="alarm")
        hit["attrs"] = {"code": "watch_hit", "message": "plate on watch-list L-1", "severity": "critical",
                        "id_kind": "plate", "list_id": "L-1", "list_version": 1, "case_id": "CASE-1"}
        hit["links"] = [passage["event_id"]]
        out += [payload(passage), payload(hit)]
    return out


def _load(store: Store, bodies: list[bytes]) -> None:
    rows = []
    for b in bodies:
        kind = json.loads(b)["kind"]
        rows.append(parse(f"edgegw/d1/c1/gw1/events/{kind}", b))
    for i in range(0, len(rows), 1000):
        store.write(rows[i:i + 1000])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--single", type=int, default=20)
    ap.add_argument("--tick", type=float, default=0.5)
    a = ap.parse_args()
    mock = MockViid({DEVICE: "pw"}, free_port()).start()
    result: dict[str, object] = {"backlog": a.backlog, "batch": a.batch, "tick_s": a.tick,
                                 "load_average": os.getloadavg()[0]}
    try:
        with scratch_database("viid") as dsn:
            store = Store(DatabaseConfig(dsn=dsn), IngestConfig())
            _load(store, _hits(a.backlog, 1))
            cfg = ViidConfig.model_validate({"server_url": mock.url, "device_id": DEVICE, "batch": a.batch,
                                             "tick_s": a.tick, "devices": {"d1/c1/gw1": {"ape_id": APE}}})
            bridge = Bridge(cfg, ViidClient(cfg, "pw"), Outbox(cfg, lambda: connect(dsn, autocommit=True)))
            t0 = time.perf_counter()
            th = threading.Thread(target=bridge.run, daemon=True)
            th.start()
            while len(mock.state.acked) < a.backlog:
                time.sleep(0.01)
            drain = time.perf_counter() - t0
            result["drain_s"] = round(drain, 2)
            result["notifications_per_s"] = round(a.backlog / drain, 1)
            lat = []
            for i in range(a.single):
                want = len(mock.state.acked) + 1
                _load(store, _hits(1, 10 * a.backlog + 2 * i + 1))
                t1 = time.perf_counter()
                while len(mock.state.acked) < want:
                    time.sleep(0.002)
                lat.append(time.perf_counter() - t1)
            result["hit_to_ack_ms_p50"] = round(statistics.median(lat) * 1000, 1)
            result["hit_to_ack_ms_max"] = round(max(lat) * 1000, 1)
            result["duplicates_acked"] = sum(n - 1 for n in mock.state.acked.values())
            bridge.stop()
            th.join(10)
            store.close()
    finally:
        mock.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
