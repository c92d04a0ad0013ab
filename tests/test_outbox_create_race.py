"""First start: both daemons create a new outbox at the same moment (issue 17).

Before the fix, `PRAGMA journal_mode=WAL` answered "database is locked" to the loser of the race
(SQLite does not call the busy handler for that switch) and the daemon exited; about 1 try in 8 with
four processes here. Now the switch is retried under the busy timeout: every process opens the
outbox, every try, and the file is one healthy WAL outbox with one boot.
"""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import traceback
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import edge.outbox  # imported before forking, so the children start at once
from edge.sqlite import connect

_PROCS = 4
_TRIES = 40


def _open(path: str, barrier: Barrier, results: Any, which: int) -> None:
    barrier.wait()
    try:
        if which % 2:
            edge.outbox.Outbox(Path(path)).close()
        else:
            # The other daemons' stores open their files through edge.sqlite.connect.
            connect(Path(path + ".store")).close()
            edge.outbox.Outbox(Path(path)).close()
        results.put("ok")
    except Exception:  # the test reports whatever went wrong
        results.put(traceback.format_exc(limit=3))


def test_concurrent_first_start_never_fails(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    failures: list[str] = []
    for t in range(_TRIES):
        path = str(tmp_path / f"try{t}" / "outbox.db")
        Path(path).parent.mkdir()
        barrier, results = ctx.Barrier(_PROCS), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, results, i)) for i in range(_PROCS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcome = [results.get(timeout=10) for _ in range(_PROCS)]
        failures += [o for o in outcome if o != "ok"]
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("SELECT COUNT(*) FROM meta WHERE key = 'boot'").fetchone()[0] == 1
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()
    assert not failures, f"{len(failures)} of {_TRIES * _PROCS} opens failed; first:\n{failures[0]}"
