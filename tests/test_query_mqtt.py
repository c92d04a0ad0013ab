"""MQTT 5 request/response on a real mosquitto: authentication, role limits, fan-out, no raw identifier published."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.query.config import MqttQueryConfig
from edge.query.mqtt_rr import MqttResponder, ReplyError, open_reply, request_properties, seal_request
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
REPLIES = "platform/replies/abc123"


class Platform:
    """The district platform's side: publishes sealed requests, collects replies (and every payload)."""

    def __init__(self, host: str, port: int, env: Env, tokens: dict[str, str]) -> None:
        self.env = env
        self.tokens = tokens
        self.collector = Collector(host, port, "#", client_id="platform-collector")  # sees requests and replies
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform-pub", protocol=mqtt.MQTTv5)
        self.client.connect(host, port)
        self.client.loop_start()

    def send(self, who: str, query: dict[str, Any], *, topic: str = FANOUT, token: str | None = None,
             payload: bytes | None = None) -> tuple[bytes, bytes]:
        correlation = os.urandom(8)
        body = {"case_id": "C-2026-17", "from": T0 - DAY, "to": T0 + DAY, **query}
        body = {k: v for k, v in body.items() if v is not None}
        payload = payload or seal_request(who, token or self.tokens[who], body, REPLIES, correlation, now=T0)
        props = request_properties(REPLIES, correlation)
        self.client.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)
        return payload, correlation

    def reply(self, correlation: bytes, timeout: float = 10.0) -> tuple[dict[str, Any], bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in list(self.collector.messages):
                if m.topic == REPLIES and self._corr(m) == correlation:
                    return json.loads(m.payload), m.payload
            time.sleep(0.02)
        raise AssertionError("no reply")

    def _corr(self, m: Any) -> bytes | None:
        return m.properties.get("CorrelationData")

    def close(self) -> None:
        self.client.disconnect()  # before loop_stop: the loop thread then exits at once
        self.client.loop_stop()
        self.collector.client.disconnect()
        self.collector.close()


@pytest.fixture
def rig(tmp_path: Path, broker: Any) -> Iterator[tuple[Platform, MqttResponder, list[str]]]:
    env = make_env(tmp_path)
    plates = shared_plates(2)
    env.commit([plate_obs("cam-plate-n", T0, plates[0]), card_obs("reader-n", T0 + 1, CARDS[0]),
                mac_obs("sniffer-n", T0 + 2, MACS[0])])
    env.commit([plate_obs("cam-plate-s", T0 + 300, plates[1])])
    env.flush()
    tokens = write_tokens(tmp_path / "tokens.toml")
    responder = MqttResponder(env.service, load_principals(tmp_path / "tokens.toml"),
                              MqttConfig(host=broker.host, port=broker.port), MqttQueryConfig(enabled=True),
                              ORIGIN, clock=lambda: T0)
    # The Collector in tests._mqtt keeps only MessageExpiryInterval; keep the correlation data too.
    platform = Platform(broker.host, broker.port, env, tokens)
    original = platform.collector._on_message

    def on_message(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
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


def test_platform_query_is_answered_with_pseudonyms_only(rig: Rig) -> None:
    platform, _, plates = rig
    _, corr = platform.send(PLATFORM.name, {"kind": "plate", "officer_id": "D-17", "value": plates[0]})
    _, raw = platform.reply(corr)
    verified = open_reply(platform.tokens[PLATFORM.name], raw, corr)
    assert verified["status"] == "ok" and verified["gateway"] == ORIGIN.gateway
    result = verified["result"]
    assert result["view"] == "pseudonyms" and len(result["hits"]) == 1
    members = result["hits"][0]["members"]
    assert [m["kind"] for m in members] == ["plate_passage", "card_swipe", "device_seen"]
    assert all("raw" not in m and m["subject"]["pseudonym"] for m in members)
    with pytest.raises(ReplyError):
        open_reply(platform.tokens[PLATFORM.name], raw, b"other-corr")  # bound to its request
    with pytest.raises(ReplyError):
        open_reply(platform.tokens[POLICE.name], raw, corr)  # signed for the platform only
    # Nothing published in this exchange (the request included) carries a raw identifier.
    payloads = [m.payload for m in platform.collector.messages]
    assert len(payloads) >= 2
    assert_no_raw_identifiers(payloads)
    for value in (plates[0], plates[1], CARDS[0], MACS[0], MACS[0].replace(":", "").lower()):
        assert all(value.encode() not in p for p in payloads)


def test_police_over_mqtt_still_gets_no_raw_values_and_installer_is_refused(
        rig: Rig) -> None:
    platform, _, plates = rig
    _, corr = platform.send(POLICE.name, {"kind": "card", "officer_id": "0042", "value": CARDS[0]}, topic=DIRECT)
    reply = open_reply(platform.tokens[POLICE.name], platform.reply(corr)[1], corr)
    assert reply["status"] == "ok" and reply["result"]["view"] == "pseudonyms"
    assert "raw" not in json.dumps(reply)
    _, corr = platform.send(INSTALLER.name, {"kind": "plate", "officer_id": "inst-7", "value": plates[0]})
    reply = open_reply(platform.tokens[INSTALLER.name], platform.reply(corr)[1], corr)
    assert reply["status"] == "refused" and reply["error"]["code"] == "forbidden"
    assert_no_raw_identifiers([m.payload for m in platform.collector.messages])


def test_missing_case_id_is_refused_and_audited(rig: Rig) -> None:
    platform, _, plates = rig
    before = len(platform.env.audit.records())
    _, corr = platform.send(PLATFORM.name, {"kind": "plate", "case_id": None, "officer_id": "D-17",
                                            "value": plates[1]})
    reply = open_reply(platform.tokens[PLATFORM.name], platform.reply(corr)[1], corr)
    assert reply["status"] == "refused" and reply["error"]["code"] == "missing_case_id"
    assert "case ID" in reply["error"]["message"]
    new = platform.env.audit.records()[before:]
    assert [r.action for r in new] == ["query_refused"]


def test_forged_stale_and_replayed_requests_are_rejected_unaudited(rig: Rig) -> None:
    platform, responder, plates = rig
    before = len(platform.env.audit.records())
    query = {"kind": "plate", "officer_id": "D-17", "value": plates[0]}
    _, corr = platform.send(PLATFORM.name, query, token=os.urandom(32).hex())  # wrong key
    reply = platform.reply(corr)[0]
    assert reply["status"] == "unauthenticated" and "sig" not in reply
    payload, corr = platform.send(PLATFORM.name, query)
    assert platform.reply(corr)[0]["status"] == "ok"
    # The same bytes again (a replay by someone on the broker), to the same reply address.
    platform.client.publish(FANOUT, payload, qos=1, properties=request_properties(REPLIES, corr)).wait_for_publish(5)
    time.sleep(0.5)
    replies = [json.loads(m.payload) for m in platform.collector.messages
               if m.topic == REPLIES and m.properties.get("CorrelationData") == corr]
    assert [r["status"] for r in replies] == ["ok", "unauthenticated"]
    assert "replayed" in replies[1]["error"]["message"]
    # A request stamped an hour ago is stale.
    stale = seal_request(PLATFORM.name, platform.tokens[PLATFORM.name], {**query, "case_id": "C-1", "from": T0 - DAY,
                                                                         "to": T0 + DAY}, REPLIES, b"c-stale",
                         now=T0 - 3600)
    props = request_properties(REPLIES, b"c-stale")
    platform.client.publish(FANOUT, stale, qos=1, properties=props).wait_for_publish(5)
    assert "gateway clock" in platform.reply(b"c-stale")[0]["error"]["message"]
    # A valid request replayed towards another reply topic fails: the address is sealed in.
    redirected, corr2 = platform.send(PLATFORM.name, query)
    platform.reply(corr2)
    responder_reply = responder.handle(redirected, "attacker/inbox", corr2)
    assert responder_reply is not None and json.loads(responder_reply)["status"] == "unauthenticated"
    # Only the two genuine queries were audited.
    assert [r.action for r in platform.env.audit.records()[before:]] == ["query", "query"]
    assert responder.rejected >= 4
