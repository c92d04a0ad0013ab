"""Issue 14 through the real daemons: wired inputs, watch-lists and camera zones, process to subscriber.

Everything is real: `edgegw run` / `edgegw capture` + `edgegw uplink` as processes on a config file,
pymodbus' own server playing an RS-485 input module on a pty pair, an RDM6300 card reader on a pty,
a mosquitto of the test's own, Ed25519-signed lists published retained, a camera file assembled
from the real videos in ../shared/data. The platform's side is a plain MQTT subscriber.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.publish as publish
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from drivers.serial.rdm6300 import encode
from edge.audit import AuditLog
from edge.keys import load_key_file
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import IdKind
from edge.watchlist import build_watchlist, pseudonym_entries, watchlist_topic
from tests._clips import PEOPLE, PEOPLE_ZONE, Clip
from tests._gateway import gateway_daemon, stop_daemons, uplink_to, watch_list_gateway
from tests._modbus_sim import ModuleSim
from tests._mqtt import RAW_IDENTIFIERS, Collector, Received
from tests._ptypair import free_pair
from tests.conftest import ROOT, Broker, new_gateway

CARD = bytes.fromhex("5C1D2E3F40")


def _write_tty(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _wait(what: Callable[[], Any], timeout: float, message: str, *logs: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    tails = "".join(f"\n--- {p.name}:\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())
    raise AssertionError(message + tails)


def _statuses(col: Collector) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in list(col.messages) if m.topic.endswith("/status") and m.payload[:1] == b"{"]


def _alarms(col: Collector, code: str) -> list[dict[str, Any]]:
    return [e for m in col.events() if m.topic.endswith("/events/alarm") and (e := m.json())["attrs"]["code"] == code]


# -- wired inputs ---------------------------------------------------------------------------------
def test_sos_press_on_a_modbus_module_reaches_the_platform_through_edgegw_run(tmp_path: Path,
                                                                               broker: Broker) -> None:
    pair = free_pair()
    sim = ModuleSim(pair.b).start()
    sim.closed[1] = True  # the guardroom door is shut
    cfg = new_gateway(tmp_path, f"""
