"""Cases on the platform: what opening cases costs the load transaction, a move, an export page.

1. Ingest: `Store.write` of 1000-event batches of plate passages, without alarms and with 1 % alarms
   (obstruction raises and their clears in the next batch, SOS presses): rows/s and ms per batch,
   same run, same server; the difference is the case step (`district.cases.record_cases`).
2. Moves: claim → dispatch → close through `CaseDesk` (each its own transaction with history and an
   audit record): ms per move.
3. Export: `CaseDesk.export` pages of 500 over every case: ms per page.

    .venv/bin/python bench/bench_cases.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from district.casedesk import CaseDesk
from district.config import DatabaseConfig, IngestConfig
from district.db import connect
from district.messages import EventRow, parse
from district.simulate import event, payload
from district.store import Store
from district.testing import scratch_database


def _plates(n: int, start: int, boot: int, t0: float) -> list[EventRow]:
    out = []
    for i in range(n):
        g = i % 200
        obj = event("dl-gjz", f"c{g // 10:04d}", f"gw{g:05d}", "cam2", boot, start + i // 200 + 1, ts=t0 + i * 0.001)
        p = parse(f"edgegw/dl-gjz/{obj['community']}/{obj['gateway']}/events/plate_passage", payload(obj))
        assert isinstance(p, EventRow)
        out.append(p)
    return out


def _alarm(gw: int, source: str, seq: int, boot: int, ts: float, attrs: dict[str, Any]) -> EventRow:
    obj = event("dl-gjz", f"c{gw // 10:04d}", f"gw{gw:05d}", source, boot, seq, ts=ts, kind="alarm")
    obj["attrs"] = {"message": "bench", **attrs}
    p = parse(f"edgegw/dl-gjz/{obj['community']}/{obj['gateway']}/events/alarm", payload(obj))
    assert isinstance(p, EventRow)
    return p


def _batches(n_batches: int, alarms: bool, boot: int) -> list[list[EventRow]]:
    t0 = time.time() - 3600
    out = []
    for b in range(n_batches):
        rows = _plates(1000 - (10 if alarms else 0), b * 5, boot, t0 + b)
        if alarms:
            for k in range(5):  # 5 raises per batch; the previous batch's 5 are cleared here
                gw = (b * 5 + k) % 200
                rows.append(_alarm(gw, "cam-lane", 2 * b + 1, boot, t0 + b, {
                    "code": "obstruction", "rule": "obstruction", "zone": f"z{k}", "state": "raised",
                    "covered": 0.4, "duration_s": 300.0}))
                if b:
                    prev = ((b - 1) * 5 + k) % 200
                    rows.append(_alarm(prev, "cam-lane", 2 * (b - 1) + 2, boot, t0 + b, {
                        "code": "obstruction", "rule": "obstruction", "zone": f"z{k}", "state": "cleared",
                        "covered": 0.4, "duration_s": 60.0}))
                else:
                    rows.append(_alarm(gw, "io1", b + 1, boot, t0 + b, {
                        "code": "alarm_column", "input": "sos", "meaning": "alarm_column", "state": "raised"}))
        out.append(rows)
    return out


def _ingest(dsn: str, batches: list[list[EventRow]]) -> dict[str, float]:
    store = Store(DatabaseConfig(dsn=dsn), IngestConfig(accept_past_days=3650, accept_future_days=3650))
    times = []
    try:
        for rows in batches:
            t = time.perf_counter()
            store.write(rows)
            times.append(time.perf_counter() - t)
    finally:
        store.close()
    rows_n = sum(len(b) for b in batches)
    return {"batches": len(batches), "rows": rows_n, "rows_per_s": round(rows_n / sum(times)),
            "ms_per_batch_median": round(statistics.median(times) * 1000, 2)}


def run(*, quick: bool = False) -> dict[str, Any]:
    """All three measurements on a scratch database (created and dropped)."""
    n = 10 if quick else 40
    with scratch_database("bench_cases") as dsn:
        boot = int(time.time() * 1000)
        plain = _ingest(dsn, _batches(n, False, boot))
        with_alarms = _ingest(dsn, _batches(n, True, boot + 1))
        desk = CaseDesk(lambda: connect(dsn))
        open_cases = [c.case_id for c in desk.find(open_only=True, limit=10_000)][: 20 if quick else 100]
        move_times = []
        for cid in open_cases:
            for step in ("claim", "dispatch", "close"):
                t = time.perf_counter()
                if step == "claim":
                    desk.claim(cid, actor="bench", officer="0042")
                elif step == "dispatch":
                    desk.dispatch(cid, actor="bench", officer="0042", unit="u1")
                else:
                    desk.close(cid, actor="bench", officer="0042", note="done")
                move_times.append(time.perf_counter() - t)
        pages, cursor, more, page_times, cases = 0, 0, True, [], 0
        while more:
            t = time.perf_counter()
            page = desk.export(cursor, limit=500)
            page_times.append(time.perf_counter() - t)
            cursor, more, pages, cases = page.cursor, page.more, pages + 1, cases + len(page.cases)
        with connect(dsn) as conn:
            total_cases = int(str(conn.execute("SELECT count(*) FROM cases").fetchall()[0][0]))
    overhead = with_alarms["ms_per_batch_median"] - plain["ms_per_batch_median"]
    return {"ingest_plain": plain, "ingest_1pct_alarms": with_alarms,
            "case_step_ms_per_batch": round(overhead, 2), "cases": total_cases,
            "move_ms_median": round(statistics.median(move_times) * 1000, 2), "moves": len(move_times),
            "export_pages": pages, "export_cases": cases,
            "export_ms_per_page_median": round(statistics.median(page_times) * 1000, 2)}


def main() -> int:
    """`python bench/bench_cases.py [--quick]`: print the JSON result."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    print(json.dumps(run(quick=ap.parse_args().quick), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
