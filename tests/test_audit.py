"""Hash-chained audit log: chain format, tamper detection of every kind, anchors, concurrency, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditError,
    AuditLog,
    ChainHead,
    Problem,
    record_hash,
)
from edge.cli import main
from edge.errors import PrivacyError
from edge.types import IdKind, RawIdentifier

REPO = Path(__file__).resolve().parents[1]


def _independent_hash(seq: int, ts: int, actor: str, action: str, details: str, prev: str) -> str:
    """The documented record encoding, re-implemented here so the format is pinned by the test."""
    payload = json.dumps([seq, ts, actor, action, details, prev], separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(b"edgegw/audit/v1\n" + payload.encode()).hexdigest()


class _Clock:
    def __init__(self) -> None:
        self.now = 1_767_225_600_000  # 2026-01-01T00:00:00Z

    def __call__(self) -> int:
        self.now += 1234
        return self.now


def _filled(tmp_path: Path, n: int = 6) -> AuditLog:
    audit = AuditLog(tmp_path / "audit.db", clock=_Clock())
    actions = [AuditAction.QUERY, AuditAction.ENROL, AuditAction.KEY_ROTATE, AuditAction.PURGE,
               AuditAction.CONFIG_CHANGE, "query_refused"]
    for i in range(n):
        audit.append(f"officer:{i % 2}", actions[i % len(actions)],
                     {"case": f"C-{i}", "gate": "north", "pseudonym": f"p{i:04x}", "hits": i})
    return audit


def _tamper(db: Path, *statements: str) -> None:
    """What an attacker with write access does: drop the guard triggers, then change rows."""
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER IF EXISTS audit_no_update")
    con.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for sql in statements:
        con.execute(sql)
    con.commit()
    con.close()


def _rehash_from(db: Path, first_seq: int) -> None:
    """A smarter attacker: recompute every hash and link from `first_seq` on."""
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER IF EXISTS audit_no_update")
    rows = con.execute("SELECT seq, ts_ms, actor, action, details FROM audit WHERE seq >= ? ORDER BY seq",
                       (first_seq,)).fetchall()
    (prev,) = con.execute("SELECT hash FROM audit WHERE seq = ?", (first_seq - 1,)).fetchone() or (GENESIS_HASH,)
    for seq, ts, actor, action, details in rows:
        digest = _independent_hash(seq, ts, actor, action, details, prev)
        con.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
        prev = digest
    con.commit()
    con.close()


def test_chain_format_known_answer(tmp_path: Path) -> None:
    with _filled(tmp_path) as audit:
        records = audit.records()
        assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
        prev = GENESIS_HASH
        for r in records:
            assert r.prev_hash == prev
            assert r.hash == _independent_hash(r.seq, r.ts_ms, r.actor, r.action, r.details, r.prev_hash)
            assert r.hash == record_hash(seq=r.seq, ts_ms=r.ts_ms, actor=r.actor, action=r.action,
                                         details=r.details, prev_hash=r.prev_hash)
            prev = r.hash
        assert records[0].details == '{"case":"C-0","gate":"north","hits":0,"pseudonym":"p0000"}'
        assert audit.head() == ChainHead(6, records[-1].hash)
        result = audit.verify()
        assert result.ok and result.records == 6 and result.head == audit.head()
        assert result.first_bad_seq is None and result.problem is None


def test_empty_log_head_and_verify(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as audit:
        assert audit.head() == ChainHead(0, GENESIS_HASH)
        assert audit.verify().ok
        assert audit.read_anchor() is None


def test_anchor_file_follows_every_append(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as audit:
        for i in range(3):
            rec = audit.append("system:purge", AuditAction.PURGE, {"rows": i})
            assert audit.read_anchor() == ChainHead(rec.seq, rec.hash) == audit.head()
        assert audit.anchor_path == tmp_path / "audit.db.anchor"
        assert json.loads(audit.anchor_path.read_text()) == {"seq": 3, "hash": audit.head().hash}


def test_durability_pragmas(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as audit:
        assert audit._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert audit._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_details_are_canonical_and_identifier_free(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as audit:
        a = audit.append("officer:7", "query", {"b": 1, "a": [1.5, None, True], "c": {"y": "z", "x": 0}})
        b = audit.append("officer:7", "query", {"c": {"x": 0, "y": "z"}, "a": [1.5, None, True], "b": 1})
        assert a.details == b.details == '{"a":[1.5,null,true],"b":1,"c":{"x":0,"y":"z"}}'
        plate = RawIdentifier(IdKind.PLATE, "AB123CD")
        with pytest.raises(PrivacyError, match="raw plate identifier"):
            audit.append("officer:7", "query", {"subject": plate})  # type: ignore[dict-item]
        with pytest.raises(PrivacyError, match="raw plate"):
            audit.append("officer:7", "query", {"subjects": [{"id": plate}]})  # type: ignore[dict-item]
        with pytest.raises(PrivacyError, match="bytes or an array"):
            audit.append("officer:7", "enrol", {"crop": b"\xff\xd8"})
        with pytest.raises(PrivacyError, match="bytes or an array"):
            audit.append("officer:7", "enrol", {"embedding": np.zeros(4, np.float32)})  # type: ignore[dict-item]
        with pytest.raises(AuditError, match="non-finite"):
            audit.append("officer:7", "query", {"score": float("nan")})
        with pytest.raises(AuditError, match="snake_case"):
            audit.append("officer:7", "Drop Table", {})
        with pytest.raises(AuditError, match="actor"):
            audit.append("", "query", {})
        assert audit.head().seq == 2  # refused appends left no trace
        assert "AB123CD" not in (tmp_path / "audit.db").read_bytes().decode("latin-1")


def test_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    _filled(tmp_path).close()
    con = sqlite3.connect(tmp_path / "audit.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE audit SET actor = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM audit WHERE seq = 1")
    con.close()


@pytest.mark.parametrize(
    "assignment",
    ["actor = 'officer:9'", "action = 'enrol'", "details = '{\"case\":\"C-999\"}'", "ts_ms = ts_ms + 1",
     "prev_hash = hash", "hash = prev_hash", "ts_ms = 'soon'"],
    ids=["actor", "action", "details", "ts", "prev_hash", "hash", "type"],
)
def test_an_edited_field_is_found(tmp_path: Path, assignment: str) -> None:
    _filled(tmp_path).close()
    _tamper(tmp_path / "audit.db", f"UPDATE audit SET {assignment} WHERE seq = 3")
    with AuditLog(tmp_path / "audit.db") as audit:
        result = audit.verify()
    assert not result.ok
    assert (result.first_bad_seq, result.problem) == (3, Problem.EDITED)
    assert "record 3" in result.message and "edited" in result.message
    assert result.records == 2  # records 1 and 2 are good


def test_an_edit_rehashed_in_place_breaks_the_next_link(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    _filled(tmp_path).close()
    con = sqlite3.connect(db)
    seq, ts, actor, action, _details, prev = con.execute(
        "SELECT seq, ts_ms, actor, action, details, prev_hash FROM audit WHERE seq = 3").fetchone()
    con.close()
    forged = '{"case":"C-forged"}'
    _tamper(db, f"UPDATE audit SET details = '{forged}', hash = "
                f"'{_independent_hash(seq, ts, actor, action, forged, prev)}' WHERE seq = 3")
    with AuditLog(db) as audit:
        result = audit.verify()
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 4, Problem.BROKEN_LINK)
    assert "record 4 does not link to record 3" in result.message


@pytest.mark.parametrize(("deleted", "first", "phrase"), [
    ((3,), 3, "record 3 missing"),
    ((2, 3, 4), 2, "records 2-4 missing"),
    ((1,), 1, "record 1 missing"),
])
def test_a_deleted_record_is_found(tmp_path: Path, deleted: tuple[int, ...], first: int, phrase: str) -> None:
    _filled(tmp_path).close()
    _tamper(tmp_path / "audit.db", *(f"DELETE FROM audit WHERE seq = {s}" for s in deleted))
    with AuditLog(tmp_path / "audit.db") as audit:
        result = audit.verify()
    assert (result.ok, result.first_bad_seq, result.problem) == (False, first, Problem.DELETED)
    assert phrase in result.message


def test_reordered_records_are_found(tmp_path: Path) -> None:
    _filled(tmp_path).close()
    _tamper(tmp_path / "audit.db",
            "UPDATE audit SET seq = -4 WHERE seq = 4",
            "UPDATE audit SET seq = 4 WHERE seq = 3",
            "UPDATE audit SET seq = 3 WHERE seq = -4")
    with AuditLog(tmp_path / "audit.db") as audit:
        result = audit.verify()
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 3, Problem.REORDERED)
    assert "record 3 holds the entry that belongs at position 4" in result.message


def test_reordered_and_rehashed_records_break_the_chain(tmp_path: Path) -> None:
    # Swap the contents of rows 3 and 4 and re-hash each for its new seq: each row then matches its
    # own hash, but record 3 no longer links to record 2.
    db = tmp_path / "audit.db"
    _filled(tmp_path).close()
    con = sqlite3.connect(db)
    rows = {r[0]: r for r in con.execute("SELECT seq, ts_ms, actor, action, details, prev_hash FROM audit")}
    con.close()
    stmts = []
    for new_seq, old_seq in ((3, 4), (4, 3)):
        _, ts, actor, action, details, prev = rows[old_seq]
        digest = _independent_hash(new_seq, ts, actor, action, details, prev)
        stmts.append(f"UPDATE audit SET ts_ms = {ts}, actor = '{actor}', action = '{action}', "
                     f"details = '{details}', prev_hash = '{prev}', hash = '{digest}' WHERE seq = {new_seq}")
    _tamper(db, *stmts)
    with AuditLog(db) as audit:
        result = audit.verify()
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 3, Problem.BROKEN_LINK)
    assert "record 3 does not link to record 2" in result.message


def test_a_record_relinked_past_its_predecessor_is_found(tmp_path: Path) -> None:
    # Record 4 is re-pointed at record 2 and re-hashed: it is self-consistent but skips record 3.
    db = tmp_path / "audit.db"
    _filled(tmp_path).close()
    con = sqlite3.connect(db)
    (h2,) = con.execute("SELECT hash FROM audit WHERE seq = 2").fetchone()
    seq, ts, actor, action, details = con.execute(
        "SELECT seq, ts_ms, actor, action, details FROM audit WHERE seq = 4").fetchone()
    con.close()
    _tamper(db, f"UPDATE audit SET prev_hash = '{h2}', hash = "
                f"'{_independent_hash(seq, ts, actor, action, details, h2)}' WHERE seq = 4")
    with AuditLog(db) as audit:
        result = audit.verify()
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 4, Problem.REORDERED)
    assert "record 4 follows record 2 in the chain, not record 3" in result.message


def test_truncated_tail_is_found_only_against_an_anchor(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    with _filled(tmp_path) as audit:
        published = audit.head()
    _tamper(db, "DELETE FROM audit WHERE seq >= 5")
    with AuditLog(db) as audit:
        # The chain alone cannot see it: this is why the head is anchored.
        assert audit.verify(use_anchor_file=False).ok
        by_file = audit.verify()
        by_head = audit.verify(published, use_anchor_file=False)
    for result in (by_file, by_head):
        assert (result.ok, result.first_bad_seq, result.problem) == (False, 5, Problem.TRUNCATED)
        assert "records 5-6 removed" in result.message
    assert "anchor file" in by_file.message and "expected head" in by_head.message


def test_everything_deleted_is_found_against_the_anchor(tmp_path: Path) -> None:
    _filled(tmp_path).close()
    _tamper(tmp_path / "audit.db", "DELETE FROM audit")
    with AuditLog(tmp_path / "audit.db") as audit:
        result = audit.verify()
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 1, Problem.TRUNCATED)


def test_consistent_rewrite_is_found_only_against_an_anchor(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    with _filled(tmp_path) as audit:
        published = audit.head()
    _tamper(db, "UPDATE audit SET details = '{\"case\":\"C-forged\"}' WHERE seq = 2")
    _rehash_from(db, 2)
    with AuditLog(db) as audit:
        assert audit.verify(use_anchor_file=False).ok  # honest limitation: no secret in the chain
        result = audit.verify(published, use_anchor_file=False)
        assert (result.ok, result.first_bad_seq, result.problem) == (False, 6, Problem.REWRITTEN)
        assert not audit.verify().ok  # the local anchor file catches it too


def test_truncate_then_append_is_found(tmp_path: Path) -> None:
    # A rollback followed by new activity: the anchor never moves back, so the fork shows.
    db = tmp_path / "audit.db"
    _filled(tmp_path).close()
    _tamper(db, "DELETE FROM audit WHERE seq >= 4")
    with AuditLog(db) as audit:
        for i in range(3):
            audit.append("officer:1", "query", {"case": f"C-new-{i}"})
        assert audit.read_anchor() is not None and audit.read_anchor() != audit.head()
        result = audit.verify()
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 6, Problem.REWRITTEN)


def test_missing_anchor_file_fails_verification(tmp_path: Path) -> None:
    with _filled(tmp_path) as audit:
        audit.anchor_path.unlink()
        result = audit.verify()
        assert (result.ok, result.problem) == (False, Problem.ANCHOR_MISSING)
        assert "missing" in result.message
        audit.anchor_path.write_text("not json")
        assert audit.verify().problem == Problem.ANCHOR_MISSING
        assert audit.verify(use_anchor_file=False).ok
        audit.append("system", "purge", {})  # an append repairs a damaged anchor going forward
        assert audit.verify().ok


def test_chain_head_parse() -> None:
    head = ChainHead(42, "ab" * 32)
    assert ChainHead.parse(str(head)) == head
    for bad in ("42", "x:" + "ab" * 32, "42:" + "AB" * 32, "42:abc"):
        with pytest.raises(AuditError):
            ChainHead.parse(bad)


def test_threads_share_one_log(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as audit:
        def work(who: str) -> None:
            for i in range(25):
                audit.append(who, "query", {"i": i})

        threads = [threading.Thread(target=work, args=(f"t{k}",)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result = audit.verify()
        assert result.ok and result.records == 100
        assert audit.read_anchor() == audit.head()


_WORKER = """
import sys, time
from pathlib import Path
from edge.audit import AuditLog
db, who, n, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
audit = AuditLog(db)
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.001)
for i in range(n):
    audit.append(who, "query", {"case": "C-1", "i": i})
