"""Ingest into PostgreSQL: migrations, day partitions, and the real gateway uplink (end-to-end mode)
feeding real ingest workers through a real mosquitto, with workers SIGKILLed mid-batch."""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from district.db import migrate
from district.partitions import day_bound, drop_older_than, ensure_partitions, list_partitions, uuid7_day
from edge.compat import UTC
from edge.outbox import Outbox
from tests._chaos import BASE, gateway_config, outbox_depth, producer, uplink_daemon, wait_until
from tests.conftest import Broker
from tests.district.conftest import Database, district_config, worker

_TABLE_DIGEST = "SELECT count(*), md5(string_agg(event_id::text || payload::text, ',' ORDER BY event_id)) FROM events"


def test_migrations_are_versioned_and_apply_once(pg: Database) -> None:
    assert migrate(pg.dsn) == []  # the session fixture applied them all
    versions = [r[0] for r in pg.query("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == sorted(versions) and versions[0] == 1 and len(versions) >= 4
    # The events table is partitioned on event_id, and carries the indexes the search and dashboards use.
    assert pg.scalar("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'events'::regclass") == "r"
    indexes = {r[0] for r in pg.query("SELECT indexname FROM pg_indexes WHERE tablename = 'events'")}
    assert {"events_pkey", "events_subject_ts", "events_gateway_ts", "events_kind_ts"} <= indexes
    # Gateway + time keys on the gateway's integer id (migration 0010), kind + time on the kind.
    cols = {name: pg.scalar("SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod), ',' "
                            "ORDER BY k.n) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid CROSS JOIN LATERAL "
                            "unnest(x.indkey) WITH ORDINALITY AS k(att, n) JOIN pg_attribute a "
                            "ON a.attrelid = x.indrelid AND a.attnum = k.att WHERE i.relname = %s", (name,))
            for name in ("events_gateway_ts", "events_kind_ts", "events_subject_ts")}
    assert cols == {"events_gateway_ts": "gateway_id:integer,ts:timestamp with time zone",
                    "events_kind_ts": "kind:text,ts:timestamp with time zone",
                    "events_subject_ts": "subject_pseudonym:text,ts:timestamp with time zone"}


def _uuid7_at(ms: int) -> uuid.UUID:
    """A UUIDv7 for exactly `ms`: edge.ids.uuid7 never goes back in time within one process, so after
    any test that made a current id it would not give a past day's."""
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0b10 << 62) | secrets.randbits(62))


def test_uuid7_day_bounds_route_events_to_their_day_partition(pg: Database) -> None:
    day = date(2026, 11, 30)
    start_ms = int(datetime(2026, 11, 30, tzinfo=UTC).timestamp() * 1000)
    first, last = _uuid7_at(start_ms), _uuid7_at(start_ms + 86_400_000 - 1)
    assert day_bound(day) <= first < last < day_bound(day + timedelta(1))
    assert uuid7_day(first) == uuid7_day(last) == day
    with psycopg.connect(pg.dsn) as conn:
        ensure_partitions(conn, [day, day + timedelta(1)])
        ensure_partitions(conn, [day])  # again: nothing new, no error
        for eid in (first, last, _uuid7_at(start_ms + 86_400_000)):
            conn.execute("INSERT INTO events (event_id, ts, district, community, gateway, source, boot, seq, kind, "
                         "payload, received_at, gateway_id) VALUES (%s, now(), 'd', 'c', 'g', 's', 1, 1, 'alarm', "
                         "'{}', now(), (SELECT o_id FROM gateway_ids('{d}', '{c}', '{g}')))", (eid,))
        conn.commit()
        where = dict(conn.execute("SELECT tableoid::regclass::text, count(*) FROM events GROUP BY 1").fetchall())
        assert where == {"events_20261130": 2, "events_20261201": 1}
        # Retention drops whole partitions: keeping 1 day on 2026-12-02 drops 11-30 only.
        assert drop_older_than(conn, 1, today=date(2026, 12, 2)) == ["events_20261130"]
        # (Partitions for today and ahead, made by the migration, may stand beside it: the test must
        # not depend on the day it runs.)
        names = [n for n, _ in list_partitions(conn)]
        assert "events_20261201" in names and "events_20261130" not in names
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
        drop_older_than(conn, 1, today=date(2026, 12, 10))
    assert pg.scalar("SELECT count(*) FROM events") == 0


def _last_seqs(db: Path) -> dict[str, int]:
    ob = Outbox(db)
    try:
        return ob.last_seq()
    finally:
        ob.close()


def _stored_ids(pg: Database) -> set[str]:
    return {str(r[0]) for r in pg.query("SELECT event_id FROM events")}


