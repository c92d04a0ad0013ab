"""District search details end to end: a district search over real PostgreSQL, then the officer asks
the gateway holding the sealed records, with the same case id, over its real MQTT query door (v2: a
real MqttResponder and QueryService on a real mosquitto): signed per officer, sealed to the door key
the platform registered, the encrypted reply opened by the platform, both ends audited; the CLI and
the HTTP API; requests not bound to the case's own search are refused, audited."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from district.api import create_app
from district.config import DatabaseConfig, DoorConfig, IngestConfig, MqttConfig, SearchConfig
from district.db import connect
from district.details import DetailsRequest, DetailsService
from district.doorclient import DoorClient, OfficerKeys
from district.errors import SearchRefusedError
from district.gateways import GatewayName, register
from district.messages import parse
from district.platform_audit import verify
from district.principals import Principal, Principals, Role, write_tokens_file
from district.search import KeyService, Refusal, SearchKind, SearchRequest, SearchService
from district.store import Store
from edge.compat import UTC
from edge.keys import generate_key_file, load_secret
from edge.privacy.identity import GatewayIdentity
from edge.privacy.pseudonym import Pseudonymiser
from edge.query.config import MqttQueryConfig
from edge.query.mqtt_rr import MqttResponder, door_public_key, request_properties
from edge.query.principals import load_principals
from edge.uplink.config import MqttConfig as GatewayMqttConfig
from tests._events import assert_no_raw_identifiers
from tests._mqtt import Collector
from tests._passages import CARDS, MACS, ORIGIN, Clock, Env, card_obs, mac_obs, make_env, plate_obs, shared_plates
from tests.conftest import Broker, free_port
from tests.district.conftest import Database

CASE, OFFICER = "C-2026-17", "0042"
DOOR_KEY = bytes(range(7, 39))
GW = f"{ORIGIN.district}/{ORIGIN.community}/{ORIGIN.gateway}"
POLICE_TOKEN, OTHER_TOKEN = "q" * 40 + "1", "r" * 40 + "2"
WHO = Principal("officer-0042", Role.POLICE, OFFICER)


@dataclass
class Rig:
    tmp: Path
    t0: float
    env: Env
    plates: list[str]
    pg: Database
    broker: Broker
    key_file: Path
    door_seed: Path
    responder: MqttResponder
    collector: Collector | None
    search: SearchService
    details: DetailsService

    def hit(self) -> str:
        """Search the first plate under the case; the one event id it finds."""
        res = self.search.search(WHO, SearchRequest(SearchKind.PLATE, self.plates[0], _dt(self.t0 - 3600),
                                                    _dt(self.t0 + 3600),
                                                    CASE, OFFICER))
        assert [h.gateway for h in res.hits] == [ORIGIN.gateway]
        return res.hits[0].event_id


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _gateway_tokens(path: Path, cfg: Path, officer: str) -> None:
    """The gateway's tokens file, with the entry `edgegw district gateway door-principal` prints."""
    out = subprocess.run([sys.executable, "-m", "district", "gateway", "door-principal", "--officer", officer,
                          "--config", str(cfg)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": "."})
    assert out.returncode == 0, out.stderr
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(out.stdout)


@pytest.fixture
def rig(tmp_path: Path, pg: Database, broker: Broker) -> Iterator[Rig]:
    with _rig(tmp_path, pg, broker) as r:
        yield r


@contextlib.contextmanager
def _rig(tmp_path: Path, pg: Database, broker: Broker, users: dict[str, str] | None = None) -> Iterator[Rig]:
    """The gateway (store, query service, MQTT door) and the platform (database, search, details) on
    `broker`; with `users` (name → password), the gateway logs in as its id, the platform as district-door."""
    users = users or {}
    key_file, door_seed = tmp_path / "district.key", tmp_path / "door.key"
    ps = Pseudonymiser(generate_key_file(key_file, 32))
    generate_key_file(door_seed, 32)
    (tmp_path / "gw").mkdir()
    # Recent events: event ids are UUIDv7 from a per-process monotonic clock, so ids made after any id of
    # today carry today's time; the platform finds events by time and by id day.
    t0 = round(time.time() - 600.0)
    env = make_env(tmp_path / "gw", pseudonymiser=ps, clock=Clock(t0 + 600.0))
    plates = shared_plates(2)
    env.commit([plate_obs("cam-plate-n", t0, plates[0]), card_obs("reader-n", t0 + 1, CARDS[0]),
                mac_obs("sniffer-n", t0 + 2, MACS[0])])
    env.commit([plate_obs("cam-plate-s", t0 + 300, plates[1])])
    env.flush()
    # The gateway's events reach the platform as the ingest stores them.
    store = Store(DatabaseConfig(dsn=pg.dsn), IngestConfig(accept_past_days=3650))
    store.write([parse(r.topic, r.payload) for r in env.outbox.pending(1000)])
    store.close()
    with connect(pg.dsn) as conn:  # provisioning: the gateway's identity and door public keys
        register(conn, GatewayName(ORIGIN.district, ORIGIN.community, ORIGIN.gateway),
                 GatewayIdentity.generate(tmp_path / "gateway.key").public,
                 door_public_key(DOOR_KEY).public_bytes_raw())
    cfg = tmp_path / "district.toml"
    tokens = tmp_path / "district-tokens.toml"
    write_tokens_file(tokens, [("officer-0042", Role.POLICE, OFFICER, POLICE_TOKEN),
                               ("officer-0043", Role.POLICE, "0043", OTHER_TOKEN)])
    login = ""
    if "district-door" in users:
        (tmp_path / "door.pw").write_text(users["district-door"] + "\n")
        login = f'username = "district-door"\npassword_file = "{tmp_path / "door.pw"}"\n'
    cfg.write_text(f'[database]\ndsn = "{pg.dsn}"\n[mqtt]\nport = {broker.port}\n[search]\n'
                   f'key_file = "{key_file}"\ntokens_file = "{tokens}"\n[door]\nsigning_key_file = "{door_seed}"\n'
                   f"timeout_s = 10\n{login}")
    _gateway_tokens(tmp_path / "gw-tokens.toml", cfg, OFFICER)
    gw_user = ORIGIN.gateway if ORIGIN.gateway in users else None
    responder = MqttResponder(env.service, load_principals(tmp_path / "gw-tokens.toml"),
                              GatewayMqttConfig(host=broker.host, port=broker.port, username=gw_user),
                              MqttQueryConfig(enabled=True), ORIGIN, door_key=DOOR_KEY, nonce_db=tmp_path / "nonces.db",
                              password=users.get(ORIGIN.gateway))
    responder.start()
    assert responder.wait_ready()
    collector = Collector(broker.host, broker.port, "#", client_id="details-collector") if not users else None
    search_cfg = SearchConfig(key_file=str(key_file))
    keys = KeyService.from_config(search_cfg)
    door_cfg = DoorConfig(timeout_s=10)
    officers = OfficerKeys(load_secret(door_seed, purpose="test"), "district-police")
    door_user = "district-door" if "district-door" in users else None
    client = DoorClient(MqttConfig(port=broker.port, username=door_user), door_cfg, officers,
                        users.get("district-door"))
    rig = Rig(tmp_path, t0, env, plates, pg, broker, key_file, door_seed, responder, collector,
              SearchService(search_cfg, keys, lambda: connect(pg.dsn)),
              DetailsService(search_cfg, door_cfg, keys, lambda: connect(pg.dsn), client.ask))
    try:
        yield rig
    finally:
        if collector is not None:
            collector.client.disconnect()
            collector.close()
        responder.stop()
        env.close()


def _everything_stored(pg: Database) -> str:
    tables = [r[0] for r in pg.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    return "\n".join(str(pg.query(f'SELECT * FROM "{t}"')) for t in tables)


def test_details_come_from_the_gateway_door_under_the_same_case(rig: Rig) -> None:
    event_id = rig.hit()
    before = len(rig.env.audit.records())
    res = rig.details.details(WHO, DetailsRequest(CASE, OFFICER, rig.plates[0], (event_id,)))
    assert res.kind == "plate" and res.missing == []
    [gw] = res.gateways
    assert gw.gateway == GW and gw.status == "ok", gw
    [hit] = gw.hits
    assert event_id in hit["matched"] and hit["gate"] == "north"
    assert [m["kind"] for m in hit["members"]] == ["plate_passage", "card_swipe", "device_seen"]
    assert all("raw" not in m and m["subject"]["pseudonym"] for m in hit["members"])  # MQTT: pseudonyms only
    # The gateway audited the query under the same case and officer, as the platform's principal.
    [rec] = rig.env.audit.records()[before:]
    details = json.loads(rec.details)
    assert rec.action == "query" and details["case_id"] == CASE and details["officer_id"] == OFFICER
    assert gw.gateway_audit_seq == rec.seq
    # The platform audited the request before sending and the outcome after; its chain verifies.
    rows = rig.pg.query("SELECT seq, action, details FROM audit_log ORDER BY seq")
    assert [r[1] for r in rows] == ["search", "details_request", "details_outcome"]
    request, outcome = json.loads(str(rows[1][2])), json.loads(str(rows[2][2]))
    assert request["case_id"] == CASE and request["event_ids"] == [event_id] and request["gateways"] == [GW]
    assert request["principal"] == f"district-police:{OFFICER}"
    assert outcome["gateways"] == [{"gateway": GW, "status": "ok", "hits": 1, "gateway_audit_seq": rec.seq}]
    with connect(rig.pg.dsn) as conn:
        assert verify(conn).ok
    # Neither the broker nor the platform's tables ever saw the plate, card or MAC.
    assert rig.collector is not None
    payloads = [m.payload for m in rig.collector.messages]
    assert len(payloads) >= 2  # the request and the reply
    assert_no_raw_identifiers(payloads)
    stored = _everything_stored(rig.pg)
    for value in (*rig.plates, *CARDS, *MACS):
        assert value not in stored and all(value.encode() not in p for p in payloads)


def test_details_not_bound_to_the_case_search_are_refused_and_audited(rig: Rig) -> None:
    event_id = rig.hit()
    asks = [(WHO, DetailsRequest("C-2026-99", OFFICER, rig.plates[0], (event_id,)), Refusal.FORBIDDEN),  # no search
            (WHO, DetailsRequest(CASE, OFFICER, rig.plates[1], (event_id,)), Refusal.FORBIDDEN),  # another value
            (WHO, DetailsRequest(CASE, OFFICER, rig.plates[0], ("0190d7a5-0000-7000-8000-000000000000",)),
             Refusal.INVALID),  # not stored here
            (WHO, DetailsRequest(CASE, "0043", rig.plates[0], (event_id,)), Refusal.FORBIDDEN),  # bound token
            (Principal("auditor", Role.AUDITOR), DetailsRequest(CASE, OFFICER, rig.plates[0], (event_id,)),
             Refusal.FORBIDDEN),
            (WHO, DetailsRequest("", OFFICER, rig.plates[0], (event_id,)), Refusal.MISSING_CASE_ID)]
    before = rig.responder.answered
    for who, req, reason in asks:
        with pytest.raises(SearchRefusedError) as err:
            rig.details.details(who, req)
        assert err.value.reason == reason, (req, err.value)
    assert rig.responder.answered == before  # nothing was sent to the gateway
    actions = [r[0] for r in rig.pg.query("SELECT action FROM audit_log ORDER BY seq")]
    assert actions == ["search"] + ["details_refused"] * len(asks)


def test_a_gateway_that_does_not_know_the_officer_does_not_answer(rig: Rig) -> None:
    event_id = rig.hit()
    other = Principal("officer-0043", Role.POLICE, "0043")  # not in the gateway's tokens file
    res = rig.details.details(other, DetailsRequest(CASE, "0043", rig.plates[0], (event_id,)))
    assert [(g.status, g.hits) for g in res.gateways] == [("unauthenticated", [])]
    assert res.missing == [event_id]
    outcome = json.loads(str(rig.pg.scalar("SELECT details FROM audit_log WHERE action = 'details_outcome'")))
    assert outcome["gateways"][0]["status"] == "unauthenticated"


def _cli_details(rig: Rig, event_id: str) -> subprocess.CompletedProcess[str]:
    (rig.tmp / "my.token").write_text(POLICE_TOKEN + "\n")
    return subprocess.run([sys.executable, "-m", "district", "search", "details", event_id, "--case", CASE,
                           "--officer", OFFICER, "--token-file", str(rig.tmp / "my.token"), "--config",
                           str(rig.tmp / "district.toml"), "--json"], input=rig.plates[0] + "\n",
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": "."})


def test_cli_and_http_api_ask_the_door(rig: Rig) -> None:
    event_id = rig.hit()
    out = _cli_details(rig, event_id)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["missing"] == [] and body["gateways"][0]["status"] == "ok"
    assert event_id in body["gateways"][0]["hits"][0]["matched"]
    assert rig.plates[0] not in out.stdout + out.stderr

    port = free_port()
    principals = Principals({POLICE_TOKEN: WHO})
    server = uvicorn.Server(uvicorn.Config(create_app(rig.search, principals, rig.details), host="127.0.0.1",
                                           port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            assert "/v1/search/details" in http.get("/openapi.json").json()["paths"]
            req = {"case_id": CASE, "officer": OFFICER, "value": rig.plates[0], "event_ids": [event_id]}
            assert http.post("/v1/search/details", json=req).status_code == 401
            ok = http.post("/v1/search/details", json=req, headers={"Authorization": f"Bearer {POLICE_TOKEN}"})
            assert ok.status_code == 200, ok.text
            assert ok.json()["gateways"][0]["status"] == "ok" and ok.json()["missing"] == []
            bad = http.post("/v1/search/details", json={**req, "case_id": "C-other"},
                            headers={"Authorization": f"Bearer {POLICE_TOKEN}"})
            assert bad.status_code == 403 and bad.json()["reason"] == "forbidden"
    finally:
        server.should_exit = True
        t.join(10)
    actions = [r[0] for r in rig.pg.query("SELECT action FROM audit_log ORDER BY seq")]
    assert actions == ["search", "details_request", "details_outcome", "details_request", "details_outcome",
                       "details_refused"]




def test_details_work_through_the_district_broker_acl(tmp_path: Path, pg: Database) -> None:
    """docs/district-mosquitto.acl, verbatim: the platform's door client and the gateway (logged in as
    its id) reach each other; a gateway cannot send requests to another gateway."""
    port = free_port()
    users = {ORIGIN.gateway: "pw-gw01", "district-door": "pw-door", "gw02": "pw-gw02"}
    passwd = tmp_path / "passwd"
    for i, (name, pw) in enumerate(users.items()):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwd), name, pw], check=True)
    acl = tmp_path / "acl"
    acl.write_text((Path(__file__).resolve().parents[2] / "docs" / "district-mosquitto.acl").read_text())
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
                    f"acl_file {acl}\npersistence false\nuser {getpass.getuser()}\n")
    b = Broker("127.0.0.1", port, conf)
    b.start()
    try:
        with _rig(tmp_path, pg, b, users) as rig:
            event_id = rig.hit()
            res = rig.details.details(WHO, DetailsRequest(CASE, OFFICER, rig.plates[0], (event_id,)))
            assert [g.status for g in res.gateways] == ["ok"] and res.missing == []
            out = _cli_details(rig, event_id)  # the CLI logs in as [door].username
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["gateways"][0]["status"] == "ok"
            # gw02 publishes a request (it holds no signing key, but try) on gw01's request topic: refused
            # by the broker, so gw01's door never sees it.
            answered, rejected = rig.responder.answered, rig.responder.rejected
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw02", protocol=mqtt.MQTTv5)
            c.username_pw_set("gw02", "pw-gw02")
            c.connect("127.0.0.1", port)
            c.loop_start()
            try:
                reply_to = f"edgegw/{ORIGIN.district}/query/reply/x1"
                info = c.publish(f"edgegw/{ORIGIN.district}/{ORIGIN.community}/{ORIGIN.gateway}/query/request",
                                 b"{}", qos=1, properties=request_properties(reply_to, b"c"))
                info.wait_for_publish(5)
                time.sleep(1.0)
            finally:
                c.disconnect()
                c.loop_stop()
            assert (rig.responder.answered, rig.responder.rejected) == (answered, rejected)
    finally:
        b.stop()
