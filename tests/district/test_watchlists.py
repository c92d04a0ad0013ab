"""Watch-lists built, signed, pushed and revoked by the platform, received by the gateway's own components
over a real mosquitto: versions bump on re-push, raw values are never stored, every step is audited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from district.config import MqttConfig
from district.db import connect
from district.keyservice import KeyService
from district.platform_audit import verify
from district.watchlists import MqttPublisher, WatchlistDesk, WatchlistError, public_hex, signing_key
from edge.app.watchlists import WatchlistReceiver
from edge.keys import load_key_file
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Event, EventKind, IdKind, Observation, Origin, RawIdentifier
from edge.watchlist import WatchlistStore, load_public_key
from tests._mqtt import RAW_IDENTIFIERS, Collector
from tests.conftest import ROOT, Broker
from tests.district.conftest import Database, district_config

PLATE, CARD, MAC = "辽B·D12345", "0012345678", "3c:22:fb:11:22:33"
RAW_IDENTIFIERS.update({PLATE, CARD})


def _seed_file(tmp_path: Path) -> Path:
    p = tmp_path / "watchlist-signing.key"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    return p


def _desk(pg: Database, key_file: Path, seed: Path, broker: Broker) -> WatchlistDesk:
    keys = KeyService(load_key_file(key_file, purpose="test"))
    return WatchlistDesk(lambda: connect(pg.dsn), keys, signing_key(load_key_file(seed, purpose="test")), "d1",
                         MqttPublisher(MqttConfig(host=broker.host, port=broker.port)))


def _event(root: bytes, kind: IdKind, value: str) -> Event:
    ek = {IdKind.PLATE: EventKind.PLATE_PASSAGE, IdKind.CARD: EventKind.CARD_SWIPE}[kind]
    attrs: dict[str, object] = ({"confidence": 0.9, "colour": "blue", "plate_type": "blue", "local": True,
                                 "frames": 3, "duration_s": 1.0} if kind is IdKind.PLATE else {"format": "rdm6300"})
    boundary = PrivacyBoundary(Pseudonymiser(root), Origin("d1", "c1", "g1"))
    return boundary.to_event(Observation(ek, "gate1", time.time(), subject=RawIdentifier(kind, value),
                                         attrs=attrs))  # type: ignore[arg-type]


def _retained(broker: Broker, receiver: WatchlistReceiver, name: str) -> None:
    """Connect like a gateway's uplink does and hand it the retained list(s)."""
    col = Collector(broker.host, broker.port, "edgegw/d1/watchlists/+", client_id=name)
    try:
        deadline = time.monotonic() + 10
        while not col.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert col.messages and all(m.retain for m in col.messages)
        for m in col.messages:
            receiver(m.topic, m.payload)
    finally:
        col.close()