def _gateway_stream(tmp_path: Path, pg: Database, broker: Broker, *, events: int, rate: int, workers: int,
                    kills: int) -> None:
    outbox = tmp_path / "outbox.db"
    Outbox(outbox).close()
    cfg = district_config(tmp_path)
    procs = [worker(cfg, pg, broker.port, tmp_path, client_id=f"w{i}") for i in range(workers)]
    up = uplink_daemon(gateway_config(tmp_path, broker.port, uplink={"ack_mode": "end_to_end", "ack_timeout_s": 1.5}),
                       tmp_path)
    prod = producer(outbox, tmp_path, "--count", str(events), "--batch", "5", "--rate", str(rate))
    try:
        for k in range(kills):
            target = (k + 1) * events // (kills + 2)
            assert wait_until(lambda t=target: pg.scalar("SELECT count(*) FROM events") >= t, 60), \
                procs[0].log_path.read_text()[-3000:]
            victim = k % workers
            procs[victim].kill9()  # mid-batch: uncommitted rows, unsent PUBACKs and watermarks die with it
            procs[victim] = worker(cfg, pg, broker.port, tmp_path, client_id=f"w{victim}")
        assert prod.wait(120) == 0
        acked = set(prod.ids())
        assert len(acked) == events
        assert wait_until(lambda: acked <= _stored_ids(pg), 90, 0.2), "events the platform never committed"
        assert wait_until(lambda: outbox_depth(outbox) == 0, 30), "the gateway kept rows the watermark covers"
        # Exactly once: the primary key forbids two rows, and nothing else arrived.
        assert pg.scalar("SELECT count(*) FROM events") == events
        assert pg.scalar("SELECT count(*) FROM events WHERE jsonb_typeof(payload) <> 'object'") == 0
        marks = dict(pg.query("SELECT source, seq FROM marks WHERE gateway = 'gw01'"))
        assert marks == _last_seqs(outbox)
        assert pg.scalar("SELECT count(*) FROM gaps") == 0
        assert pg.scalar("SELECT count(*) FROM rejects") == 0
        assert pg.scalar("SELECT count(*) FROM gateway_status WHERE gateway = 'gw01' AND online") > 0
    finally:
        up.stop()
        prod.stop()
        for p in procs:
            p.stop()


def test_gateway_uplink_to_postgres_lossless(tmp_path: Path, pg: Database, broker: Broker) -> None:
    _gateway_stream(tmp_path, pg, broker, events=400, rate=400, workers=2, kills=0)


def test_worker_sigkill_mid_batch_loses_nothing(tmp_path: Path, pg: Database, broker: Broker) -> None:
    _gateway_stream(tmp_path, pg, broker, events=1200, rate=300, workers=2, kills=3)


def test_replaying_the_whole_stream_changes_no_row(tmp_path: Path, pg: Database, broker: Broker) -> None:
    _gateway_stream(tmp_path, pg, broker, events=200, rate=400, workers=1, kills=0)
    before = pg.query(_TABLE_DIGEST)
    rows = pg.query("SELECT kind, payload::text FROM events ORDER BY event_id")
    cfg = district_config(tmp_path)
    w = worker(cfg, pg, broker.port, tmp_path, client_id="replay")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="replayer", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    def duplicates() -> int:
        found = re.findall(r"duplicates=(\d+),", w.log_path.read_text())
        return int(found[-1]) if found else 0

    def resend(kind: str, body: str) -> Any:
        # Byte-identical resends, as a gateway sends them (key-sorted, compact JSON).
        return client.publish(f"{BASE}/events/{kind}", json.dumps(json.loads(body), sort_keys=True,
                              separators=(",", ":"), ensure_ascii=False), qos=1)

    try:
        probes = 0
        while duplicates() == 0:  # until the worker's subscription is in place (nothing is queued before)
            resend(*rows[0]).wait_for_publish(10)
            probes += 1
            assert probes < 60, w.log_path.read_text()[-2000:]
            time.sleep(0.5)
        probes = duplicates()
        for info in [resend(kind, body) for kind, body in rows]:
            info.wait_for_publish(10)
        assert wait_until(lambda: duplicates() >= probes + len(rows), 30, 0.2), w.log_path.read_text()[-2000:]
    finally:
        client.loop_stop()
        client.disconnect()
        w.stop()
    assert pg.query(_TABLE_DIGEST) == before
    assert uuid.UUID(str(pg.scalar("SELECT event_id FROM events ORDER BY event_id LIMIT 1"))).version == 7


def _counters(db: Path) -> dict[str, int]:
    ob = Outbox(db)
    try:
        return ob.counters()
    finally:
        ob.close()


def test_events_lost_in_flight_come_back_by_replay_request(tmp_path: Path, pg: Database, broker: Broker) -> None:
    """Clean broker sessions: what a killed worker held is gone. The gateway's timeout resend is set far
    away (600 s), so only the platform's gap detection and replay request can bring those events back."""
    outbox = tmp_path / "outbox.db"
    Outbox(outbox).close()
    cfg = district_config(tmp_path, mqtt={"session_expiry_s": 0}, ingest={"batch_ms": 200})
    w = worker(cfg, pg, broker.port, tmp_path, client_id="w0")
    up = uplink_daemon(gateway_config(tmp_path, broker.port, uplink={"ack_mode": "end_to_end", "ack_timeout_s": 600}),
                       tmp_path)
    # 100/s: the producer is still well inside its 6 s when the worker dies, even on a loaded machine
    # that notices the first 150 rows late, so some events are certain to reach no subscriber.
    prod = producer(outbox, tmp_path, "--count", "600", "--batch", "5", "--rate", "100")
    try:
        assert wait_until(lambda: pg.scalar("SELECT count(*) FROM events") >= 150, 60)
        w.kill9()  # its uncommitted batch (up to 200 ms of events) is lost with its clean session
        time.sleep(0.5)  # events published now reach no subscriber at all
        w = worker(cfg, pg, broker.port, tmp_path, client_id="w0")
        assert prod.wait(120) == 0
        acked = set(prod.ids())
        assert wait_until(lambda: acked <= _stored_ids(pg), 60, 0.2), w.log_path.read_text()[-2000:]
        assert wait_until(lambda: outbox_depth(outbox) == 0, 30)
    finally:
        up.stop()
        prod.stop()
        w.stop()
    counters = _counters(outbox)
    assert counters.get("replayed", 0) > 0 and counters.get("resent", 0) == 0, counters
    assert pg.scalar("SELECT count(*) FROM events") == 600
    assert "asking the gateway to replay them" in w.log_path.read_text()