[[inputs]]
kind = "modbus_rtu"
id = "io-gate1"
port = "{pair.a}"
baud = 115200
poll_interval_s = 0.02
inputs = [
  {{ id = "sos-east", channel = 0, meaning = "alarm_column" }},
  {{ id = "door-guardroom", channel = 1, meaning = "door_contact", contact = "nc" }},
]
""" + uplink_to(broker))
    col = Collector(broker.host, broker.port, "edgegw/#", client_id="sos-platform")
    run = gateway_daemon(cfg, "run", log=tmp_path / "run.log")
    try:
        # The module is read: its inputs show in the capture status the uplink publishes.
        def module_seen() -> bool:
            return any((s.get("components", {}).get("capture", {}).get("inputs", {}).get("io-gate1") or {})
                       .get("scans", 0) > 0 for s in _statuses(col))
        log = tmp_path / "run.log"
        # Generous: on a loaded shared machine two daemons may take a while to start.
        _wait(module_seen, 120, "the capture daemon never reported the input module in its status", log)
        sim.closed[0] = True  # SOS pressed
        _wait(lambda: _alarms(col, "alarm_column"), 30, "no alarm_column event reached the subscriber", log)
        sim.closed[0] = False  # released
        _wait(lambda: len(_alarms(col, "alarm_column")) >= 2, 30, "the release never reached the subscriber", log)
    finally:
        stop_daemons([run])
        sim.stop()
        pair.close()
        col.close()
    sos = _alarms(col, "alarm_column")
    assert [a["attrs"]["state"] for a in sos] == ["raised", "cleared"], (tmp_path / "run.log").read_text()[-3000:]
    assert all(a["source"] == "io-gate1" and a["attrs"]["input"] == "sos-east" and "subject" not in a for a in sos)
    assert sos[0]["attrs"]["severity"] == "critical" and sos[1]["attrs"]["duration_s"] >= 0
    assert not _alarms(col, "door_contact")  # the shut door raised nothing
    assert run.returncode == 0


# -- watch-lists ----------------------------------------------------------------------------------
def _card_list(district_key: bytes, signing: Ed25519PrivateKey, list_id: str, **kw: Any) -> bytes:
    now = int(time.time())
    entries = pseudonym_entries(Pseudonymiser(district_key), IdKind.CARD, [CARD.hex()], now)
    return build_watchlist(signing_key=signing, district="d1", list_id=list_id, version=kw.get("version", 1),
                           case_id="C-2026-117", approver="officer.li", issued_at=now - 60,
                           expires_at=now + 3600, entries=entries)


def test_a_signed_watch_list_reaches_the_uplink_and_a_card_on_it_raises_a_watch_hit(tmp_path: Path,
                                                                                    broker: Broker) -> None:
    RAW_IDENTIFIERS.add(CARD.hex().upper())
    pair = free_pair()  # the reader's end is `a`; the test writes frames into `b`
    cfg = watch_list_gateway(tmp_path, pair.a, broker)
    data = tmp_path / "data"
    signing = Ed25519PrivateKey.generate()
    (data / "platform.pub").write_text(signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex())
    district_key = load_key_file(data / "district.key", purpose="test")
    good = _card_list(district_key, signing, "wl-1")
    forged = json.loads(_card_list(district_key, signing, "wl-2"))
    forged["case_id"] = "C-2026-999"  # edited after signing: the signature no longer covers it
    # Published retained before the gateway is up: the uplink gets both when it subscribes.
    for list_id, payload in (("wl-1", good), ("wl-2", json.dumps(forged).encode())):
        publish.single(watchlist_topic("d1", list_id), payload, qos=1, retain=True,
                       hostname=broker.host, port=broker.port)
    col = Collector(broker.host, broker.port, "edgegw/d1/c1/#", client_id="watch-platform")
    procs = [gateway_daemon(cfg, sub, log=tmp_path / f"{sub}.log") for sub in ("uplink", "capture")]
    try:
        def lists_in_status() -> bool:
            return any(set(s.get("watchlists", {}).get("lists", {})) == {"wl-1"}
                       and s["watchlists"]["refused"] == {"bad_signature": 1} for s in _statuses(col))
        logs = (tmp_path / "uplink.log", tmp_path / "capture.log")
        _wait(lists_in_status, 120, "the retained status never showed wl-1 in force and the forgery refused", *logs)
        assert (data / "watchlists.json").stat().st_mode & 0o777 == 0o600

        def port_open() -> bool:
            return any((s.get("components", {}).get("capture", {}).get("ports", {}).get("gate1-card") or {})
                       .get("connected") for s in _statuses(col))
        _wait(port_open, 120, "the capture daemon never opened the card reader", *logs)
        # Capture reloads the uplink's state file on its tick; a swipe right after acceptance may
        # come before that, so swipe until the hit arrives. Swipes 3 s apart: the reader's debounce
        # (card_debounce_s, 2 s) slides while the same card keeps coming, so swipes 1.5 s apart were
        # all one swipe, and a first one before the list was loaded left nothing to match.
        deadline = time.monotonic() + 45
        while not _alarms(col, "watch_hit") and time.monotonic() < deadline:
            _write_tty(pair.b, encode(CARD))
            time.sleep(3.0)
        _wait(lambda: _alarms(col, "watch_hit"), 5, "no watch_hit alarm reached the subscriber", *logs)
    finally:
        stop_daemons(procs)
        col.close()
        pair.close()
    logs = "".join((tmp_path / f"{s}.log").read_text() for s in ("uplink", "capture"))
    hit = _alarms(col, "watch_hit")[0]
    swipes = {m.json()["event_id"]: m.json() for m in col.events() if m.topic.endswith("/events/card_swipe")}
    assert hit["links"] and hit["links"][0] in swipes, (hit, list(swipes))
    assert hit["attrs"] | {"message": ""} == {"code": "watch_hit", "message": "", "severity": "critical",
                                              "id_kind": "card", "list_id": "wl-1", "list_version": 1,
                                              "case_id": "C-2026-117"}
    assert "subject" not in hit  # the linked swipe carries the pseudonym
    swipe = swipes[hit["links"][0]]
    assert swipe["subject"]["pseudonym"] == Pseudonymiser(district_key).pseudonym_at(
        IdKind.CARD, CARD.hex(), time.time())[0]
    assert CARD.hex().upper() not in logs and CARD.hex() not in logs
    # Capture audits the list it started matching and the hit; the uplink (outbox only) audits nothing.
    with AuditLog(data / "audit.db", create=False) as audit:
        records = [r for r in audit.records() if r.actor == "watchlist"]
        assert audit.verify().ok
    assert [r.action for r in records][:1] == ["watchlist_in_force"], records
    assert json.loads(records[0].details)["case_id"] == "C-2026-117"
    assert "watch_hit" in [r.action for r in records]
    assert "watchlist_refused" not in [r.action for r in records]


# -- camera zones ---------------------------------------------------------------------------------
def _write_clip(folder: Path, clip: Clip) -> int:
    folder.mkdir()
    n = 0
    for i, frame in enumerate(clip.frames()):
        cv2.imwrite(str(folder / f"{i:05d}.png"), frame.image)
        n += 1
    return n


def test_a_zone_camera_on_a_clip_raises_and_clears_an_obstruction_through_the_daemons(tmp_path: Path,
                                                                                       broker: Broker) -> None:
    # 2.5 minutes of camera time at 2 frames a second, played as fast as the pipeline takes them: a
    # real photo stands in the lane from 20 s to 90 s; the zone raises after 20 s, clears after 8 s.
    frames = _write_clip(tmp_path / "lane", Clip(PEOPLE, 150, obj_on=20, obj_off=90))
    polygon = ", ".join(f"[{x}, {y}]" for x, y in PEOPLE_ZONE)
    cfg = new_gateway(tmp_path, f"""
[face]
enabled = false

[[cameras]]
id = "lane-b3"
kind = "file"
path = "{tmp_path / 'lane'}"
pace = "fast"
fps = 2

[[zones.zone]]
id = "fire-lane-b3"
camera = "lane-b3"
rule = "obstruction"
polygon = [{polygon}]
raise_after_s = 20
clear_after_s = 8

[mqtt]
host = "{broker.host}"
port = {broker.port}
""")
    col = Collector(broker.host, broker.port, "edgegw/d1/c1/#", client_id="zone-platform")
    try:
        proc = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg), "--exit-when-done"],
                              cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got: list[Received] = col.wait_for(2, timeout=10)
    finally:
        col.close()
    alarms = [m.json() for m in got if m.topic.endswith("/events/alarm")]
    assert [(a["attrs"]["code"], a["attrs"]["state"]) for a in alarms] == [
        ("obstruction", "raised"), ("obstruction", "cleared")], alarms
    raised, cleared = alarms
    assert raised["source"] == "lane-b3" and raised["attrs"]["zone"] == "fire-lane-b3"
    assert raised["attrs"]["covered"] >= 0.3 and "subject" not in raised
    assert raised["ts"] < cleared["ts"] and cleared["attrs"]["duration_s"] > 0
    assert frames == 300
    assert (tmp_path / "data" / "capture" / "zones-lane-b3.npy").exists()  # kept for the next start
