"""District-wide police search over real PostgreSQL: pseudonyms per epoch, across gateways, audited,
rate-limited, raw value never stored; the HTTP API over real HTTP; the CLI (audit-check: test_auditcheck.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import fields
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import uvicorn

from district.api import create_app
from district.config import DatabaseConfig, IngestConfig, SearchConfig
from district.db import connect
from district.errors import SearchRefusedError
from district.messages import parse
from district.platform_audit import verify
from district.principals import Principals, Role, write_tokens_file
from district.search import Hit, KeyService, Refusal, SearchKind, SearchRequest, SearchService
from district.simulate import event, payload, pseudonymous_subject
from edge.compat import UTC
from edge.keys import load_key_file
from edge.privacy.config import EpochPolicy
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import IdKind
from tests._mqtt import RAW_IDENTIFIERS
from tests.conftest import free_port
from tests.district.conftest import Database

PLATE, OTHER = "辽B·12345", "辽B·67890"
NOV, DEC = datetime(2026, 11, 20, 8, 30, tzinfo=UTC), datetime(2026, 12, 1, 9, 15, tzinfo=UTC)
POLICE_TOKEN, AUDITOR_TOKEN = "p" * 40 + "1", "a" * 40 + "2"
RAW_IDENTIFIERS.add(PLATE)


@pytest.fixture
def seeded(pg: Database, key_file: Path) -> Pseudonymiser:
    """Events at two gateways in two epochs: the plate at gw01 (Nov) and gw02 (Dec), another plate at gw01."""
    ps = Pseudonymiser(load_key_file(key_file, purpose="test"), EpochPolicy.MONTH)
    from district.store import Store

    store = Store(DatabaseConfig(dsn=pg.dsn), IngestConfig(accept_past_days=3650, accept_future_days=3650))
    rows = []
    for gw, when, plate, seq in (("gw01", NOV, PLATE, 1), ("gw02", DEC, PLATE, 1), ("gw01", DEC, OTHER, 2)):
        obj = event("dl-gjz", "c0001" if gw == "gw01" else "c0002", gw, "cam2", 5, seq, ts=when.timestamp(),
                    subject=pseudonymous_subject(ps, IdKind.PLATE, plate, when.timestamp()))
        rows.append(parse(f"edgegw/dl-gjz/{obj['community']}/{gw}/events/plate_passage", payload(obj)))
    store.write(rows)
    store.close()
    return ps


def _service(pg: Database, key_file: Path, **limits: int) -> SearchService:
    cfg = SearchConfig(key_file=str(key_file), **limits)
    return SearchService(cfg, KeyService.from_config(cfg), lambda: connect(pg.dsn))


def _police() -> Principals:
    from district.principals import Principal

    return Principals({POLICE_TOKEN: Principal("officer-0042", Role.POLICE, "0042"),
                       AUDITOR_TOKEN: Principal("auditor-1", Role.AUDITOR)})


def _req(case: str = "C-2026-117", officer: str = "0042", value: str = PLATE) -> SearchRequest:
    return SearchRequest(SearchKind.PLATE, value, datetime(2026, 11, 1, tzinfo=UTC),
                         datetime(2026, 12, 31, tzinfo=UTC), case, officer)


def _everything_stored(pg: Database) -> str:
    """Every row of every platform table as text, to look for the raw value in."""
    tables = [r[0] for r in pg.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    return "\n".join(str(pg.query(f'SELECT * FROM "{t}"'.encode().decode())) for t in tables)


def test_search_finds_the_plate_across_gateways_and_epochs_audited(pg: Database, key_file: Path,
                                                                    seeded: Pseudonymiser) -> None:
    svc = _service(pg, key_file)
    who = _police().authenticate(POLICE_TOKEN)
    assert who is not None
    res = svc.search(who, _req())
    assert [(h.gateway, h.gate, h.kind, h.ts) for h in res.hits] == [
        ("gw01", "cam2", "plate_passage", NOV), ("gw02", "cam2", "plate_passage", DEC)]
    assert [e.split(".")[1] for e in res.epochs] == ["2026-11", "2026-12"]
    # Different epochs, different pseudonyms: the search found both only because it derived both.
    assert len({r[0] for r in pg.query("SELECT subject_pseudonym FROM events")}) == 3
    rec = pg.query("SELECT actor, action, details FROM audit_log WHERE seq = %s", (res.audit_seq,))[0]
    details = json.loads(str(rec[2]))
    assert rec[:2] == ("officer-0042", "search")
    assert details["case_id"] == "C-2026-117" and details["hits"] == 2
    assert details["gateways"] == ["dl-gjz/c0001/gw01", "dl-gjz/c0002/gw02"]
    dump = _everything_stored(pg)
    for form in (PLATE, PLATE.replace("·", ""), "12345"):
        assert form not in dump
    with connect(pg.dsn) as conn:
        assert verify(conn).ok


def test_search_refusals_are_audited_and_the_rate_limit_holds(pg: Database, key_file: Path,
                                                              seeded: Pseudonymiser) -> None:
    svc = _service(pg, key_file, max_per_window=2)
    principals = _police()
    who, auditor = principals.authenticate(POLICE_TOKEN), principals.authenticate(AUDITOR_TOKEN)
    assert who is not None and auditor is not None
    for req, reason, by in ((_req(case=""), Refusal.MISSING_CASE_ID, who),
                            (_req(officer=""), Refusal.MISSING_OFFICER_ID, who),
                            (_req(officer="0043"), Refusal.FORBIDDEN, who),  # the token is bound to 0042
                            (_req(), Refusal.FORBIDDEN, auditor),
                            (_req(value="B1"), Refusal.INVALID, who)):
        with pytest.raises(SearchRefusedError) as exc:
            svc.search(by, req)
        assert exc.value.reason == reason
    svc.search(who, _req())
    svc.search(who, _req())
    with pytest.raises(SearchRefusedError) as exc:
        svc.search(who, _req())
    assert exc.value.reason == Refusal.RATE_LIMITED and exc.value.retry_after_s
    actions = [r[0] for r in pg.query("SELECT action FROM audit_log ORDER BY seq")]
    assert actions == ["search_refused"] * 5 + ["search", "search", "search_refused"]
    # Tampering with any record is found, and where.
    pg.query("UPDATE audit_log SET details = replace(details, 'C-2026-117', 'C-2026-999') WHERE seq = 6")
    with connect(pg.dsn) as conn:
        check = verify(conn)
    assert not check.ok and check.first_bad_seq == 6 and "altered" in check.message


@pytest.fixture
def api(pg: Database, key_file: Path, seeded: Pseudonymiser) -> Iterator[str]:
    """The FastAPI app served by uvicorn on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(_service(pg, key_file, max_per_window=2), _police()),
                                           host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)


