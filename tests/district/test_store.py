"""The loader and the watermark bookkeeping against the real PostgreSQL: source ids (migration 0008),
the fast COPY path and its fallback on a resend, runs folded into marks, 0008 carrying old runs, and the
gateway ids (migration 0010) on every event, old and new."""

from __future__ import annotations

import time

import psycopg

from district.config import DatabaseConfig, IngestConfig
from district.db import migrate, migrations
from district.messages import EventRow, parse
from district.partitions import ensure_partitions, uuid7_day
from district.simulate import event, payload
from district.store import Store, seq_runs
from district.testing import scratch_database
from district.watermarks import advance, marks_of
from tests.district.conftest import Database


def _events(gateway: str, source: str, boot: int, seqs: list[int]) -> list[EventRow]:
    out = []
    for seq in seqs:
        obj = event("dl-gjz", "c0001", gateway, source, boot, seq)
        row = parse(f"edgegw/dl-gjz/c0001/{gateway}/events/{obj['kind']}", payload(obj))
        assert isinstance(row, EventRow)
        out.append(row)
    return out


def test_seq_runs_merge_each_source_into_maximal_runs() -> None:
    # Out of order, repeated, and a hole per source: one run per contiguous stretch.
    assert sorted(seq_runs([1, 1, 2, 1, 1, 1, 2], [3, 1, 5, 2, 7, 2, 6])) == [(1, 1, 3), (1, 7, 7), (2, 5, 6)]
    assert seq_runs([], []) == []


def test_a_resent_batch_is_stored_once_and_marks_fold_runs_across_batches(pg: Database) -> None:
    boot = int(time.time() * 1000)
    ev = _events("gw01", "cam1", boot, list(range(1, 9)))
    store = Store(DatabaseConfig(dsn=pg.dsn), IngestConfig())
    try:
        first = store.write(ev[:3] + ev[4:6])  # seqs 1-3 and 5-6: seq 4 is missing
        assert (first.inserted, first.duplicates) == (5, 0)
        conn = store.connection()
        assert len(first.touched) == 1
        (src,) = first.touched
        assert advance(conn, first.touched) == {ev[0].gw}
        assert pg.scalar("SELECT seq FROM marks WHERE src = %s", (src,)) == 3
        assert pg.scalar("SELECT gap_since IS NOT NULL FROM marks WHERE src = %s", (src,)) is True
        assert [tuple(r) for r in pg.query("SELECT lo, hi FROM seq_runs WHERE src = %s", (src,))] == [(5, 6)]
        # A resend of 1-6 with the missing 4 and the new 7-8: the fast COPY meets stored ids, the batch
        # goes again through the stage, and each event is stored once.
        again = store.write(ev)
        assert (again.inserted, again.duplicates) == (3, 5)
        assert again.duplicate_gateways == {ev[0].gw}
        advance(conn, again.touched)
        assert marks_of(conn, [ev[0].gw]) == {ev[0].gw: (boot, {"cam1": 8})}
        assert pg.scalar("SELECT gap_since IS NULL FROM marks WHERE src = %s", (src,)) is True
        assert pg.scalar("SELECT count(*) FROM seq_runs") == 0
        assert pg.scalar("SELECT count(*) FROM events") == 8
        assert pg.scalar("SELECT count(DISTINCT event_id) FROM events") == 8
        # A new store (another worker, or this one reconnected) finds the same id for the source.
        store.close()
        other = Store(DatabaseConfig(dsn=pg.dsn), IngestConfig())
        try:
            assert other.write(_events("gw01", "cam1", boot, [9])).touched == {src}
        finally:
            other.close()
    finally:
        store.close()



def _schema_as_of(conn: psycopg.Connection[tuple[object, ...]], version: int) -> None:
    """Start the scratch database's schema over and apply the migrations up to `version` only."""
    conn.execute("DROP SCHEMA public CASCADE")
    conn.execute("CREATE SCHEMA public")
    conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                 "applied_at timestamptz NOT NULL DEFAULT now())")
    for mg in migrations():
        if mg.version <= version:
            conn.execute(mg.sql.encode())
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (mg.version, mg.name))