def test_build_push_repush_revoke_reach_the_gateway_store(pg: Database, key_file: Path, broker: Broker,
                                                          tmp_path: Path) -> None:
    seed = _seed_file(tmp_path)
    desk = _desk(pg, key_file, seed, broker)
    root = load_key_file(key_file, purpose="test")
    expires = int(time.time()) + 7 * 86400
    built = desk.build("wl-1", {IdKind.PLATE: [PLATE], IdKind.CARD: [CARD, CARD], IdKind.MAC: [MAC]},
                       case_id="C-2026-117", approver="officer.li", expires_at=expires, actor="officer-0042")
    assert (built.version, built.state, built.counts) == (1, "built", {"plate": 1, "card": 1, "mac": 1})
    assert len(built.epochs) == 2  # this epoch and the next
    pushed = desk.push("wl-1", actor="officer-0042")
    assert (pushed.version, pushed.state, pushed.topic) == (1, "pushed", "edgegw/d1/watchlists/wl-1")
    # A gateway that connects later: its uplink receives the retained list and the store verifies it.
    (tmp_path / "platform.pub").write_text(public_hex(signing_key(load_key_file(seed, purpose="test"))))
    gateway = WatchlistStore(load_public_key(tmp_path / "platform.pub"), "d1", tmp_path / "watchlists.json")
    receiver = WatchlistReceiver(gateway, 60.0)
    _retained(broker, receiver, "g1-uplink")
    assert gateway.status()["lists"]["wl-1"]["version"] == 1 and gateway.status()["refused"] == {}
    swipe, passage = _event(root, IdKind.CARD, CARD), _event(root, IdKind.PLATE, PLATE)
    hits = gateway.hits_for([swipe, passage, _event(root, IdKind.CARD, "0099999999")])
    assert [(h.observation.attrs["id_kind"], h.observation.attrs["case_id"], h.links) for h in hits] == [
        ("card", "C-2026-117", (swipe.event_id,)), ("plate", "C-2026-117", (passage.event_id,))]
    # A re-push is the next version (a gateway refuses a version it has seen): accepted, not counted as replay.
    assert desk.push("wl-1", actor="officer-0042").version == 2
    _retained(broker, receiver, "g1-uplink")
    assert gateway.status()["lists"]["wl-1"]["version"] == 2 and gateway.status()["refused"] == {}
    # Revoked: an empty version 3; the gateway stops matching and cannot be handed version 2 again.
    revoked = desk.revoke("wl-1", actor="officer-0042", note="case closed")
    assert (revoked.version, revoked.state) == (3, "revoked")
    _retained(broker, receiver, "g1-uplink")
    assert gateway.hits_for([_event(root, IdKind.CARD, CARD)]) == []
    assert gateway.status()["lists"] == {}
    for refused in (lambda: desk.push("wl-1", actor="x"), lambda: desk.revoke("wl-1", actor="x"),
                    lambda: desk.build("wl-1", {IdKind.CARD: [CARD]}, case_id="C-1", approver="a",
                                       expires_at=expires, actor="x")):
        with pytest.raises(WatchlistError, match="revoked"):
            refused()
    # Nothing raw anywhere on the platform; the revoked list's pseudonyms are forgotten too.
    dump = "\n".join(str(pg.query(f'SELECT * FROM "{t}"'.encode().decode()))
                     for (t,) in pg.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
    for raw in (PLATE, PLATE.replace("·", ""), "D12345", CARD, MAC, MAC.replace(":", "")):
        assert raw not in dump
    assert pg.scalar("SELECT entries::text FROM watchlists WHERE list_id = 'wl-1'") == "[]"
    audit = pg.query("SELECT actor, action, details FROM audit_log ORDER BY seq")
    assert {str(a) for a, _, _ in audit} == {"officer-0042"}
    assert [act for _, act, _ in audit] == ["watchlist_build", "watchlist_push", "watchlist_push", "watchlist_revoke"]
    assert json.loads(str(audit[0][2]))["counts"] == {"plate": 1, "card": 1, "mac": 1}
    assert all("pseudonym" not in str(d) for _, _, d in audit)
    with connect(pg.dsn) as conn:
        assert verify(conn).ok


def test_build_refusals_and_a_failed_push_changes_nothing(pg: Database, key_file: Path, broker: Broker,
                                                          tmp_path: Path) -> None:
    desk = _desk(pg, key_file, _seed_file(tmp_path), broker)
    now = int(time.time())
    cases = [({IdKind.PLATE: ["B1"]}, now + 3600, "plate value was refused"),        # not a plate
             ({IdKind.RESIDENT: ["r-1"]}, now + 3600, "cannot be watched"),
             ({}, now + 3600, "at least one"),
             ({IdKind.CARD: [CARD]}, now - 1, "expiry"),
             ({IdKind.CARD: [CARD]}, now + 400 * 86400, "expiry")]
    for values, expires, message in cases:
        with pytest.raises(WatchlistError, match=message) as info:
            desk.build("wl-x", values, case_id="C-1", approver="officer.li", expires_at=expires, actor="x")
        assert "B1" not in str(info.value)
    with pytest.raises(WatchlistError, match="not built"):  # a case id a gateway would refuse is not signed
        desk.build("wl-x", {IdKind.CARD: [CARD]}, case_id="C 1 with spaces", approver="a", expires_at=now + 60,
                   actor="x")
    desk.build("wl-x", {IdKind.CARD: [CARD]}, case_id="C-1", approver="officer.li", expires_at=now + 3600, actor="x")
    broker.stop()
    try:
        with pytest.raises(WatchlistError, match="broker"):
            desk.push("wl-x", actor="x")
    finally:
        broker.start()
    assert pg.scalar("SELECT state FROM watchlists WHERE list_id = 'wl-x'") == "built"  # rolled back
    assert [r[0] for r in pg.query("SELECT action FROM audit_log ORDER BY seq")] == ["watchlist_build"]
    assert desk.push("wl-x", actor="x").version == 1  # the built version goes out as it is


def test_watchlist_cli_build_from_stdin_push_list_public_key(pg: Database, key_file: Path, broker: Broker,
                                                             tmp_path: Path) -> None:
    seed = _seed_file(tmp_path)
    cfg = district_config(tmp_path, search={"key_file": str(key_file)},
                          watchlist={"district": "d1", "signing_key": str(seed)},
                          mqtt={"host": broker.host, "port": broker.port})

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "district", "watchlist", *args, "--config", str(cfg),
                               "--dsn", pg.dsn], cwd=ROOT, capture_output=True, text=True, input=stdin, timeout=60,
                              check=False)

    out = cli("build", "--list-id", "wl-cli", "--case", "C-2026-118", "--approver", "officer.li", "--expires",
              "+3d", "--stdin", "--push", stdin=f"plate {PLATE}\n# a comment\ncard {CARD}\n")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["version"], summary["state"], summary["counts"]) == (1, "pushed", {"plate": 1, "card": 1})
    bad = cli("build", "--list-id", "wl-bad", "--case", "C-1", "--approver", "a", "--expires", "+1d", "--stdin",
              stdin=f"plates {PLATE}\n")
    assert bad.returncode == 3 and "stdin line 1" in bad.stderr and PLATE not in bad.stderr
    listed = json.loads(cli("list", "--json").stdout)
    assert [(s["list_id"], s["version"], s["state"]) for s in listed] == [("wl-cli", 1, "pushed")]
    pub = cli("public-key").stdout.strip()
    (tmp_path / "platform.pub").write_text(pub)
    store = WatchlistStore(load_public_key(tmp_path / "platform.pub"), "d1")
    _retained(broker, WatchlistReceiver(store, 60.0), "g2-uplink")
    assert store.status()["lists"]["wl-cli"]["case_id"] == "C-2026-118"
    assert json.loads(cli("push", "--list-id", "wl-cli").stdout)["version"] == 2
    assert cli("push", "--list-id", "nope").returncode == 3