def test_http_api_roles_openapi_search_and_rate_limit(api: str) -> None:
    body = {"kind": "plate", "value": PLATE, "from": "2026-11-01T00:00:00Z", "to": "2026-12-31T00:00:00Z",
            "case_id": "C-2026-117", "officer": "0042"}
    police = {"Authorization": f"Bearer {POLICE_TOKEN}"}
    with httpx.Client(base_url=api, timeout=10) as http:
        spec = http.get("/openapi.json").json()
        assert "/v1/search" in spec["paths"] and "SearchIn" in spec["components"]["schemas"]
        hit = spec["components"]["schemas"]["HitOut"]  # search.Hit seen by pydantic: every field, required
        assert list(hit["properties"]) == hit["required"] == [f.name for f in fields(Hit)]
        assert hit["properties"]["ts"] == {"type": "string", "format": "date-time", "title": "Ts"}
        assert http.post("/v1/search", json=body).status_code == 401
        assert http.post("/v1/search", json=body, headers={"Authorization": "Bearer wrong" * 5}).status_code == 401
        auditor = {"Authorization": f"Bearer {AUDITOR_TOKEN}"}
        assert http.post("/v1/search", json=body, headers=auditor).status_code == 403
        missing = http.post("/v1/search", json={**body, "case_id": ""}, headers=police)
        assert missing.status_code == 400 and missing.json()["reason"] == "missing_case_id"
        ok = http.post("/v1/search", json=body, headers=police)
        assert ok.status_code == 200, ok.text
        assert [h["gateway"] for h in ok.json()["hits"]] == ["gw01", "gw02"]
        assert all(datetime.fromisoformat(h["ts"].replace("Z", "+00:00")).tzinfo for h in ok.json()["hits"])
        assert "C-2026-117" in ok.json()["details_hint"]
        assert http.post("/v1/search", json=body, headers=police).status_code == 200
        limited = http.post("/v1/search", json=body, headers=police)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert http.get("/v1/audit/verify", headers=police).status_code == 403
        audit = http.get("/v1/audit/verify", headers=auditor).json()
        assert audit["ok"] and audit["records"] == 4  # 1 refusal (missing case), 2 searches, 1 rate-limited


def test_cli_search_reads_the_value_from_stdin(tmp_path: Path, pg: Database, key_file: Path,
                                               seeded: Pseudonymiser) -> None:
    tokens = tmp_path / "tokens.toml"
    write_tokens_file(tokens, [("officer-0042", Role.POLICE, "0042", POLICE_TOKEN)])
    token_file = tmp_path / "my.token"
    token_file.write_text(POLICE_TOKEN + "\n")
    cfg = tmp_path / "district.toml"
    cfg.write_text(f'[database]\ndsn = "{pg.dsn}"\n[search]\nkey_file = "{key_file}"\ntokens_file = "{tokens}"\n')
    out = subprocess.run([sys.executable, "-m", "district", "search", "plate", "-", "--from", "2026-11-01",
                          "--to", "2026-12-31", "--case", "C-2026-117", "--officer", "0042", "--token-file",
                          str(token_file), "--config", str(cfg), "--json"], input=PLATE + "\n",
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": "."})
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)["hits"]
    assert [h["gateway"] for h in hits] == ["dl-gjz/c0001/gw01", "dl-gjz/c0002/gw02"]
    assert PLATE not in out.stderr
