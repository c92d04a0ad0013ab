"""Watch-lists: build and sign (platform side), verify, refuse, match, expire, persist (gateway side)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge.audit import AuditLog
from edge.errors import EdgeError
from edge.events import to_wire, validate
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Event, EventKind, IdKind, Observation, Origin, RawIdentifier
from edge.watchlist import (
    Refusal,
    WatchEntry,
    WatchlistRefusedError,
    WatchlistStore,
    build_watchlist,
    canonical,
    load_public_key,
    pseudonym_entries,
    watchlist_topic,
)
from tests._mqtt import RAW_IDENTIFIERS, Collector
from tests.conftest import Broker

DISTRICT_KEY = b"d" * 32
NOV = 1795000000.0  # 2026-11-18 UTC
DEC = 1796700000.0  # 2026-12-08 UTC
PLATE, CARD = "辽B12345", "0012345678"
ORIGIN = Origin("d1", "c1", "g1")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def platform_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _list(key: Ed25519PrivateKey, *, version: int = 1, list_id: str = "wl-1", district: str = "d1",
          expires: float = NOV + 86400 * 40, issued: float = NOV, values: tuple[str, ...] = (PLATE,),
          kind: IdKind = IdKind.PLATE) -> bytes:
    entries = pseudonym_entries(Pseudonymiser(DISTRICT_KEY), kind, values, NOV)
    return build_watchlist(signing_key=key, district=district, list_id=list_id, version=version,
                           case_id="C-2026-117", approver="officer.li", issued_at=int(issued),
                           expires_at=int(expires), entries=entries)


def _store(key: Ed25519PrivateKey, clock: Callable[[], float], tmp_path: Path | None = None,
           audit: AuditLog | None = None) -> WatchlistStore:
    return WatchlistStore(key.public_key(), "d1", tmp_path / "watchlists.json" if tmp_path else None,
                          audit=audit, clock=clock)


def _event(ts: float, value: str = PLATE, kind: IdKind = IdKind.PLATE) -> Event:
    ek = EventKind.PLATE_PASSAGE if kind is IdKind.PLATE else EventKind.CARD_SWIPE
    attrs: dict[str, Any] = ({"confidence": 0.9, "colour": "blue", "plate_type": "blue", "local": True, "frames": 3,
                              "duration_s": 1.0} if kind is IdKind.PLATE else {"format": "rdm6300"})
    boundary = PrivacyBoundary(Pseudonymiser(DISTRICT_KEY), ORIGIN)
    return boundary.to_event(Observation(ek, "gate1", ts, subject=RawIdentifier(kind, value), attrs=attrs))


def test_a_signed_list_holds_pseudonyms_only_and_matches_this_and_next_epoch(
        platform_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    RAW_IDENTIFIERS.add(PLATE)  # the full plate only: a 5-digit fragment turns up in random hex by chance
    payload = _list(platform_key)
    assert PLATE.encode() not in payload and b"B12345" not in payload
    doc = json.loads(payload)
    assert {e["key_id"].split(".")[1] for e in doc["entries"]} == {"2026-11", "2026-12"}
    clock = Clock(NOV + 60)
    audit = AuditLog(tmp_path / "audit.db")
    store = _store(platform_key, clock, audit=audit)
    wl = store.offer(payload)
    assert (wl.list_id, wl.version, wl.case_id, len(wl.entries)) == ("wl-1", 1, "C-2026-117", 2)
    for ts in (NOV + 3600, DEC):  # this month and, after the epoch change, the next
        clock.now = ts
        ev = _event(ts)
        hits = store.hits_for([ev, _event(ts, "京A99999")])
        assert len(hits) == 1
        obs, links = hits[0].observation, hits[0].links
        assert links == (ev.event_id,)
        alarm = to_wire(PrivacyBoundary(Pseudonymiser(DISTRICT_KEY), ORIGIN).to_event(obs, links=links), 1, 0)
        validate(alarm)
        assert alarm["attrs"] == {"code": "watch_hit", "message": "plate on watch-list wl-1", "severity": "critical",
                                  "id_kind": "plate", "list_id": "wl-1", "list_version": 1, "case_id": "C-2026-117"}
        assert "subject" not in alarm and alarm["links"] == [ev.event_id]
    # A card with the same digits is another identifier kind: no hit.
    assert store.hits_for([_event(NOV + 10, "12345", IdKind.CARD)]) == []
    actions = [r.action for r in audit.records()]
    assert actions == ["watchlist_accept", "watch_hit", "watch_hit"]
    assert store.status()["hits"] == 2
    audit.close()


def test_every_refusal_is_refused_counted_and_audited(platform_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOV + 60)
    audit = AuditLog(tmp_path / "audit.db")
    store = _store(platform_key, clock, audit=audit)
    store.offer(_list(platform_key, version=3))
    good = json.loads(_list(platform_key, version=4))

    def resigned(**changes: Any) -> bytes:
        body = {k: v for k, v in good.items() if k != "signature"} | changes
        return canonical(body | {"signature": base64.b64encode(platform_key.sign(canonical(body))).decode()})

    tampered = dict(good, entries=[*good["entries"], {"kind": "plate", "key_id": good["entries"][0]["key_id"],
                                                      "pseudonym": "0" * 32}])
    cases: list[tuple[bytes, Refusal]] = [
        (canonical(tampered), Refusal.BAD_SIGNATURE),                                  # an entry added in transit
        (canonical(dict(good, case_id="C-OTHER")), Refusal.BAD_SIGNATURE),             # a field changed
        (canonical({k: v for k, v in good.items() if k != "signature"}), Refusal.BAD_SIGNATURE),  # unsigned
        (canonical(dict(good, signature="not base64!")), Refusal.BAD_SIGNATURE),
        (_list(Ed25519PrivateKey.generate(), version=9), Refusal.BAD_SIGNATURE),       # someone else's key
        (_list(platform_key, version=3), Refusal.REPLAYED),                            # the same version again
        (_list(platform_key, version=2), Refusal.REPLAYED),                            # an older one
        (_list(platform_key, version=5, expires=NOV + 30), Refusal.EXPIRED),
        (_list(platform_key, version=6, issued=NOV + 86400, expires=NOV + 86400 * 3), Refusal.NOT_YET_VALID),
        (_list(platform_key, version=7, district="d2"), Refusal.WRONG_DISTRICT),
        (b"\xff not json", Refusal.MALFORMED),
        (resigned(version=4.5), Refusal.MALFORMED),                                    # floats are never canonical
        (resigned(entries=[{"kind": "plate", "key_id": "x", "pseudonym": "0" * 32}]), Refusal.MALFORMED),
        (resigned(entries=[{"kind": "resident", "key_id": good["entries"][0]["key_id"], "pseudonym": "0" * 32}]),
         Refusal.MALFORMED),                                                          # residents are never watched
        (resigned(entries=[{"kind": "plate", "key_id": good["entries"][0]["key_id"], "pseudonym": PLATE}]),
         Refusal.MALFORMED),                                                          # a raw value in place of one
    ]
    for payload, reason in cases:
        with pytest.raises(WatchlistRefusedError) as info:
            store.offer(payload)
        assert info.value.reason is reason, payload[:80]
        assert PLATE not in str(info.value)
    assert sum(store.refused.values()) == len(cases)
    assert store.refused[Refusal.BAD_SIGNATURE.value] == 5 and store.refused[Refusal.REPLAYED.value] == 2
    refusals = [r for r in audit.records() if r.action == "watchlist_refused"]
    assert len(refusals) == len(cases)
    # The list in force is untouched by all of that.
    assert store.status()["lists"]["wl-1"]["version"] == 3
    assert store.hits_for([_event(NOV + 120)]) != []
    audit.close()


def test_lists_expire_on_time_without_any_message(platform_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOV)
    audit = AuditLog(tmp_path / "audit.db")
    store = _store(platform_key, clock, audit=audit)
    store.offer(_list(platform_key, expires=NOV + 3600))
    clock.now = NOV + 3599
    assert store.hits_for([_event(clock.now)])
    clock.now = NOV + 3600  # offline: no new list, no sweep; the lookup itself refuses the expired list
    assert store.hits_for([_event(clock.now)]) == []
    assert store.expire() == ["wl-1"] and store.status()["lists"] == {}
    assert [r.action for r in audit.records()][-1] == "watchlist_expired"
    audit.close()


def test_a_newer_empty_version_withdraws_a_list(platform_key: Ed25519PrivateKey) -> None:
    store = _store(platform_key, Clock(NOV + 60))
    store.offer(_list(platform_key, version=1))
    store.offer(build_watchlist(signing_key=platform_key, district="d1", list_id="wl-1", version=2,
                                case_id="C-2026-117", approver="officer.li", issued_at=int(NOV),
                                expires_at=int(NOV + 86400), entries=[]))
    assert store.hits_for([_event(NOV + 120)]) == []
    with pytest.raises(WatchlistRefusedError):  # and version 1 cannot come back
        store.offer(_list(platform_key, version=1))


def test_state_survives_a_restart_and_replay_stays_closed(platform_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOV + 60)
    store = _store(platform_key, clock, tmp_path)
    store.offer(_list(platform_key, version=5))
    store.offer(_list(platform_key, version=1, list_id="wl-short", expires=NOV + 600))
    assert (tmp_path / "watchlists.json").stat().st_mode & 0o777 == 0o600
    clock.now = NOV + 3600
    again = _store(platform_key, clock, tmp_path)
    assert set(again.status()["lists"]) == {"wl-1"}  # the expired one is not brought back
    assert again.hits_for([_event(clock.now)])
    for old in (4, 5):
        with pytest.raises(WatchlistRefusedError, match="replayed"):
            again.offer(_list(platform_key, version=old))
    with pytest.raises(WatchlistRefusedError, match="replayed"):  # expired lists' versions are remembered too
        again.offer(_list(platform_key, version=1, list_id="wl-short", expires=NOV + 86400))
    # A list edited on disk no longer verifies and is dropped; the high-water mark stays.
    state = json.loads((tmp_path / "watchlists.json").read_text())
    state["lists"][0]["case_id"] = "C-EDITED"
    (tmp_path / "watchlists.json").write_text(json.dumps(state))
    tampered = _store(platform_key, clock, tmp_path)
    assert tampered.status()["lists"] == {}
    with pytest.raises(WatchlistRefusedError, match="replayed"):
        tampered.offer(_list(platform_key, version=5))
    (tmp_path / "watchlists.json").write_text("{not json")
    with pytest.raises(EdgeError, match="unreadable watch-list state"):
        _store(platform_key, clock, tmp_path)


def test_public_key_files(platform_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    pub = platform_key.public_key()
    pem = tmp_path / "platform.pem"
    pem.write_bytes(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    raw = tmp_path / "platform.hex"
    raw.write_text(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex() + "\n")
    for path in (pem, raw):
        store = WatchlistStore(load_public_key(path), "d1", clock=Clock(NOV + 60))
        assert store.offer(_list(platform_key)).version == 1
    (tmp_path / "bad").write_text("hello")
    with pytest.raises(EdgeError, match="Ed25519"):
        load_public_key(tmp_path / "bad")


def test_matching_is_a_lookup_not_a_scan(platform_key: Ed25519PrivateKey) -> None:
    entries = [WatchEntry(IdKind.MAC, "deadbeefdeadbeef.2026-11", f"{i:032x}") for i in range(50_000)]
    payload = build_watchlist(signing_key=platform_key, district="d1", list_id="macs", version=1, case_id="C-9",
                              approver="officer.li", issued_at=int(NOV), expires_at=int(NOV + 86400), entries=entries)
    store = _store(platform_key, Clock(NOV + 60))
    store.offer(payload)
    assert [wl.list_id for wl in store.match(IdKind.MAC, "deadbeefdeadbeef.2026-11", f"{4242:032x}")] == ["macs"]
    assert store.match(IdKind.MAC, "deadbeefdeadbeef.2026-12", f"{4242:032x}") == []  # another epoch's key
    assert store.match(IdKind.CARD, "deadbeefdeadbeef.2026-11", f"{4242:032x}") == []  # another kind


def test_delivered_as_a_retained_message_to_a_gateway_that_connects_later(
        platform_key: Ed25519PrivateKey, broker: Broker) -> None:
    topic = watchlist_topic("d1", "wl-1")
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform", protocol=mqtt.MQTTv5)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    pub.publish(topic, _list(platform_key), qos=1, retain=True).wait_for_publish(10)
    pub.loop_stop()
    pub.disconnect()
    gateway = Collector(broker.host, broker.port, "edgegw/d1/watchlists/+", client_id="g1-watchlists")
    try:
        deadline = time.monotonic() + 10
        while not gateway.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gateway.messages and gateway.messages[0].retain
        store = WatchlistStore(platform_key.public_key(), "d1", clock=Clock(NOV + 60))
        assert store.offer(gateway.messages[0].payload).list_id == "wl-1"
    finally:
        gateway.close()


def test_the_matching_process_picks_up_lists_the_receiving_process_accepted(
        platform_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOV + 60)
    receiver = _store(platform_key, clock, tmp_path)  # the uplink daemon: holds the MQTT connection
    matcher = _store(platform_key, clock, tmp_path)   # the capture daemon: matches before commit
    assert not matcher.reload_if_changed() and matcher.hits_for([_event(NOV + 61)]) == []
    receiver.offer(_list(platform_key, version=1))
    assert matcher.reload_if_changed()
    assert matcher.hits_for([_event(NOV + 62)])
    assert not matcher.reload_if_changed()  # nothing new: no reload
    receiver.offer(build_watchlist(signing_key=platform_key, district="d1", list_id="wl-1", version=2,
                                   case_id="C-2026-117", approver="officer.li", issued_at=int(NOV),
                                   expires_at=int(NOV + 86400), entries=[]))
    assert matcher.reload_if_changed()
    assert matcher.hits_for([_event(NOV + 63)]) == []


def test_a_bad_state_file_on_reload_keeps_the_lists_in_force(platform_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOV + 60)
    receiver = _store(platform_key, clock, tmp_path)
    matcher = _store(platform_key, clock, tmp_path)
    receiver.offer(_list(platform_key, version=1))
    assert matcher.reload_if_changed()
    (tmp_path / "watchlists.json").write_text("{broken")
    assert not matcher.reload_if_changed()
    assert matcher.hits_for([_event(NOV + 62)])  # still matching what was verified before
