"""District platform: the DB path against a bare COPY of the same rows, and end to end with simulated gateways.

1. DB path: `Store.write` (binary COPY into the day-partitioned, indexed `events`, or on a resend a
   stage and INSERT … ON CONFLICT (event_id) DO NOTHING; seq runs; one transaction per 1000-event
   batch) plus the watermark advance at the worker's cadence, against a bare binary `COPY` of the same
   rows into an unindexed, unpartitioned table with the same columns, batch by batch alternately, in the
   same run on the same server.
2. End to end: N simulated gateways (asyncio, one process) → mosquitto → 2 ingest worker processes
   (MQTT 5 shared subscription, manual PUBACK) → PostgreSQL; events/s, event → watermark latency
   (what the gateway sees: the event is committed and acknowledged), and events never covered.

    .venv/bin/python bench/bench_district.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.compat import UTC

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench._common import SkipSection
from district.config import DatabaseConfig, IngestConfig
from district.loadgen import run_fleet
from district.messages import EventRow, parse
from district.simulate import event, payload
from district.store import _EVENT_TYPES, Store, jsonb_passthrough
from district.testing import mosquitto, scratch_database, start_worker
from district.watermarks import advance

_BARE = ("CREATE TABLE bare (event_id uuid, ts timestamptz, district text, community text, gateway text, "
         "source text, boot bigint, seq bigint, kind text, subject_type text, subject_pseudonym text, key_id text, "
         "payload jsonb, received_at timestamptz, gateway_id integer)")


def _rows(n: int, gateways: int = 200) -> list[EventRow]:
    out = []
    boot = int(time.time() * 1000)
    seqs: dict[tuple[int, str], int] = {}
    for i in range(n):
        g, source = i % gateways, ("cam1", "cam2", "reader1", "sniffer1")[(i // gateways) % 4]
        seqs[(g, source)] = seqs.get((g, source), 0) + 1
        obj = event("dl-gjz", f"c{g // 10:04d}", f"gw{g:05d}", source, boot, seqs[(g, source)])
        parsed = parse(f"edgegw/dl-gjz/{obj['community']}/{obj['gateway']}/events/{obj['kind']}", payload(obj))
        assert isinstance(parsed, EventRow)
        out.append(parsed)
    return out


def _bare_copy(conn: psycopg.Connection[tuple[object, ...]], rows: list[EventRow], now: datetime,
               gw_ids: dict[tuple[str, str, str], int]) -> None:
    # The same binary COPY the loader uses, the same 15 columns (the gateway id looked up per row
    # like the loader's cache does), so the ratio is the cost of partitions, indexes, idempotency and
    # watermarks, not of a wire format or a narrower row.
    with conn.cursor() as cur, cur.copy("COPY bare FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(_EVENT_TYPES)
        for e in rows:
            cp.write_row((e.event_id, e.ts, e.gw.district, e.gw.community, e.gw.gateway, e.source, e.boot,
                          e.seq, e.kind, e.subject_type, e.subject_pseudonym, e.key_id, e.payload, now,
                          gw_ids[(e.gw.district, e.gw.community, e.gw.gateway)]))
    conn.commit()


def bench_db_path(dsn: str, n: int, batch: int = 1000) -> dict[str, Any]:
    """Rows/s through the real loader vs a bare COPY of the same rows.

    The two alternate batch by batch (loader batch i, then bare COPY of batch i), so on a shared
    machine both see the same load; each side's time is summed on its own."""
    rows = _rows(n)
    store = Store(DatabaseConfig(dsn=dsn), IngestConfig())
    store.write(rows[:batch])  # warm: partitions, stage table, plans, source ids
    rows = rows[batch:]
    interval_s = IngestConfig().mark_interval_ms / 1000
    db_s = load_s = bare_s = 0.0
    touched: set[int] = set()
    since_advance = 0.0
    with psycopg.connect(dsn) as bare:
        bare.execute(_BARE)
        bare.commit()
        jsonb_passthrough(bare)
        # The ids the loader gave the gateways (the warm-up batch saw every one of them).
        gw_ids = {(str(d), str(c), str(g)): int(str(i)) for d, c, g, i in
                  bare.execute("SELECT district, community, gateway, id FROM gateways").fetchall()}
        bare.commit()
        now = datetime.now(UTC)
        for i in range(0, len(rows), batch):
            chunk = rows[i:i + batch]
            t0 = time.perf_counter()
            res = store.write(chunk)
            t1 = time.perf_counter()
            touched |= res.touched
            # The worker's cadence (mark_interval_ms), on the loader's own clock.
            since_advance += t1 - t0
            if since_advance >= interval_s:
                advance(store.connection(), touched)
                touched, since_advance = set(), 0.0
            t2 = time.perf_counter()
            load_s += t1 - t0
            db_s += t2 - t0
            _bare_copy(bare, chunk, now, gw_ids)
            bare_s += time.perf_counter() - t2
        t0 = time.perf_counter()
        advance(store.connection(), touched)
        db_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        again = 0
        for i in range(0, len(rows), batch):
            again += store.write(rows[i:i + batch]).inserted  # the whole stream replayed: idempotent
        replay_s = time.perf_counter() - t0
        store.close()
        stored = bare.execute("SELECT count(*) FROM events").fetchone()
    db_rps, bare_rps = len(rows) / db_s, len(rows) / bare_s
    return {"rows": len(rows), "batch": batch, "db_path_rows_per_s": round(db_rps),
            "load_only_rows_per_s": round(len(rows) / load_s), "bare_copy_rows_per_s":
            round(bare_rps), "db_path_pct_of_bare_copy": round(100 * db_rps / bare_rps, 1),
            "replay_rows_per_s": round(len(rows) / replay_s), "replay_inserted": again,
            "stored": int(stored[0]) if stored else None}


