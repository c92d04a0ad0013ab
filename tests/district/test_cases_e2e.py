"""Issue 14 end to end, platform included: the district builds and pushes a watch-list with the CLI; the
real gateway daemons (`edgegw uplink` + `edgegw capture`, an RDM6300 reader on a pty) receive it over
a real mosquitto; a swipe of the watched card becomes a `watch_hit` through the outbox and the
uplink; the district's ingest worker (a process) stores it in PostgreSQL and opens a case, which an
officer claims over HTTP, dispatches with the CLI and closes over HTTP; the export shows the history;
the gateway's alarms sent again open no second case. And, without the gateway daemons (fast): a
fire-lane obstruction raised and cleared through the worker closes its case by itself, an SOS
press and release leaves its case open, and the stream replayed opens and moves nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from district.api import create_app
from district.config import SearchConfig
from district.db import connect
from district.platform_audit import verify
from district.principals import Principal, Principals, Role
from district.search import KeyService, SearchService
from district.simulate import event, payload
from drivers.serial.rdm6300 import encode
from edge.keys import load_key_file
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import IdKind
from tests._chaos import wait_until
from tests._gateway import gateway_daemon, stop_daemons, watch_list_gateway
from tests._mqtt import RAW_IDENTIFIERS
from tests._ptypair import free_pair
from tests.conftest import ROOT, Broker, free_port
from tests.district.conftest import Database, district_config, worker

CARD = bytes.fromhex("5C1D2E3F40")
OFFICER = "o" * 40 + "1"


def _district(cfg: Path, pg: Database, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "district", *args, "--config", str(cfg), "--dsn", pg.dsn], cwd=ROOT,
                          capture_output=True, text=True, input=stdin, timeout=60, check=False)


def _tails(*logs: Path) -> str:
    return "".join(f"\n--- {p.name}:\n{p.read_text(errors='replace')[-2500:]}" for p in logs if p.exists())


def _swipe(path: str) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
    try:
        os.write(fd, encode(CARD))
    finally:
        os.close(fd)


class _Api:
    """The platform's FastAPI app on uvicorn in a thread."""

    def __init__(self, pg: Database, key_file: Path) -> None:
        cfg = SearchConfig(key_file=str(key_file))
        app = create_app(SearchService(cfg, KeyService.from_config(cfg), lambda: connect(pg.dsn)),
                         Principals({OFFICER: Principal("officer-0042", Role.POLICE, "0042")}))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]),
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert wait_until(lambda: self.server.started, 10)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _sos(seq: int, ts: float, state: str) -> tuple[str, bytes]:
    obj = event("d1", "c1", "g9", "io-gate1", 1, seq, ts=ts, kind="alarm")
    obj["attrs"] = {"code": "alarm_column", "input": "sos-east", "meaning": "alarm_column", "severity": "critical",
                    "state": state, "message": f"SOS {state}"} | ({"duration_s": 4.0} if state == "cleared" else {})
    return "edgegw/d1/c1/g9/events/alarm", payload(obj)


def _obstruction(seq: int, ts: float, state: str, duration: float) -> tuple[str, bytes]:
    obj = event("d1", "c1", "g9", "cam-lane", 1, seq, ts=ts, kind="alarm")
    obj["attrs"] = {"code": "obstruction", "rule": "obstruction", "zone": "fire-lane-1", "severity": "warning",
                    "state": state, "covered": 0.37, "duration_s": duration, "message": f"zone {state}"}
    return "edgegw/d1/c1/g9/events/alarm", payload(obj)


def _case_counts(pg: Database) -> list[tuple[object, ...]]:
    return pg.query("SELECT (SELECT count(*) FROM cases), (SELECT count(*) FROM case_history), "
                    "(SELECT count(*) FROM audit_log)")


def _duplicates(log: Path) -> int:
    found = re.findall(r"duplicates=(\d+),", log.read_text())
    return int(found[-1]) if found else 0


