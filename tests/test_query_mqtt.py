"""MQTT 5 request/response on a real mosquitto: signatures, reply namespace, encrypted replies, replay window."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge.query.config import MqttQueryConfig
from edge.query.mqtt_rr import (
    NOT_ACCEPTED,
    MqttResponder,
    PendingRequest,
    ReplyError,
    door_public_key,
    open_reply,
    recipient,
    request_properties,
    seal_request,
)
from edge.query.principals import load_principals
from edge.uplink.config import MqttConfig
from tests._events import assert_no_raw_identifiers
from tests._mqtt import Collector
from tests._passages import (
    CARDS,
    DAY,
    INSTALLER,
    MACS,
    ORIGIN,
    PLATFORM,
    POLICE,
    SIGNING_KEYS,
    T0,
    Env,
    card_obs,
    mac_obs,
    make_env,
    plate_obs,
    shared_plates,
    write_tokens,
)

FANOUT = f"edgegw/{ORIGIN.district}/query/request"
DIRECT = f"edgegw/{ORIGIN.district}/{ORIGIN.community}/{ORIGIN.gateway}/query/request"
REPLIES = f"edgegw/{ORIGIN.district}/query/reply/abc123"
DOOR_KEY = bytes(range(1, 33))


class Platform:
    """The district platform's side: publishes signed requests, collects replies (and every payload)."""

    def __init__(self, host: str, port: int, env: Env) -> None:
        self.env = env
        self.gateways = {recipient(ORIGIN): door_public_key(DOOR_KEY)}
        self.pending: dict[bytes, PendingRequest] = {}
        self.collector = Collector(host, port, "#", client_id="platform-collector")  # sees requests and replies
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform-pub", protocol=mqtt.MQTTv5)
        self.client.connect(host, port)
        self.client.loop_start()

    def send(self, who: str, query: dict[str, Any], *, topic: str = FANOUT, key: Ed25519PrivateKey | None = None,
             reply_to: str = REPLIES, now: float = T0) -> tuple[bytes, bytes]:
        correlation = os.urandom(8)
        body = {"case_id": "C-2026-17", "from": T0 - DAY, "to": T0 + DAY, **query}
        body = {k: v for k, v in body.items() if v is not None}
        pending = seal_request(who, key or SIGNING_KEYS[who], body, reply_to, correlation, gateways=self.gateways,
                               now=now)
        self.pending[correlation] = pending
        self.client.publish(topic, pending.payload, qos=1,
                            properties=request_properties(reply_to, correlation)).wait_for_publish(5)
        return pending.payload, correlation

    def reply(self, correlation: bytes, timeout: float = 10.0) -> tuple[dict[str, Any], bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in list(self.collector.messages):
                if m.topic == REPLIES and m.properties.get("CorrelationData") == correlation:
                    return json.loads(m.payload), m.payload
            time.sleep(0.02)
        raise AssertionError("no reply")

    def opened(self, correlation: bytes) -> dict[str, Any]:
        return open_reply(self.pending[correlation], self.reply(correlation)[1], REPLIES, correlation)

    def close(self) -> None:
        self.client.disconnect()  # before loop_stop: the loop thread then exits at once
        self.client.loop_stop()
        self.collector.client.disconnect()
        self.collector.close()


def _responder(env: Env, tmp_path: Path, broker: Any) -> MqttResponder:
    return MqttResponder(env.service, load_principals(tmp_path / "tokens.toml"),
                         MqttConfig(host=broker.host, port=broker.port), MqttQueryConfig(enabled=True),
                         ORIGIN, door_key=DOOR_KEY, nonce_db=tmp_path / "nonces.db", clock=lambda: T0)


@pytest.fixture
def rig(tmp_path: Path, broker: Any) -> Iterator[tuple[Platform, MqttResponder, list[str]]]:
    env = make_env(tmp_path)
    plates = shared_plates(2)
    env.commit([plate_obs("cam-plate-n", T0, plates[0]), card_obs("reader-n", T0 + 1, CARDS[0]),
                mac_obs("sniffer-n", T0 + 2, MACS[0])])
    env.commit([plate_obs("cam-plate-s", T0 + 300, plates[1])])
    env.flush()
    write_tokens(tmp_path / "tokens.toml")
    responder = _responder(env, tmp_path, broker)
    platform = Platform(broker.host, broker.port, env)
    original = platform.collector._on_message

    def on_message(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        # The Collector in tests._mqtt keeps only MessageExpiryInterval; keep the correlation data too.
        original(c, u, msg)
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties is not None else None
        platform.collector.messages[-1].properties["CorrelationData"] = corr

    platform.collector.client.on_message = on_message
    responder.start()
    assert responder.wait_ready()
    try:
        yield platform, responder, plates
    finally:
        responder.stop()
        platform.close()
        env.close()


Rig = tuple[Platform, MqttResponder, list[str]]


def test_police_query_is_answered_encrypted_with_pseudonyms_only(rig: Rig) -> None:
    platform, _, plates = rig
    _, corr = platform.send(POLICE.name, {"kind": "plate", "value": plates[0]})
    outer, raw = platform.reply(corr)
    assert set(outer) == {"v", "gateway", "box"}  # a subscriber sees no status, case id or pseudonym
    reply = platform.opened(corr)
    assert reply["status"] == "ok" and reply["gateway"] == ORIGIN.gateway
    result = reply["result"]
    assert result["view"] == "pseudonyms" and len(result["hits"]) == 1
    members = result["hits"][0]["members"]
    assert [m["kind"] for m in members] == ["plate_passage", "card_swipe", "device_seen"]
    assert all("raw" not in m and m["subject"]["pseudonym"] for m in members)
    for pseudonym in (m["subject"]["pseudonym"] for m in members):
        assert pseudonym.encode() not in raw and b"C-2026-17" not in raw
    with pytest.raises(ReplyError):
        open_reply(platform.pending[corr], raw, REPLIES, b"other-corr")  # bound to its request
    other = seal_request(POLICE.name, SIGNING_KEYS[POLICE.name], {"kind": "range"}, REPLIES, corr,
                         gateways=platform.gateways)
    with pytest.raises(ReplyError):
        open_reply(other, raw, REPLIES, corr)  # only the requester's ephemeral key opens it
    payloads = [m.payload for m in platform.collector.messages]
    assert len(payloads) >= 2
    assert_no_raw_identifiers(payloads)
    for value in (plates[0], plates[1], CARDS[0], MACS[0], MACS[0].replace(":", "").lower()):
        assert all(value.encode() not in p for p in payloads)


def test_platform_gets_aggregates_only_and_installer_is_refused(rig: Rig) -> None:
    platform, _, plates = rig
    _, corr = platform.send(PLATFORM.name, {"kind": "plate", "officer_id": "D-17", "value": plates[0]})
    reply = platform.opened(corr)
    assert reply["status"] == "refused" and reply["error"]["code"] == "forbidden"
    _, corr = platform.send(PLATFORM.name, {"kind": "range", "officer_id": "D-17"}, topic=DIRECT)
    reply = platform.opened(corr)
    assert reply["status"] == "ok" and reply["result"]["view"] == "metadata"
    assert "pseudonym" not in json.dumps(reply)
    _, corr = platform.send(INSTALLER.name, {"kind": "plate", "officer_id": "inst-7", "value": plates[0]})
    assert platform.opened(corr)["error"]["code"] == "forbidden"


def test_missing_case_id_is_refused_and_audited(rig: Rig) -> None:
    platform, _, plates = rig
    before = len(platform.env.audit.records())
    _, corr = platform.send(POLICE.name, {"kind": "plate", "case_id": None, "value": plates[1]})
    reply = platform.opened(corr)
    assert reply["status"] == "refused" and reply["error"]["code"] == "missing_case_id"
    assert [r.action for r in platform.env.audit.records()[before:]] == ["query_refused"]


def test_forged_stale_replayed_and_unknown_requests_get_one_generic_refusal(rig: Rig) -> None:
    platform, responder, plates = rig
    before = len(platform.env.audit.records())
    query = {"kind": "plate", "value": plates[0]}
    answers = []
    _, corr = platform.send(POLICE.name, query, key=Ed25519PrivateKey.generate())  # a key the gateway does not know
    answers.append(platform.reply(corr)[0])
    _, corr = platform.send("no-such-principal", query, key=Ed25519PrivateKey.generate())
    answers.append(platform.reply(corr)[0])
    _, corr = platform.send(POLICE.name, query, now=T0 - 3600)  # stale
    answers.append(platform.reply(corr)[0])
    payload, corr = platform.send(POLICE.name, query)
    assert platform.opened(corr)["status"] == "ok"
    # The same bytes again (a replay by someone on the broker), to the same reply address.
    assert responder.handle(payload, REPLIES, corr) is not None
    answers.append(json.loads(responder.handle(payload, REPLIES, corr) or b"{}"))
    # Every failure reads the same: no principal name, no reason (issue 12: errors enumerated principals).
    for answer in answers:
        assert answer["status"] == "unauthenticated" and answer["error"]["message"] == NOT_ACCEPTED
        assert "no-such-principal" not in json.dumps(answer) and POLICE.name not in json.dumps(answer)
    assert [r.action for r in platform.env.audit.records()[before:]] == ["query"]  # only the genuine one
    assert responder.rejected >= 5


def test_replies_only_go_to_the_fixed_reply_namespace(rig: Rig) -> None:
    platform, responder, plates = rig
    own_events = f"edgegw/{ORIGIN.district}/{ORIGIN.community}/{ORIGIN.gateway}/events/passage"
    for topic in (own_events, "attacker/inbox", f"edgegw/{ORIGIN.district}/query/reply/a/b", REPLIES + "/+"):
        payload = seal_request(POLICE.name, SIGNING_KEYS[POLICE.name], {"kind": "range", "case_id": "C-1",
                               "from": T0 - 1, "to": T0 + 1}, topic, b"c", gateways=platform.gateways, now=T0)
        assert responder.handle(payload.payload, topic, b"c") is None
    # A valid request for REPLIES, replayed with another reply topic, does not verify (the topic is signed).
    payload, corr = platform.send(POLICE.name, {"kind": "plate", "value": plates[0]})
    platform.opened(corr)
    other = f"edgegw/{ORIGIN.district}/query/reply/elsewhere"
    assert json.loads(responder.handle(payload, other, corr) or b"{}")["status"] == "unauthenticated"


def test_a_captured_request_is_refused_after_a_restart(tmp_path: Path, broker: Any) -> None:
    env = make_env(tmp_path)
    try:
        write_tokens(tmp_path / "tokens.toml")
        gateways = {recipient(ORIGIN): door_public_key(DOOR_KEY)}
        pending = seal_request(POLICE.name, SIGNING_KEYS[POLICE.name], {"kind": "range", "case_id": "C-1",
                               "from": T0 - 1, "to": T0 + 1}, REPLIES, b"c1", gateways=gateways, now=T0)
        first = _responder(env, tmp_path, broker)
        answer = first.handle(pending.payload, REPLIES, b"c1") or b""
        assert open_reply(pending, answer, REPLIES, b"c1")["status"] == "ok"
        first.stop()
        second = _responder(env, tmp_path, broker)  # a restart: the nonce window is on disk
        try:
            again = json.loads(second.handle(pending.payload, REPLIES, b"c1") or b"{}")
            assert again["status"] == "unauthenticated"
        finally:
            second.stop()
    finally:
        env.close()


def test_a_request_for_other_gateways_does_not_open_here(rig: Rig) -> None:
    _, responder, _ = rig
    elsewhere = {"dl/other/gw9": door_public_key(bytes(range(2, 34)))}
    pending = seal_request(POLICE.name, SIGNING_KEYS[POLICE.name], {"kind": "range", "case_id": "C-1",
                           "from": T0 - 1, "to": T0 + 1}, REPLIES, b"c", gateways=elsewhere, now=T0)
    assert json.loads(responder.handle(pending.payload, REPLIES, b"c") or b"{}")["status"] == "unauthenticated"
