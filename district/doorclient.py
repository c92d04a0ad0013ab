"""The platform's side of the gateways' MQTT query door (v2, `edge.query.mqtt_rr`): send signed,
sealed requests to named gateways, collect and open their encrypted replies.

Requests are signed per officer (`OfficerKeys`). One `ask` connects to the district broker
(`[mqtt]`), subscribes to a fresh reply topic `{prefix}/{district}/query/reply/{random}` per
district involved (the only namespace gateways answer into), publishes one request per gateway on
its own request topic (`{prefix}/{district}/{community}/{gateway}/query/request`), sealed to that
gateway's door key alone, and waits until every gateway answered or `timeout_s` passed. A reply
opens only with the request's ephemeral key, so nobody on the broker reads it, and only the
addressed gateway's door key can have made it. The request body carries the raw value the
gateway needs; it is encrypted to that gateway and never written anywhere here.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from paho.mqtt.enums import CallbackAPIVersion

from district.config import DoorConfig, MqttConfig
from district.errors import DistrictError
from district.gateways import GatewayName
from edge.query.mqtt_rr import PendingRequest, ReplyError, open_reply, reply_namespace, request_properties, seal_request

log = logging.getLogger(__name__)


class DoorError(DistrictError):
    """The broker could not be reached or refused the platform's client."""


@dataclass(frozen=True, slots=True)
class DoorAsk:
    """One request: the gateway, its door public key and the query body (`kind` and the fields)."""

    gateway: GatewayName
    door: X25519PublicKey
    officer: str
    query: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class DoorAnswer:
    """One gateway's answer: `ok`, `refused`, `unauthenticated`, `unreadable` or `timeout`, and the opened reply."""

    gateway: str
    status: str
    reply: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class _Sent:
    pending: PendingRequest
    who: str
    reply_topic: str
    answer: DoorAnswer | None = None


class OfficerKeys:
    """The platform's door principals, one per officer, with Ed25519 keys derived from one seed.

    A gateway binds every police principal to one officer (the audit's "who" and the per-officer
    limit must never be what a request claims), so the platform asks as `{prefix}:{officer}`, with a
    key of that officer's own; a gateway that lists the officer (`edgegw district gateway
    door-principal --officer O` prints the entry) accepts requests for that officer only.
    """

    def __init__(self, seed: bytes, prefix: str) -> None:
        if len(seed) < 32:
            raise DoorError("the door signing key must be at least 32 bytes")
        self._seed = seed
        self._prefix = prefix

    def principal(self, officer: str) -> str:
        """The principal name the gateways know this officer's requests by."""
        return f"{self._prefix}:{officer}"

    def key(self, officer: str) -> Ed25519PrivateKey:
        """The officer's signing key (HKDF-SHA256 of the seed, labelled with the officer id)."""
        return Ed25519PrivateKey.from_private_bytes(HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"edgegw/district-door/v1",
            info=b"officer|" + officer.encode("utf-8")).derive(self._seed))

    def verify_key(self, officer: str) -> str:
        """The hex public key for the gateways' tokens file (`verify_key`)."""
        return self.key(officer).public_key().public_bytes(serialization.Encoding.Raw,
                                                            serialization.PublicFormat.Raw).hex()


class DoorClient:
    """Sends v2 requests, each signed as its officer's principal (`OfficerKeys`), over the `mqtt` broker."""

    def __init__(self, mqtt_cfg: MqttConfig, config: DoorConfig, keys: OfficerKeys,
                 password: str | None = None) -> None:
        self._mqtt = mqtt_cfg
        self._cfg = config
        self._keys = keys
        self._password = password

    def ask(self, asks: Sequence[DoorAsk]) -> dict[str, DoorAnswer]:
        """Send every request, wait for the replies (at most `timeout_s`), keyed by `D/C/G`."""
        if not asks:
            return {}
        prefix = self._mqtt.topic_prefix
        run = os.urandom(8).hex()
        topics = {a.gateway.district: f"{reply_namespace(prefix, a.gateway.district)}{run}" for a in asks}
        sent: dict[bytes, _Sent] = {}
        lock = threading.Lock()
        done = threading.Event()
        subscribed = threading.Event()
        connected = threading.Event()
        refused: list[str] = []

        def on_connect(client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if getattr(rc, "is_failure", False):
                refused.append(str(rc))
                connected.set()
                return
            connected.set()
            client.subscribe([(t, 1) for t in sorted(set(topics.values()))])

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            corr = getattr(msg.properties, "CorrelationData", None) if msg.properties is not None else None
            with lock:
                entry = sent.get(bytes(corr)) if corr else None
                if entry is None or entry.answer is not None or msg.topic != entry.reply_topic:
                    return
                entry.answer = _open(entry, bytes(msg.payload), bytes(corr or b""))
                if len(sent) == len(asks) and all(e.answer is not None for e in sent.values()):
                    done.set()

        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                             client_id=self._cfg.client_id or f"district-door-{run}")
        if self._mqtt.username:
            client.username_pw_set(self._mqtt.username, self._password)
        client.on_connect = on_connect
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = on_message
        try:
            client.connect(self._mqtt.host, self._mqtt.port, self._mqtt.keepalive_s)
        except OSError as exc:
            raise DoorError(f"cannot reach the broker at {self._mqtt.host}:{self._mqtt.port}: {exc}") from exc
        client.loop_start()
        try:
            if not connected.wait(10) or refused:
                raise DoorError(f"the broker did not accept the platform's door client: {refused or 'no answer'}")
            if not subscribed.wait(10):
                raise DoorError("the broker did not confirm the reply subscription")
            for a in asks:
                who = str(a.gateway)
                reply_topic = topics[a.gateway.district]
                correlation = os.urandom(16)
                pending = seal_request(self._keys.principal(a.officer), self._keys.key(a.officer), dict(a.query),
                                       reply_topic, correlation, gateways={who: a.door})
                with lock:
                    sent[correlation] = _Sent(pending, who, reply_topic)
                topic = f"{prefix}/{a.gateway.district}/{a.gateway.community}/{a.gateway.gateway}/query/request"
                client.publish(topic, pending.payload, qos=1,
                               properties=request_properties(reply_topic, correlation)).wait_for_publish(10)
            done.wait(self._cfg.timeout_s)
        finally:
            client.disconnect()
            client.loop_stop()
        deadline_note = f"no reply within {self._cfg.timeout_s:g} s"
        with lock:
            return {e.who: e.answer or DoorAnswer(e.who, "timeout", error=deadline_note) for e in sent.values()}


def _open(entry: _Sent, payload: bytes, correlation: bytes) -> DoorAnswer:
    try:
        reply = open_reply(entry.pending, payload, entry.reply_topic, correlation)
    except ReplyError as exc:
        clear = _clear_refusal(payload)
        if clear is not None and clear == entry.who:
            # The door's one answer to a request it could not authenticate: it names no reason.
            return DoorAnswer(entry.who, "unauthenticated", error="the gateway did not accept the request "
                              "(is this platform's principal and verify_key in its tokens file?)")
        return DoorAnswer(entry.who, "unreadable", error=str(exc))
    status = reply.get("status")
    if status == "ok":
        return DoorAnswer(entry.who, "ok", reply)
    error = reply.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return DoorAnswer(entry.who, "refused", reply, str(message or status))


def _clear_refusal(payload: bytes) -> str | None:
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    if isinstance(obj, dict) and obj.get("status") == "unauthenticated" and isinstance(obj.get("gateway"), str):
        return str(obj["gateway"])
    return None