def _publish(broker: Broker, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="resender", protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for info in [client.publish(topic, body, qos=1) for topic, body in messages]:
            info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def _resend(broker: Broker, log: Path, messages: list[tuple[str, bytes]]) -> None:
    """Publish byte-identical copies and wait until the worker counted every one as a duplicate."""
    dups = _duplicates(log)
    _publish(broker, messages)
    assert wait_until(lambda: _duplicates(log) >= dups + len(messages), 30, 0.2), _tails(log)


def test_alarms_through_the_worker_open_clear_and_replay_cases_once(tmp_path: Path, pg: Database,
                                                                    broker: Broker) -> None:
    ingest = worker(district_config(tmp_path), pg, broker.port, tmp_path, client_id="cases-w2")
    t0 = time.time() - 900
    stream = [_obstruction(1, t0, "raised", 300.0), _sos(1, t0 + 10, "raised"),
              _obstruction(2, t0 + 780, "cleared", 780.0), _sos(2, t0 + 14, "cleared")]
    try:
        # Until the worker's shared subscription is in place, the broker drops what is published.
        for _ in range(60):
            _publish(broker, stream[:1])
            if wait_until(lambda: pg.scalar("SELECT count(*) FROM events") == 1, 0.5):
                break
        _publish(broker, stream)
        assert wait_until(lambda: pg.scalar("SELECT count(*) FROM events") == 4
                          and pg.scalar("SELECT count(*) FROM cases WHERE cleared_event_id IS NOT NULL") == 2,
                          60, 0.1), _tails(ingest.log_path)
        before = _case_counts(pg)
        _resend(broker, ingest.log_path, stream)
        _resend(broker, ingest.log_path, stream[2:])  # the clears alone too
    finally:
        ingest.stop()
    rows = pg.query("SELECT code, state, closed_by, duration_s, target FROM cases ORDER BY code")
    assert rows == [("alarm_column", "reported", None, 4.0, "sos-east"),
                    ("obstruction", "archived", "system", 780.0, "fire-lane-1")]
    assert _case_counts(pg) == before, "a replayed alarm opened or moved a case"
    with connect(pg.dsn) as conn:
        assert verify(conn).ok


@pytest.mark.slow
def test_watch_list_from_the_platform_to_a_case_closed_by_an_officer(tmp_path: Path, pg: Database,
                                                                     broker: Broker) -> None:
    RAW_IDENTIFIERS.add(CARD.hex().upper())
    pair = free_pair()
    gw_cfg = watch_list_gateway(tmp_path, pair.a, broker)
    data = tmp_path / "data"
    root = data / "district.key"  # the district root the gateway's epoch keys were issued from
    seed = tmp_path / "watchlist-signing.key"
    seed.write_text(load_key_file(data / "data.key", purpose="test").hex())  # any 32 secret bytes
    seed.chmod(0o600)
    cfg = district_config(tmp_path, search={"key_file": str(root)}, watchlist={"district": "d1",
                          "signing_key": str(seed)}, mqtt={"host": broker.host, "port": broker.port})
    pub = _district(cfg, pg, "watchlist", "public-key")
    assert pub.returncode == 0, pub.stderr
    (data / "platform.pub").write_text(pub.stdout.strip())
    built = _district(cfg, pg, "watchlist", "build", "--list-id", "wl-7", "--case", "C-2026-117", "--approver",
                      "officer.li", "--expires", "+2d", "--stdin", "--push", stdin=f"card {CARD.hex()}\n")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["state"] == "pushed"

    ingest = worker(cfg, pg, broker.port, tmp_path, client_id="cases-w1")
    logs = [tmp_path / "uplink.log", tmp_path / "capture.log", ingest.log_path]
    procs = [gateway_daemon(gw_cfg, sub, log=tmp_path / f"{sub}.log") for sub in ("uplink", "capture")]
    api: _Api | None = None
    try:
        def in_force() -> bool:
            rows = pg.query("SELECT body FROM gateway_status WHERE gateway = 'g1' ORDER BY received_at DESC LIMIT 1")
            body: dict[str, Any] = rows[0][0] if rows and isinstance(rows[0][0], dict) else {}
            ports = body.get("components", {}).get("capture", {}).get("ports", {})
            return "wl-7" in body.get("watchlists", {}).get("lists", {}) and bool(
                (ports.get("gate1-card") or {}).get("connected"))
        # The gateway's own status, stored by the platform's worker, says the list is in force.
        assert wait_until(in_force, 150, 0.2), "the list never showed in force at g1" + _tails(*logs)
        deadline = time.monotonic() + 45
        while pg.scalar("SELECT count(*) FROM cases WHERE code = 'watch_hit'") == 0 and time.monotonic() < deadline:
            _swipe(pair.b)  # capture reloads the uplink's state file on its tick: swipe until the hit arrives
            # 3 s between swipes: the reader's 2 s debounce slides, so closer swipes are one swipe.
            wait_until(lambda: pg.scalar("SELECT count(*) FROM cases WHERE code = 'watch_hit'") > 0, 3.0, 0.1)
        cases = pg.query("SELECT case_id, state, list_id, list_version, police_case, id_kind, links, gateway "
                         "FROM cases WHERE code = 'watch_hit' ORDER BY opened_at")
        assert cases, "no watch_hit case was opened" + _tails(*logs)
        case_id, state, list_id, version, police_case, id_kind, links, gateway = cases[0]
        assert (state, list_id, version, police_case, id_kind, gateway) == (
            "reported", "wl-7", 1, "C-2026-117", "card", "g1")
        # The case links the very swipe, stored by the worker with the card's pseudonym for this epoch.
        assert isinstance(links, list) and len(links) == 1
        assert wait_until(lambda: pg.scalar("SELECT count(*) FROM events WHERE event_id = %s", (links[0],)) == 1, 20)
        swipe = pg.query("SELECT kind, subject_pseudonym FROM events WHERE event_id = %s", (links[0],))[0]
        assert swipe == ("card_swipe", Pseudonymiser(load_key_file(root, purpose="test")).pseudonym_at(
            IdKind.CARD, CARD.hex(), time.time())[0])
        cid = str(case_id)
        api = _Api(pg, root)
        who = {"Authorization": f"Bearer {OFFICER}"}
        with httpx.Client(base_url=api.url, timeout=10) as http:
            claimed = http.post(f"/v1/cases/{cid}/claim", json={"officer": "0042", "note": "C-2026-117"}, headers=who)
            assert claimed.status_code == 200 and claimed.json()["state"] == "accepted", claimed.text
            assert http.post(f"/v1/cases/{cid}/claim", json={"officer": "0042"}, headers=who).status_code == 409
            sent = _district(cfg, pg, "cases", "dispatch", cid, "--officer", "0042", "--unit", "pcs-east-gate",
                             "--case-note", "check the east gate")
            assert sent.returncode == 0 and "dispatched (分拨)" in sent.stdout, sent.stderr
            closed = http.post(f"/v1/cases/{cid}/close", json={"officer": "0042", "note": "subject identified "
                               "at the gate; sealed details requested with C-2026-117"}, headers=who)
            assert closed.status_code == 200 and closed.json()["state"] == "archived", closed.text
            export = http.get("/v1/cases/export", params={"since": 0}, headers=who).json()
        mine = [c for c in export["cases"] if c["case_id"] == cid]
        assert len(mine) == 1 and mine[0]["police_case"] == "C-2026-117" and mine[0]["unit"] == "pcs-east-gate"
        assert [(h["actor"], h["to_state"]) for h in mine[0]["history"]] == [
            ("gateway:d1/c1/g1/gate1-card", "discovered"), ("system", "reported"), ("0042", "accepted"),
            ("0042", "dispatched"), ("0042", "feedback"), ("0042", "archived")]

        # The gateway's whole alarm stream again, as a gateway resending its backlog: no second case.
        before = _case_counts(pg)
        alarms = [("edgegw/d1/c1/g1/events/alarm", payload(json.loads(str(t))))
                  for (t,) in pg.query("SELECT payload::text FROM events WHERE kind = 'alarm' AND gateway = 'g1'")]
        _resend(broker, ingest.log_path, alarms)
        assert _case_counts(pg) == before, "a replayed alarm opened or moved a case"
    finally:
        if api is not None:
            api.close()
        stop_daemons(procs)
        ingest.stop()
        pair.close()
    with connect(pg.dsn) as conn:
        assert verify(conn).ok
    actions = [str(r[0]) for r in pg.query("SELECT action FROM audit_log ORDER BY seq")]
    assert actions[:2] == ["watchlist_build", "watchlist_push"]
    assert {"case_open", "case_claim", "case_dispatch", "case_close"} <= set(actions)
    everything = "".join(p.read_text(errors="replace") for p in logs)
    assert CARD.hex() not in everything and CARD.hex().upper() not in everything
