"""`edgegw query ...` and `edgegw passages purge|status` against a real config, keys, store and audit log."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.app.config import Config, load_config
from edge.app.wiring import build_passage_observers, data_key, open_audit
from edge.audit import AuditLog, audit_status
from edge.cli import main
from edge.keys import generate_key_file, load_key_file
from edge.passages.fusion import PassageFusion
from edge.passages.store import PassageStore
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Event, EventKind, Observation, Origin
from tests._passages import (
    CARDS,
    INSTALLER,
    MACS,
    POLICE,
    card_obs,
    face_obs,
    mac_obs,
    plate_obs,
    shared_plates,
    write_tokens,
)
from tests.conftest import provision

DAY = 86400.0


@dataclass
class Gateway:
    config: Path
    data: Path
    cfg: Config
    tokens: dict[str, str]

    def token_file(self, name: str) -> Path:
        path = self.data.parent / f"{name}.token"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, (self.tokens[name] + "\n").encode())
            os.close(fd)
        return path

    def commit(self, observations: list[Observation], *, at: float) -> list[Event]:
        """Record observations as the capture daemon would (store + fusion), with the clock at `at`."""
        audit = open_audit(self.cfg)
        store, fusion = build_passage_observers(self.cfg, data_key(self.cfg), audit, clock=lambda: at)
        assert isinstance(store, PassageStore) and isinstance(fusion, PassageFusion)
        # Capture at time `at` held that epoch's key; derive it from the stand-in district root.
        root = load_key_file(self.data / "district.key", purpose="district root")
        boundary = PrivacyBoundary(Pseudonymiser(root, self.cfg.privacy.epoch, community="c0001"),
                                   Origin("dl-district", "c0001", "gw01"))
        try:
            events = [boundary.to_event(o) for o in observations]
            pairs = list(zip(observations, events, strict=True))
            store.committed(pairs)
            fusion.committed(pairs)
            for derived in fusion.tick(float("inf")):
                passage = boundary.to_event(derived.observation, links=derived.links)
                store.committed([(derived.observation, passage)])
                events.append(passage)
            return events
        finally:
            store.close()
            audit.close()


def make_gateway(tmp_path: Path, models_dir: Path | None = None) -> Gateway:
    data = tmp_path / "data"
    data.mkdir()
    generate_key_file(data / "data.key")
    generate_key_file(data / "query-door.key")
    tokens = write_tokens(data / "query-tokens.toml")
    text = ('[gateway]\ndistrict = "dl-district"\ncommunity = "c0001"\ngateway = "gw01"\ndata_dir = "data"\n'
            '\n[passages]\nmin_members = 1\n\n')
    if models_dir is not None:
        text += f'[models]\ndir = "{models_dir}"\n'
    config = tmp_path / "edgegw.toml"
    config.write_text(text)
    provision(config, data / "district.key")
    return Gateway(config, data, load_config(config), tokens)


def _query(gw: Gateway, who: str, *args: str) -> int:
    return main(["query", *args, "--config", str(gw.config), "--token-file", str(gw.token_file(who))])


def test_officer_queries_a_plate_from_the_gateway_shell(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    gw = make_gateway(tmp_path)
    plates = shared_plates(2)
    now = time.time()
    events = gw.commit([plate_obs("cam1", now - 3600, plates[0]), card_obs("reader1", now - 3599, CARDS[0]),
                        mac_obs("sniffer1", now - 3598, MACS[0])], at=now)
    gw.commit([plate_obs("cam1", now - 600, plates[1])], at=now)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 2 * 3600))

    assert _query(gw, POLICE.name, "plate", plates[0], "--from", since, "--case", "C-2026-17", "--officer", "0042") == 0
    out = capsys.readouterr().out
    assert "1 passage(s)" in out and plates[0] in out and CARDS[0] in out and MACS[0] in out
    assert events[-1].event_id in out  # the passage
    assert "gate gate" in out and "shown: raw" in out

    # The value can come from standard input, so it stays out of the shell history.
    monkeypatch.setattr("sys.stdin", io.StringIO(CARDS[0] + "\n"))
    assert _query(gw, POLICE.name, "card", "-", "--from", since, "--case", "C-2026-17", "--json") == 0
    body = json.loads(capsys.readouterr().out)
    assert body["officer_id"] == "0042" and body["hits"][0]["members"][1]["raw"] == CARDS[0]

    # Without a case ID: refused, with a clear message, exit 3, and audited.
    assert _query(gw, POLICE.name, "mac", MACS[0], "--from", since, "--officer", "0042") == 3
    err = capsys.readouterr().err
    assert "refused (missing_case_id)" in err and "case ID" in err
    # The installer may not look up identifiers, but may check that passages are recorded.
    assert _query(gw, INSTALLER.name, "plate", plates[0], "--from", since, "--case", "COMM-1", "--officer",
                  "inst-7") == 3
    assert "refused (forbidden)" in capsys.readouterr().err
    assert _query(gw, INSTALLER.name, "range", "--from", since, "--case", "COMM-1", "--officer", "inst-7") == 0
    out = capsys.readouterr().out
    assert "2 passage(s)" in out and "shown: metadata" in out
    assert plates[0] not in out and CARDS[0] not in out and "pseudonym" not in out
    for e in events[:3]:
        assert e.subject is not None and e.subject.pseudonym not in out

    with AuditLog(gw.data / "audit.db", create=False) as audit:
        actions = [r.action for r in audit.records()]
        assert actions == ["query", "query", "query_refused", "query_refused", "query"]
        head = audit_status(audit)["audit_head"]
        assert head["seq"] == 5 and len(str(head["hash"])) == 64
    raw_audit = (gw.data / "audit.db").read_bytes()
    assert plates[0].encode() not in raw_audit and CARDS[0].encode() not in raw_audit
    assert main(["audit", "verify", "--db", str(gw.data / "audit.db")]) == 0
    db = sqlite3.connect(gw.data / "audit.db")
    db.executescript("DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'police:someone-else' WHERE seq = 1;")
    db.close()
    assert main(["audit", "verify", "--db", str(gw.data / "audit.db")]) == 1
    assert "TAMPERED at record 1 (edited)" in capsys.readouterr().err


def test_an_unknown_token_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gw = make_gateway(tmp_path)
    gw.tokens["stranger"] = os.urandom(32).hex()
    assert _query(gw, "stranger", "range", "--from", "0", "--case", "C-1", "--officer", "x") == 3
    assert "not known" in capsys.readouterr().err


def test_purge_shreds_expired_plates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gw = make_gateway(tmp_path)
    # The record below is older than the 30-day window its epoch key is issued for; a longer window
    # keeps the key so the query before the purge can find it.
    provision(gw.config, gw.data / "district.key", window_days=90)
    plate = shared_plates(1)[0]
    old = time.time() - 40 * DAY
    gw.commit([plate_obs("cam1", old, plate)], at=old)
    label = "plates." + time.strftime("%Y-%m-%d", time.gmtime(old))
    since = str(old - DAY)
    assert _query(gw, POLICE.name, "plate", plate, "--from", since, "--to", str(old + DAY), "--case", "C-1") == 0
    assert "1 passage(s)" in capsys.readouterr().out

    assert main(["passages", "purge", "--config", str(gw.config)]) == 0
    out = capsys.readouterr().out
    assert "purged 2 record(s)" in out and f"destroyed {label}" in out
    assert _query(gw, POLICE.name, "plate", plate, "--from", since, "--to", str(old + DAY), "--case", "C-1") == 0
    assert "0 passage(s)" in capsys.readouterr().out
    assert main(["passages", "status", "--config", str(gw.config)]) == 0
    out = capsys.readouterr().out
    assert "records 0" in out and f"destroyed epoch keys (1): {label}" in out
    with AuditLog(gw.data / "audit.db", create=False) as audit:
        purge = [r for r in audit.records() if r.action == "purge"]
        assert len(purge) == 1 and purge[0].actor.startswith("cli:")
        assert json.loads(purge[0].details)["keys_destroyed"][0]["epoch"] == label


@pytest.mark.models
def test_photo_query_from_the_cli_on_real_faces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests._models import SHARED_DATA, analyzer, image, models_dir

    gw = make_gateway(tmp_path, models_dir())
    fa = analyzer()
    now = time.time()
    faces = []
    for i, rel in enumerate(("faces/face_recognition/obama/obama.jpg", "faces/face_recognition/biden/biden.jpg")):
        sample = fa.largest_face_embedding(image(rel))
        assert sample is not None
        faces.append(face_obs("cam1", now - 600 + 60 * i, sample.embedding))
    obama, biden, *passages = gw.commit(faces, at=now)
    assert len(passages) == 2
    assert obama.kind is EventKind.FACE_PASSAGE and biden.kind is EventKind.FACE_PASSAGE
    photo = SHARED_DATA / "faces/face_recognition/obama/obama2.jpg"
    assert _query(gw, POLICE.name, "photo", str(photo), "--from", str(now - 3600), "--case", "C-7", "--json") == 0
    body = json.loads(capsys.readouterr().out)
    assert [h["matched"] for h in body["hits"]] == [[obama.event_id]]
    assert body["hits"][0]["score"] >= 0.363


def test_serve_runs_both_front_doors_over_one_service(tmp_path: Path, broker: object,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import urllib.request

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.app.query import serve
    from edge.keys import load_key_file
    from edge.query.config import HttpConfig, MqttQueryConfig
    from edge.query.mqtt_rr import door_public_key, open_reply, request_properties, seal_request
    from tests._mqtt import Collector
    from tests._passages import SIGNING_KEYS

    gw = make_gateway(tmp_path)
    host, port = broker.host, broker.port  # type: ignore[attr-defined]
    gw.config.write_text(gw.config.read_text() + f'[mqtt]\nhost = "{host}"\nport = {port}\n')
    cfg = load_config(gw.config)
    cfg = cfg.model_copy(update={"query": cfg.query.model_copy(
        update={"http": HttpConfig(port=0), "mqtt": MqttQueryConfig(enabled=True)})})
    plate = shared_plates(1)[0]
    now = time.time()
    gw.commit([plate_obs("cam1", now - 60, plate)], at=now)

    ready = threading.Event()
    doors: list[object] = []
    stop = threading.Event()

    def on_ready(http: object, responder: object) -> None:
        doors.extend([http, responder])
        ready.set()

    thread = threading.Thread(target=serve, args=(cfg, stop, on_ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(20)
        http, responder = doors
        assert responder.wait_ready()  # type: ignore[attr-defined]
        body = json.dumps({"case_id": "C-5", "from": now - 3600, "to": now, "value": plate}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{http.port}/v1/query/plate", data=body, method="POST",  # type: ignore[attr-defined]
                                     headers={"Authorization": f"Bearer {gw.tokens[POLICE.name]}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["hits"][0]["members"][0]["raw"] == plate

        collector = Collector(host, port, "edgegw/dl-district/query/reply/#", client_id="serve-test-collector")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="serve-test-platform", protocol=mqtt.MQTTv5)
        client.connect(host, port)
        client.loop_start()
        try:
            corr = b"corr-1"
            reply_topic = "edgegw/dl-district/query/reply/p1"
            door = door_public_key(load_key_file(gw.data / "query-door.key", purpose="door"))
            pending = seal_request(POLICE.name, SIGNING_KEYS[POLICE.name],
                                   {"kind": "plate", "case_id": "C-5", "from": now - 3600,
                                    "to": now, "value": plate}, reply_topic, corr,
                                   gateways={"dl-district/c0001/gw01": door})
            client.publish("edgegw/dl-district/query/request", pending.payload, qos=1,
                           properties=request_properties(reply_topic, corr)).wait_for_publish(5)
            deadline = time.monotonic() + 10
            while not collector.messages and time.monotonic() < deadline:
                time.sleep(0.05)
            reply = open_reply(pending, collector.messages[0].payload, reply_topic, corr)
            assert reply["status"] == "ok" and len(reply["result"]["hits"]) == 1
            assert plate not in collector.messages[0].payload.decode()
        finally:
            client.disconnect()
            client.loop_stop()
            collector.client.disconnect()
            collector.close()
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()
    with AuditLog(gw.data / "audit.db", create=False) as audit:
        assert [json.loads(r.details)["channel"] for r in audit.records()] == ["http", "mqtt"]


def test_door_key_prints_what_the_district_encrypts_requests_to(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from edge.keys import load_key_file
    from edge.query.mqtt_rr import door_public_key

    gw = make_gateway(tmp_path)
    assert main(["query", "door-key", "--config", str(gw.config)]) == 0
    who, public = capsys.readouterr().out.split()
    assert who == "dl-district/c0001/gw01"
    door = door_public_key(load_key_file(gw.data / "query-door.key", purpose="door"))
    assert bytes.fromhex(public) == door.public_bytes_raw()
