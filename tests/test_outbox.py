"""The outbox on real SQLite files: durability, sequence numbers, quota, expiry, corruption."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from edge.outbox import Outbox, OutboxLimits
from edge.types import EventKind
from tests._events import events


def test_append_is_visible_to_another_connection_with_gap_free_seq(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    res = ob.append(events(source="cam1"))
    assert [r.seq for r in res.records if r.source_id == "cam1"] == [1, 2, 3]
    res2 = ob.append(events(source="cam1"))
    assert [r.seq for r in res2.records if r.source_id == "cam1"] == [4, 5, 6]
    # A second process-like reader (the uplink) sees every committed row, in order.
    other = Outbox(tmp_path / "o.db")
    rows = other.pending(100)
    assert [r.event_id for r in rows] == [r.event_id for r in res.records + res2.records]
    assert other.boot == ob.boot
    payload = json.loads(rows[0].payload)
    assert payload["seq"] == rows[0].seq and payload["boot"] == ob.boot
    assert sqlite3.connect(tmp_path / "o.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_commit_survives_a_killed_process(tmp_path: Path) -> None:
    code = (
        "import os, sys; sys.path.insert(0, '.');"
        "from pathlib import Path; from edge.outbox import Outbox; from tests._events import events;"
        f"ob = Outbox(Path({str(tmp_path / 'o.db')!r})); ids = [r.event_id for r in ob.append(events()).records];"
        "print(','.join(ids), flush=True); os._exit(0) if False else os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert proc.returncode == -9
    acked = proc.stdout.strip().split(",")
    ob = Outbox(tmp_path / "o.db")
    assert ob.integrity_ok()
    assert [r.event_id for r in ob.pending(100)] == acked


def test_delete_and_counters(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    recs = ob.append(events()).records
    ob.delete([recs[0].row_id, recs[1].row_id])
    assert ob.depth() == len(recs) - 2
    assert ob.counters()["delivered"] == 2
    assert ob.last_seq() == {"cam1": 3, "reader1": 1, "sniffer1": 2, "outbox": 1, "gate1": 1}


def test_quota_drops_lowest_priority_oldest_first_and_counts(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", limits=OutboxLimits(max_events=16))
    for _ in range(3):
        res = ob.append(events())
    assert ob.depth() <= 16
    kinds = [r.kind for r in ob.pending(100)]
    assert EventKind.ALARM in kinds and EventKind.PASSAGE in kinds
    counters = ob.counters()
    assert counters["dropped_quota"] == 3 * 8 - ob.depth()
    assert counters.get("dropped_quota.device_aggregate", 0) >= 1
    assert res.dropped  # the caller learns what was dropped, to raise an alarm


def test_expiry_purges_and_counts(tmp_path: Path) -> None:
    now = [1000.0]
    ob = Outbox(tmp_path / "o.db", limits=OutboxLimits(retention_s=60), clock=lambda: now[0])
    ob.append(events())
    assert ob.purge_expired() == 0
    now[0] += 61
    assert ob.purge_expired() == 8
    assert ob.counters()["expired"] == 8 and ob.depth() == 0


def test_end_to_end_watermark(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    recs = ob.append(events(source="cam1")).records
    cam = [r for r in recs if r.source_id == "cam1"]
    ob.mark_sent([r.row_id for r in recs])
    assert ob.pending(100, unsent_only=True) == []
    assert ob.ack_watermark("cam1", ob.boot + 1, 99).deleted == 0  # another outbox's boot: ignored
    assert ob.ack_watermark("cam1", ob.boot, cam[1].seq).deleted == 2
    assert ob.unsend_older_than(float("inf")) == len(recs) - 2
    assert len(ob.pending(100, unsent_only=True)) == len(recs) - 2


def test_corrupt_outbox_is_moved_aside_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database" * 200)
    ob = Outbox(path)
    aside = list(tmp_path.glob("o.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    assert ob.counters()["corrupt_replaced"] == 1
    ob.append(events())
    assert ob.depth() == 8


def test_status_table(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    ob.put_status("capture", {"cameras": {"cam1": "connected"}})
    st = Outbox(tmp_path / "o.db").get_status()
    assert st["capture"]["cameras"] == {"cam1": "connected"}