def test_migration_0008_carries_the_runs_recorded_before_it() -> None:
    with scratch_database("m8") as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        # A database as 0005 left it (scratch_database migrated it fully: start its schema over).
        _schema_as_of(conn, 5)
        conn.execute("INSERT INTO seq_runs VALUES ('d', 'c', 'g', 'cam1', 7, 1, 4), ('d', 'c', 'g', 'cam1', 7, 9, 9)")
        conn.execute("INSERT INTO marks (district, community, gateway, source, boot, seq) "
                     "VALUES ('d', 'c', 'g', 'reader1', 7, 12)")
        assert 8 in migrate(dsn)
        src = conn.execute("SELECT src FROM marks WHERE source = 'cam1'").fetchone()
        assert src is not None
        assert conn.execute("SELECT lo, hi FROM seq_runs WHERE src = %s ORDER BY lo", (src[0],)).fetchall() == \
            [(1, 4), (9, 9)]
        assert conn.execute("SELECT seq, src IS NOT NULL FROM marks WHERE source = 'reader1'").fetchone() == (12, True)
        with conn.transaction():
            rows = conn.execute("SELECT o_src, o_changed FROM advance_sources(%s)", ([src[0]],)).fetchall()
        assert rows == [(src[0], True)]
        assert conn.execute("SELECT seq FROM marks WHERE src = %s", (src[0],)).fetchone() == (4,)


def test_each_event_carries_its_gateways_id_and_same_named_gateways_differ(pg: Database) -> None:
    boot = int(time.time() * 1000)
    a = _events("gw01", "cam1", boot, [1, 2])
    # Another community's gw01: the same name, another gateway.
    obj = event("dl-gjz", "c0002", "gw01", "cam1", boot, 1)
    b = parse(f"edgegw/dl-gjz/c0002/gw01/events/{obj['kind']}", payload(obj))
    assert isinstance(b, EventRow)
    store = Store(DatabaseConfig(dsn=pg.dsn), IngestConfig())
    try:
        store.write([*a, b])
        store.write(_events("gw01", "cam2", boot, [1]))  # a new source of a known gateway: the same id
    finally:
        store.close()
    rows = pg.query("SELECT e.community, e.source, e.gateway_id, g.district, g.community, g.gateway FROM events e "
                    "JOIN gateways g ON g.id = e.gateway_id ORDER BY e.community, e.source, e.seq")
    assert [(r[0], r[1], r[3], r[4], r[5]) for r in rows] == [
        ("c0001", "cam1", "dl-gjz", "c0001", "gw01"), ("c0001", "cam1", "dl-gjz", "c0001", "gw01"),
        ("c0001", "cam2", "dl-gjz", "c0001", "gw01"), ("c0002", "cam1", "dl-gjz", "c0002", "gw01")]
    assert len({r[2] for r in rows}) == 2
    assert pg.scalar("SELECT count(*) FROM gateways") == 2


def test_migration_0010_gives_the_stored_events_their_gateway_ids() -> None:
    with scratch_database("m10") as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        # A database as 0009 left it, with events of two gateways of the same name.
        _schema_as_of(conn, 9)
        boot = int(time.time() * 1000)
        rows = [*_events("gw01", "cam1", boot, [1, 2, 3])]
        obj = event("dl-gjz", "c0002", "gw01", "cam1", boot, 1)
        other = parse(f"edgegw/dl-gjz/c0002/gw01/events/{obj['kind']}", payload(obj))
        assert isinstance(other, EventRow)
        rows.append(other)
        ensure_partitions(conn, {uuid7_day(e.event_id) for e in rows})
        for e in rows:
            conn.execute("INSERT INTO events (event_id, ts, district, community, gateway, source, boot, seq, kind, "
                         "payload, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, now())",
                         (e.event_id, e.ts, e.gw.district, e.gw.community, e.gw.gateway, e.source, e.boot, e.seq,
                          e.kind, e.payload))
        assert 10 in migrate(dsn)
        got = conn.execute("SELECT e.community, g.community, g.gateway, e.gateway_id FROM events e "
                           "JOIN gateways g ON g.id = e.gateway_id ORDER BY e.community, e.seq").fetchall()
        assert [(r[0], r[1], r[2]) for r in got] == [("c0001", "c0001", "gw01")] * 3 + [("c0002", "c0002", "gw01")]
        assert got[0][3] != got[3][3]
        # The loader then finds the ids the migration gave (no second row for a known gateway).
        store = Store(DatabaseConfig(dsn=dsn), IngestConfig())
        try:
            assert store.write(_events("gw01", "cam1", boot, [4])).inserted == 1
        finally:
            store.close()
        assert conn.execute("SELECT count(*), count(DISTINCT gateway_id) FROM events WHERE community = 'c0001'"
                            ).fetchone() == (4, 1)
        assert conn.execute("SELECT count(*) FROM gateways").fetchone() == (2,)
