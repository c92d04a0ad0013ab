"""The audit trail against issue 12's attacks: pseudonyms kept in clear forever, a rewrite by a daemon.

Real SQLite files, the real query service, the real capture daemon (a subprocess) and CLI.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from district.keyservice import verify_head
from edge.app.config import load_config
from edge.app.wiring import gateway_identity
from edge.audit import AuditLog, ChainHead, Problem, record_hash
from edge.cli import main
from edge.outbox import Outbox
from edge.query.casekeys import CaseKeys
from edge.query.model import Channel, QueryKind, QueryRefusedError, QueryRequest, RefusalReason
from edge.query.service import QueryService
from edge.types import IdKind, Origin, RawIdentifier
from edge.uplink.stats import UplinkStats
from edge.uplink.status import status_body
from tests._passages import CARDS, POLICE, T0, make_env, plate_obs, shared_plates
from tests.conftest import MODELS_DIR, ROOT, new_gateway

DAY = 86400.0


def _plate_query(plate: str, case: str) -> QueryRequest:
    return QueryRequest(QueryKind.PLATE, case, "0042", T0 - DAY, T0 + DAY,
                        identifier=RawIdentifier(IdKind.PLATE, plate))


def test_the_audit_keeps_no_pseudonym_and_its_digests_die_with_the_case(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    try:
        keys = CaseKeys(tmp_path / "case-keys.db", clock=env.clock)
        service = QueryService(env.store, env.pseudonymiser, env.audit, env.service._cfg, env.limiter,
                               clock=env.clock, case_keys=keys)
        plate = shared_plates(1)[0]
        [event] = env.commit([plate_obs("cam-plate-n", T0, plate)])
        assert event.subject is not None and event.subject.pseudonym
        for case in ("C-1", "C-1", "C-2"):
            service.run(POLICE, _plate_query(plate, case), Channel.CLI)
        records = [json.loads(r.details) for r in env.audit.records() if r.action == "query"]
        digests = [r["pseudonyms"][0]["digest"] for r in records]
        # Oversight can see that C-1 asked twice for the same value, not that C-2 asked for it too.
        assert digests[0] == digests[1] != digests[2]
        env.audit.close()
        audit_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
        # The attack: read the audit database and look for the published pseudonym (any epoch).
        assert event.subject.pseudonym.encode() not in audit_bytes
        for label_pseudonym, _ in env.pseudonymiser.pseudonyms_between(IdKind.PLATE, plate, T0 - 90 * DAY, T0):
            assert label_pseudonym.encode() not in audit_bytes
        # With the case key, whoever holds the case file can re-check a digest; after the case is
        # closed, nobody can: the key is gone from the file (WAL included) and the case refuses queries.
        old_key = keys._key("C-1")
        assert keys.shred("C-1") and not keys.has("C-1")
        keys.close()
        assert old_key not in b"".join(p.read_bytes() for p in tmp_path.glob("case-keys.db*"))
        keys = CaseKeys(tmp_path / "case-keys.db", clock=env.clock)
        env.audit = AuditLog(tmp_path / "audit.db", clock=lambda: int(env.clock() * 1000))
        service = QueryService(env.store, env.pseudonymiser, env.audit, env.service._cfg, env.limiter,
                               clock=env.clock, case_keys=keys)
        with pytest.raises(QueryRefusedError) as refused:
            service.run(POLICE, _plate_query(plate, "C-1"), Channel.CLI)
        assert refused.value.reason is RefusalReason.INVALID and "closed" in str(refused.value)
        keys.close()
    finally:
        env.close()


def test_case_keys_past_their_age_are_shredded() -> None:
    now = [T0]
    keys = CaseKeys(None, max_age_days=30, clock=lambda: now[0])
    first = keys.digest("C-9", "pseudonym", "ab" * 16)
    now[0] += 31 * DAY
    assert keys.purge() == ["C-9"] and not keys.has("C-9")
    keys.close()
    assert len(first) == 32


def test_retention_prunes_the_start_and_the_rest_still_verifies(tmp_path: Path) -> None:
    now = [1_000_000]
    audit = AuditLog(tmp_path / "audit.db", clock=lambda: now[0])
    for i in range(10):
        audit.append("cli:t", "query", {"i": i, "card": "x" + CARDS[0][-4:]})
        now[0] += 1000
    published = audit.head()
    early = ChainHead(3, audit.records()[2].hash)
    assert audit.prune(1_005_000) == 5  # records 1-5 are older than the cut
    assert audit.base().seq == 5 and [r.seq for r in audit.records()][:1] == [6]
    result = audit.verify(published)
    assert result.ok, result.message
    assert audit.verify(early).ok  # a head older than the base is the platform's to check, not a failure
    audit.close()
    # Tampering after a prune is still found: edit record 7 in place.
    db = sqlite3.connect(tmp_path / "audit.db")
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET details = '{\"i\":99}' WHERE seq = 7")
    db.commit()
    db.close()
    with AuditLog(tmp_path / "audit.db") as again:
        bad = again.verify()
    assert not bad.ok and bad.first_bad_seq == 7 and bad.problem is Problem.EDITED


def test_a_rewrite_by_a_daemon_is_caught_by_the_signed_head_it_published(tmp_path: Path) -> None:
    cfg_path = new_gateway(tmp_path, f'[models]\ndir = "{MODELS_DIR}"\n\n[motion]\nenabled = false\n\n'
                                     '[[cameras]]\nid = "gate1"\nkind = "fake"\nframes = 1\n')
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "capture", "--config", str(cfg_path), "--exit-when-done"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(cfg_path)
    ob = Outbox(cfg.path(cfg.outbox.path))
    head = ob.get_status()["capture"]["audit_head"]
    # The uplink publishes it at the top of the retained status, where the platform looks for it.
    body = status_body(ob, Origin("d1", "c1", "g1"), cfg.uplink, UplinkStats(), online=True, protocol="5", now=1.0)
    assert body["audit_head"] == head
    ob.close()
    public = gateway_identity(cfg).public
    assert isinstance(head, dict) and head["signer"] == public.fingerprint
    assert verify_head(public, "g1", {"audit_head": head})  # what the platform checks and stores
    # The attack: a compromised daemon rewrites record 1 and re-hashes the chain and its anchor.
    db_path = cfg.path(cfg.audit.path)
    db = sqlite3.connect(db_path)
    db.execute("DROP TRIGGER audit_no_update")
    prev = "0" * 64
    rows = db.execute("SELECT seq, ts_ms, actor, action, details FROM audit ORDER BY seq").fetchall()
    for seq, ts_ms, actor, action, details in rows:
        if seq == 1:
            details = json.dumps({"forged": True})
        digest = record_hash(seq=seq, ts_ms=ts_ms, actor=actor, action=action, details=details, prev_hash=prev)
        db.execute("UPDATE audit SET details = ?, prev_hash = ?, hash = ? WHERE seq = ?", (details, prev, digest, seq))
        prev = digest
    db.commit()
    db.close()
    anchor = Path(str(db_path) + ".anchor")
    anchor.write_text(json.dumps({"seq": len(rows), "hash": prev}) + "\n")
    assert main(["audit", "verify", "--db", str(db_path)]) == 0  # locally it looks intact...
    published = f"{head['seq']}:{head['hash']}"
    assert main(["audit", "verify", "--db", str(db_path), "--expect-head", published]) == 1  # ...not to the platform
    # And the forger cannot publish a matching head of its own without the gateway's key.
    assert not verify_head(public, "g1", {"audit_head": {**head, "hash": prev}})


def test_closing_a_case_and_retention_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = new_gateway(tmp_path)
    cfg = load_config(cfg_path)
    with CaseKeys(cfg.path(cfg.audit.case_keys_path)) as keys:
        keys.digest("C-7", "pseudonym", "ab" * 16)
    assert main(["audit", "shred-case", "--config", str(cfg_path), "--case", "C-7"]) == 0
    assert "audit key shredded" in capsys.readouterr().out
    with CaseKeys(cfg.path(cfg.audit.case_keys_path)) as keys:
        assert not keys.has("C-7")
    assert main(["passages", "purge", "--config", str(cfg_path)]) == 0
    assert "audit: 0 record(s) past retention pruned, 0 case key(s) shredded" in capsys.readouterr().out
    with AuditLog(cfg.path(cfg.audit.path), create=False) as audit:
        actions = [r.action for r in audit.records()]
        assert "case_shred" in actions and audit.verify().ok