def bench_end_to_end(dsn: str, gateways: int, rate_per_gateway: float, seconds: float) -> dict[str, Any]:
    """Simulated gateways → mosquitto → 2 workers → PostgreSQL."""
    with tempfile.TemporaryDirectory() as tmp, mosquitto(Path(tmp)) as port:
        workers = [start_worker(dsn, port, f"bench-w{i}", Path(tmp) / f"w{i}.log") for i in range(2)]
        try:
            time.sleep(2.0)  # the workers connect and subscribe
            res = asyncio.run(run_fleet("127.0.0.1", port, gateways=gateways, rate_per_gateway=rate_per_gateway,
                                        duration_s=seconds, settle_s=60.0))
        finally:
            for w in workers:
                w.terminate()
                w.wait(15)
        with psycopg.connect(dsn) as conn:
            ids = {str(r[0]) for r in conn.execute("SELECT event_id FROM events WHERE gateway LIKE 'gw%%' "
                                                   "AND district = 'dl-gjz'").fetchall()}
    missing = sum(1 for e in res.event_ids if e not in ids)
    return {"gateways": gateways, "seconds": round(res.duration_s, 1), "generated": res.generated,
            "events_per_s": round(res.rate), "stored": len(ids), "missing_in_db": missing,
            "uncovered_at_end": res.uncovered, "resent": res.resent, "replayed": res.replayed,
            "event_to_committed_p50_ms": round(res.p50_s * 1000, 1), "event_to_committed_p99_ms":
            round(res.p99_s * 1000, 1)}


def run(quick: bool = False) -> dict[str, Any]:
    """Both measurements, each in its own scratch database."""
    try:
        with scratch_database("bench") as dsn:
            db = bench_db_path(dsn, 20_000 if quick else 100_000)
        with scratch_database("bench") as dsn:
            e2e = bench_end_to_end(dsn, 100 if quick else 300, 10.0, 10.0 if quick else 60.0)
    except psycopg.OperationalError as exc:
        raise SkipSection(f"no PostgreSQL server: {exc}") from exc
    return {"db": db, "end_to_end": e2e}


def main() -> int:
    """Print the figures as JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=("db", "e2e"))
    p.add_argument("--gateways", type=int, default=300)
    p.add_argument("--rate", type=float, default=10.0, help="events/s per gateway")
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    out: dict[str, Any] = {}
    if args.only in (None, "db"):
        with scratch_database("bench") as dsn:
            out["db"] = bench_db_path(dsn, 20_000 if args.quick else 100_000)
    if args.only in (None, "e2e"):
        with scratch_database("bench") as dsn:
            out["end_to_end"] = bench_end_to_end(dsn, args.gateways, args.rate, 10.0 if args.quick else args.seconds)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
