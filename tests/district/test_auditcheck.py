"""`edgegw district audit-check` over real PostgreSQL: real gateway audit logs, heads signed with real
gateway identities, stored through the ingest's own status path; an intact history passes, a rewritten
one, a forged head and another gateway's head on this gateway's topic are each found; the CLI's
per-gateway report and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from district.auditcheck import check_against_chain, check_report
from district.config import DatabaseConfig, IngestConfig
from district.messages import parse
from district.store import Store
from edge.audit import AuditLog, audit_status
from edge.privacy.identity import GatewayIdentity, sign_audit_head
from tests.district.conftest import Database

D, C = "dl-gjz", "c0001"


class Gateway:
    """A gateway's audit side: its real audit log and identity key, publishing signed heads in its status."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.full = f"{D}/{C}/{name}"
        root.mkdir(parents=True, exist_ok=True)
        self.identity = GatewayIdentity.generate(root / "gateway.key")
        self.db = root / "audit.db"
        self.log = AuditLog(self.db)

    def sign(self, seq: int, digest: str) -> dict[str, object]:
        return sign_audit_head(self.identity, self.name, seq, digest, round(time.time(), 3))

    def status(self) -> bytes:
        return json.dumps({"online": True, **audit_status(self.log, self.sign)}).encode()

    def query(self, i: int) -> None:
        self.log.append("police:0042", "query", {"case_id": f"C-{i}", "hits": i})


def _ingest_status(pg: Database, gw: str, body: bytes) -> None:
    """Store a status exactly as the ingest worker does (parse, then the store's status path)."""
    store = Store(DatabaseConfig(dsn=pg.dsn), IngestConfig())
    try:
        store.write([parse(f"edgegw/{D}/{C}/{gw}/status", body)])
    finally:
        store.close()


def _register(pg: Database, gw: Gateway) -> None:
    out = subprocess.run([sys.executable, "-m", "district", "gateway", "register", gw.full, "--dsn", pg.dsn,
                          "--identity", gw.identity.public.text()], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": "."})
    assert out.returncode == 0, out.stderr
    assert gw.identity.public.fingerprint in out.stdout


def _audit_check(pg: Database, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "district", "audit-check", "--dsn", pg.dsn, *extra],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": "."})


def test_intact_history_passes_and_a_rewrite_is_found(tmp_path: Path, pg: Database) -> None:
    gw1, gw2 = Gateway(tmp_path / "gw01", "gw01"), Gateway(tmp_path / "gw02", "gw02")
    _register(pg, gw1)
    _register(pg, gw2)
    for i in range(4):
        for gw in (gw1, gw2):
            gw.query(i)
            _ingest_status(pg, gw.name, gw.status())
    with psycopg.connect(pg.dsn) as conn:
        report = check_report(conn)
        assert report.ok, report.findings
        assert report.heads == report.verified == {gw1.full: 4, gw2.full: 4}
        assert check_against_chain(conn, gw1.full, gw1.db) == (4, [])
    out = _audit_check(pg, "--gateway", gw1.full, "--gateway-db", str(gw1.db))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{gw1.full}: ok (4 head(s) stored, 4 signature(s) verified)" in out.stdout

    # Someone with the gateway's key and its audit group rebuilds the chain without query 1 and 2,
    # re-signs its head: consistent by itself, not with the heads the platform stored before.
    gw1.log.close()
    for p in tmp_path.glob("gw01/audit.db*"):
        p.unlink()
    gw1.log = AuditLog(gw1.db)
    for i in (0, 3):
        gw1.query(i)
    assert gw1.log.verify(use_anchor_file=False).ok
    _ingest_status(pg, "gw01", gw1.status())
    with psycopg.connect(pg.dsn) as conn:
        report = check_report(conn)
        _, chain = check_against_chain(conn, gw1.full, gw1.db)
    problems = [f.problem for f in report.findings]
    assert {f.gateway for f in report.findings} == {gw1.full}
    assert any("went back from record 4 to 2" in p for p in problems)
    assert any("record 2 now has hash" in p and "rewritten" in p for p in problems)
    assert sum("does not extend" in f.problem for f in chain) == 2  # records 3 and 4 are gone
    assert any("record 2 differs" in f.problem for f in chain)
    out = _audit_check(pg)
    assert out.returncode == 1
    assert f"{gw1.full}: FAIL" in out.stdout and f"{gw2.full}: ok" in out.stdout
    assert "went back" in out.stdout
    gw1.log.close()
    gw2.log.close()


def test_forged_and_foreign_heads_are_found_and_do_not_count(tmp_path: Path, pg: Database) -> None:
    gw1, gw2, gw3 = (Gateway(tmp_path / n, n) for n in ("gw01", "gw02", "gw03"))
    _register(pg, gw1)
    _register(pg, gw2)  # gw03 is never registered
    for i in range(3):
        gw1.query(i)
        gw2.query(i)
        gw2.query(i + 10)
        gw3.query(i)
    _ingest_status(pg, "gw01", gw1.status())
    # A broker client publishes on gw01's topic: an unsigned head, a signed head with another hash,
    # and gw02's genuine (further ahead) head.
    head = gw1.log.head()
    _ingest_status(pg, "gw01", json.dumps({"online": True, "audit_head": {"seq": 9, "hash": "ab" * 32}}).encode())
    tampered = {**gw1.sign(head.seq + 5, head.hash), "hash": "cd" * 32}
    _ingest_status(pg, "gw01", json.dumps({"online": True, "audit_head": tampered}).encode())
    _ingest_status(pg, "gw01", gw2.status())
    _ingest_status(pg, "gw03", gw3.status())
    gw1.query(3)
    _ingest_status(pg, "gw01", gw1.status())
    with psycopg.connect(pg.dsn) as conn:
        report = check_report(conn)
        # The forged heads are not evidence against gw01's chain: that check stays clean.
        assert check_against_chain(conn, gw1.full, gw1.db) == (5, [])
    problems: dict[str, list[str]] = {f.gateway: [] for f in report.findings}
    for f in report.findings:
        problems[f.gateway].append(f.problem)
    assert report.verified == {gw1.full: 2}
    assert len(problems[gw1.full]) == 3, problems
    assert any("unsigned" in p for p in problems[gw1.full])
    assert any("bad signature" in p for p in problems[gw1.full])
    assert any(f"signed by gateway {gw2.full}" in p for p in problems[gw1.full])
    assert not any("went back" in p or "rewritten" in p for p in problems[gw1.full])
    assert problems[gw3.full] == ["no identity key registered (`edgegw district gateway register`): "
                                  "its heads cannot be authenticated"]
    out = _audit_check(pg)
    assert out.returncode == 1
    assert f"{gw1.full}: FAIL (5 head(s) stored, 2 signature(s) verified)" in out.stdout
    assert f"{gw3.full}: FAIL" in out.stdout
    for gw in (gw1, gw2, gw3):
        gw.log.close()