audit.close()
"""


def test_two_processes_appending_keep_one_valid_chain(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    go = tmp_path / "go"
    n = 120
    AuditLog(db).close()  # create the schema once, as the daemon would
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(db), who, str(n), str(go)], cwd=REPO, env=env)
             for who in ("proc-a", "proc-b")]
    time.sleep(0.3)  # let both import and open the database before they race
    go.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0
    with AuditLog(db) as audit:
        result = audit.verify()
        assert result.ok, result.message
        assert result.records == 2 * n
        records = audit.records()
        for who in ("proc-a", "proc-b"):
            mine = [json.loads(r.details)["i"] for r in records if r.actor == who]
            assert mine == list(range(n))  # each writer's records, complete and in its order
        assert audit.read_anchor() == audit.head()


def test_cli_verify_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "audit.db"
    with _filled(tmp_path) as audit:
        head = audit.head()
    assert main(["audit", "verify", "--db", str(db)]) == 0
    assert f"OK, 6 records, head {head}" in capsys.readouterr().out
    assert main(["audit", "verify", "--db", str(db), "--expect-head", str(head)]) == 0
    capsys.readouterr()

    assert main(["audit", "show", "--db", str(db), "--limit", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [rec["seq"] for rec in lines] == [5, 6]
    assert lines[-1]["hash"] == head.hash and lines[0]["details"]["case"] == "C-4"
    assert lines[0]["ts"].endswith("Z") and lines[0]["ts"].startswith("2026-01-01T00:00:0")

    _tamper(db, "UPDATE audit SET actor = 'officer:x' WHERE seq = 4")
    assert main(["audit", "verify", "--db", str(db)]) == 1
    err = capsys.readouterr().err
    assert "TAMPERED at record 4 (edited)" in err

    assert main(["audit", "verify", "--db", str(tmp_path / "nope.db")]) == 2
    assert "no audit log" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()  # verify never creates a log


def test_cli_verify_truncation_with_explicit_anchor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "audit.db"
    elsewhere = tmp_path / "safe" / "audit.anchor"
    elsewhere.parent.mkdir()
    with AuditLog(db, anchor_path=elsewhere) as audit:
        for i in range(4):
            audit.append("officer:1", "query", {"case": f"C-{i}"})
    _tamper(db, "DELETE FROM audit WHERE seq = 4")
    assert main(["audit", "verify", "--db", str(db), "--anchor", str(elsewhere)]) == 1
    assert "TAMPERED at record 4 (truncated)" in capsys.readouterr().err
    assert main(["audit", "verify", "--db", str(db), "--no-anchor-file"]) == 0
    assert "cannot be detected" in capsys.readouterr().err
