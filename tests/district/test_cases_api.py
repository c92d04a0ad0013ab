"""The case desk over real HTTP (uvicorn, bearer-token roles, 404/409, OpenAPI, the export) and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import httpx
import pytest
import uvicorn

from district.api import create_app
from district.casedesk import Case, HistoryEntry
from district.config import DatabaseConfig, IngestConfig, SearchConfig
from district.db import connect
from district.platform_audit import verify
from district.principals import Principal, Principals, Role
from district.search import KeyService, SearchService
from district.store import Store
from tests.conftest import ROOT, free_port
from tests.district.conftest import SERVER_DSN, Database
from tests.district.test_cases import obstruction, sos

POLICE, BOUND, AUDITOR = "p" * 40 + "1", "b" * 40 + "2", "a" * 40 + "3"


def _seed(pg: Database) -> tuple[str, str]:
    """An SOS press (open) and an obstruction that cleared (archived); their case ids."""
    store = Store(DatabaseConfig(dsn=pg.dsn), IngestConfig())
    t0 = time.time() - 300
    press, lane = sos(1, t0, "raised"), obstruction(1, t0, "raised", 120.0)
    store.write([press, lane, obstruction(2, t0 + 200, "cleared", 200.0)])
    store.close()
    return str(getattr(press, "event_id")), str(getattr(lane, "event_id"))  # noqa: B009


@pytest.fixture
def api(pg: Database, key_file: Path) -> Iterator[str]:
    cfg = SearchConfig(key_file=str(key_file))
    principals = Principals({POLICE: Principal("duty-desk", Role.POLICE),
                             BOUND: Principal("officer-0042", Role.POLICE, "0042"),
                             AUDITOR: Principal("case-system", Role.AUDITOR)})
    app = create_app(SearchService(cfg, KeyService.from_config(cfg), lambda: connect(pg.dsn)), principals)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_cases_over_http_roles_moves_refusals_and_export(api: str, pg: Database) -> None:
    sos_id, lane_id = _seed(pg)
    with httpx.Client(base_url=api, timeout=10) as http:
        spec = http.get("/openapi.json").json()
        for path in ("/v1/cases", "/v1/cases/export", "/v1/cases/{case_id}", "/v1/cases/{case_id}/claim",
                     "/v1/cases/{case_id}/dispatch", "/v1/cases/{case_id}/close"):
            assert path in spec["paths"], path
        assert {"CaseOut", "ExportOut", "DispatchIn", "CloseIn"} <= set(spec["components"]["schemas"])
        assert "409" in spec["paths"]["/v1/cases/{case_id}/claim"]["post"]["responses"]
        # CaseOut is the desk's Case seen by pydantic: every field, all required, in the desk's order.
        schemas = spec["components"]["schemas"]
        case = schemas["CaseOut"]
        assert list(case["properties"]) == case["required"] == [f.name for f in fields(Case)]
        assert schemas["HistoryOut"]["required"] == [f.name for f in fields(HistoryEntry)]
        assert case["properties"]["state"] == {"$ref": "#/components/schemas/CaseState"}
        assert case["properties"]["history"]["items"] == {"$ref": "#/components/schemas/HistoryOut"}
        assert case["properties"]["links"]["description"] == "watch_hit: the event ids of the matched passage(s)"
        assert http.get("/v1/cases").status_code == 401
        listed = http.get("/v1/cases", params={"open_only": "true"}, headers=_h(AUDITOR))
        assert listed.status_code == 200 and [c["case_id"] for c in listed.json()] == [sos_id]
        shown = http.get(f"/v1/cases/{lane_id}", headers=_h(AUDITOR)).json()
        assert (shown["state"], shown["state_label"], shown["closed_by"]) == ("archived", "归档", "system")
        assert shown["duration_s"] == 200.0
        move = {"officer": "0042", "note": "taking it"}
        assert http.post(f"/v1/cases/{sos_id}/claim", json=move, headers=_h(AUDITOR)).status_code == 403
        wrong = http.post(f"/v1/cases/{sos_id}/claim", json={**move, "officer": "0043"}, headers=_h(BOUND))
        assert wrong.status_code == 403
        early = http.post(f"/v1/cases/{sos_id}/dispatch", json={**move, "unit": "security-east"}, headers=_h(BOUND))
        assert early.status_code == 409 and early.json()["reason"] == "conflict"
        assert "reported (上报)" in early.json()["message"]
        missing = http.post("/v1/cases/00000000-0000-7000-8000-000000000000/claim", json=move, headers=_h(BOUND))
        assert missing.status_code == 404 and missing.json()["reason"] == "not_found"
        assert http.post(f"/v1/cases/{sos_id}/claim", json={"officer": ""}, headers=_h(BOUND)).status_code == 422
        first = http.get("/v1/cases/export", headers=_h(AUDITOR)).json()
        assert {c["case_id"] for c in first["cases"]} == {sos_id, lane_id}
        ok = http.post(f"/v1/cases/{sos_id}/claim", json=move, headers=_h(BOUND))
        assert ok.status_code == 200 and ok.json()["state"] == "accepted" and ok.json()["officer"] == "0042"
        assert http.post(f"/v1/cases/{sos_id}/claim", json=move, headers=_h(BOUND)).status_code == 409
        sent = http.post(f"/v1/cases/{sos_id}/dispatch", json={**move, "unit": "security-east"}, headers=_h(POLICE))
        assert sent.status_code == 200 and sent.json()["unit"] == "security-east"
        assert http.post(f"/v1/cases/{sos_id}/close", json={"officer": "0042"}, headers=_h(POLICE)).status_code == 422
        done = http.post(f"/v1/cases/{sos_id}/close", json={"officer": "0042", "note": "false alarm: a child"},
                         headers=_h(POLICE))
        assert done.status_code == 200 and done.json()["state"] == "archived"
        assert http.post(f"/v1/cases/{lane_id}/close", json={"officer": "0042", "note": "x"},
                         headers=_h(POLICE)).status_code == 409
        # The export since the first cursor: only the case that moved, whole, with its history.
        changed = http.get("/v1/cases/export", params={"since": first["cursor"]}, headers=_h(AUDITOR)).json()
        assert [c["case_id"] for c in changed["cases"]] == [sos_id] and changed["cursor"] > first["cursor"]
        assert [h["to_state"] for h in changed["cases"][0]["history"]] == [
            "discovered", "reported", "accepted", "dispatched", "feedback", "archived"]
        assert [h["actor"] for h in changed["cases"][0]["history"]][2:] == ["0042"] * 4
        again = http.get("/v1/cases/export", params={"since": changed["cursor"]}, headers=_h(AUDITOR)).json()
        assert again["cases"] == [] and again["cursor"] >= changed["cursor"]
        assert http.get("/v1/cases/export", params={"since": -1}, headers=_h(AUDITOR)).status_code == 422
    actors = pg.query("SELECT actor, action FROM audit_log WHERE action LIKE 'case_%%' AND actor <> 'system' "
                      "ORDER BY seq")
    assert actors == [("officer-0042", "case_claim"), ("duty-desk", "case_dispatch"), ("duty-desk", "case_close")]
    with connect(pg.dsn) as conn:
        assert verify(conn).ok


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "district", "cases", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def test_cases_cli_list_claim_dispatch_close_export(pg: Database) -> None:
    sos_id, lane_id = _seed(pg)
    listed = _cli("list", "--open", "--json", "--dsn", pg.dsn)
    assert listed.returncode == 0, listed.stderr
    assert [c["case_id"] for c in json.loads(listed.stdout)] == [sos_id]
    refused = _cli("dispatch", sos_id, "--officer", "0042", "--unit", "security-east", "--dsn", pg.dsn)
    assert refused.returncode == 3 and "refused (conflict)" in refused.stderr
    claimed = _cli("claim", sos_id, "--officer", "0042", "--case-note", "on my way", "--dsn", pg.dsn)
    assert claimed.returncode == 0 and "accepted (受理)" in claimed.stdout, claimed.stderr
    assert _cli("dispatch", sos_id, "--officer", "0042", "--unit", "security-east", "--dsn", pg.dsn).returncode == 0
    assert _cli("close", sos_id, "--officer", "0042", "--dsn", pg.dsn).returncode == 2  # argparse: note required
    closed = _cli("close", sos_id, "--officer", "0042", "--case-note", "resident ok", "--json", "--dsn", pg.dsn)
    assert closed.returncode == 0 and json.loads(closed.stdout)["state"] == "archived"
    shown = json.loads(_cli("show", sos_id, "--dsn", pg.dsn).stdout)
    assert [h["to_state"] for h in shown["history"]][-2:] == ["feedback", "archived"]
    assert _cli("show", "nope", "--dsn", pg.dsn).returncode == 3
    unmigrated = _cli("list", "--dsn", f"{SERVER_DSN} dbname=postgres")
    assert unmigrated.returncode == 2 and "run `edgegw district migrate`" in unmigrated.stderr
    export = json.loads(_cli("export", "--dsn", pg.dsn).stdout)
    assert {c["case_id"] for c in export["cases"]} == {sos_id, lane_id}
    assert json.loads(_cli("export", "--since", str(export["cursor"]), "--dsn", pg.dsn).stdout)["cases"] == []
    actors = [str(r[0]) for r in pg.query("SELECT actor FROM audit_log WHERE action LIKE 'case\\_%%' "
                                          "AND actor <> 'system'")]
    assert len(actors) == 3 and all(a.startswith("cli:") for a in actors)
