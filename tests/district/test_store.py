"""The loader and the watermark bookkeeping against the real PostgreSQL: source ids (migration 0008),
the fast COPY path and its fallback on a resend, runs folded into marks, and 0008 carrying old runs."""

from __future__ import annotations

import time

import psycopg

from district.config import DatabaseConfig, IngestConfig
from district.db import migrate, migrations
from district.messages import EventRow, parse
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


def test_migration_0008_carries_the_runs_recorded_before_it() -> None:
    with scratch_database("m8") as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        # A database as 0005 left it (scratch_database migrated it fully: start its schema over).
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        for mg in migrations():
            if mg.version <= 5:
                conn.execute(mg.sql.encode())
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (mg.version, mg.name))
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
