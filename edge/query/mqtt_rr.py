"""MQTT 5 request/response: the district platform fans a query out to many gateways.

The platform publishes a request with a Response Topic and Correlation Data (MQTT 5 properties) to
`{prefix}/{district}/query/request` (every gateway of the district) or to one gateway's
`{prefix}/{district}/{community}/{gateway}/query/request`. The payload is JSON:

    {"v": 1, "principal": NAME, "ts": SECONDS, "nonce": HEX32, "body": BASE64}

`body` is the query (`{"kind": "plate", "case_id": ..., "officer_id": ..., "from": ..., "to": ...,
"value": ...}`, the same fields as the HTTP API) sealed with AES-256-GCM under a key derived (HKDF)
from the principal's token, with the version, principal, time, nonce, response topic and
correlation data as associated data. So a request is authenticated (only a holder of the token can
make one), confidential (the broker never sees the plate or photo asked about), bound to its reply
address (a replayed request cannot redirect the answer), and fresh (`max_skew_s`, nonces remembered).

The reply goes to the Response Topic with the same Correlation Data, signed with HMAC-SHA256 under
another key derived from the same token. Replies are published, so they never carry raw
identifiers whatever the principal's role (`CHANNEL_VIEW[MQTT]` is PSEUDONYMS); a last check
refuses to publish a reply that has any.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.audit import canonical_json
from edge.errors import ConfigError, EdgeError, PrivacyError
from edge.events import base_topic
from edge.query.config import MqttQueryConfig
from edge.query.model import Channel, Principal, QueryRefusedError
from edge.query.principals import Principals
from edge.query.service import QueryService
from edge.query.wire import WireError, query_kind, refusal_to_json, request_from_json, result_to_json
from edge.sealed import Sealer, SealError
from edge.types import Origin
from edge.uplink.config import MqttConfig

log = logging.getLogger(__name__)

VERSION = 1
_SALT = b"edgegw/mqtt-rr/v1"
_MAX_NONCES = 100_000
_MAX_TOPIC = 256


class AuthError(EdgeError):
    """An MQTT request could not be authenticated (unknown principal, bad seal, stale, replayed)."""


class ReplyError(EdgeError):
    """A reply failed verification on the platform side."""


def _subkey(token: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose).derive(token.encode("utf-8"))


def _request_aad(principal: str, ts: float, nonce: str, response_topic: str, correlation: bytes) -> bytes:
    return canonical_json([VERSION, principal, ts, nonce, response_topic, correlation.hex()]).encode("ascii")


def _reply_mac(token: str, reply: Mapping[str, object], correlation: bytes) -> str:
    body = canonical_json({k: v for k, v in reply.items() if k != "sig"}).encode("ascii")
    return hmac.new(_subkey(token, b"reply"), body + b"\0" + correlation, hashlib.sha256).hexdigest()


def request_topics(origin: Origin, prefix: str, config: MqttQueryConfig) -> list[str]:
    """The topics a gateway takes requests on."""
    if config.topics:
        return list(config.topics)
    return [f"{base_topic(origin, prefix)}/query/request", f"{prefix}/{origin.district}/query/request"]


# -- platform side -------------------------------------------------------------------------------

def seal_request(principal: str, token: str, query: Mapping[str, object], response_topic: str,
                 correlation: bytes, *, now: float | None = None) -> bytes:
    """Make a request payload (what the platform publishes); `query` holds `kind` and the body fields."""
    ts = round(time.time() if now is None else now, 3)
    nonce = os.urandom(16).hex()
    aad = _request_aad(principal, ts, nonce, response_topic, correlation)
    sealed = Sealer(_subkey(token, b"request")).seal(json.dumps(dict(query)).encode("utf-8"), aad)
    return json.dumps({"v": VERSION, "principal": principal, "ts": ts, "nonce": nonce,
                       "body": base64.b64encode(sealed).decode("ascii")}).encode("utf-8")


def _publish_props() -> Properties:
    return Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho's Properties is untyped


def request_properties(response_topic: str, correlation: bytes) -> Properties:
    """The MQTT 5 PUBLISH properties a request needs."""
    props = _publish_props()
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    return props


def open_reply(token: str, payload: bytes, correlation: bytes) -> dict[str, Any]:
    """Check a reply's signature (platform side) and return it; ReplyError if it does not verify."""
    try:
        reply = json.loads(payload)
    except ValueError as exc:
        raise ReplyError("reply is not JSON") from exc
    if not isinstance(reply, dict):
        raise ReplyError("reply is not a JSON object")
    sig = reply.get("sig")
    if not isinstance(sig, str) or not hmac.compare_digest(sig, _reply_mac(token, reply, correlation)):
        raise ReplyError("reply signature does not verify (wrong token, altered, or another request's reply)")
    return reply


# -- gateway side --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OpenedRequest:
    """An authenticated request: who sent it, their token (to sign the reply), and the query body."""

    principal: Principal
    token: str
    body: dict[str, object]


class RequestVerifier:
    """Authenticates request payloads: known principal, fresh, not replayed, seal intact."""

    def __init__(self, principals: Principals, max_skew_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self._principals = principals
        self._skew = max_skew_s
        self._clock = clock
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def open(self, payload: bytes, response_topic: str, correlation: bytes) -> OpenedRequest:
        """Verify and decrypt a request; AuthError (naming no secret) if anything is wrong."""
        try:
            env = json.loads(payload)
            principal_name, ts, nonce, body_b64 = env["principal"], env["ts"], env["nonce"], env["body"]
            version = env["v"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthError("malformed request envelope") from exc
        if version != VERSION:
            raise AuthError(f"unsupported request version {version!r}")
        if not (isinstance(principal_name, str) and isinstance(nonce, str) and isinstance(body_b64, str)
                and isinstance(ts, int | float) and not isinstance(ts, bool)):
            raise AuthError("malformed request envelope")
        found = self._principals.by_name(principal_name)
        if found is None:
            raise AuthError("unknown principal")
        principal, token = found
        now = self._clock()
        if abs(now - float(ts)) > self._skew:
            raise AuthError(f"request time is more than {self._skew:g} s from the gateway clock")
        try:
            blob = base64.b64decode(body_b64, validate=True)
            plain = Sealer(_subkey(token, b"request")).open(
                blob, _request_aad(principal_name, ts, nonce, response_topic, correlation))
            body = json.loads(plain)
        except (binascii.Error, ValueError, SealError) as exc:
            raise AuthError("request seal does not verify") from exc
        if not isinstance(body, dict):
            raise AuthError("request body is not a JSON object")
        with self._lock:
            # Checked after the seal so a forger cannot burn a legitimate nonce.
            if nonce in self._nonces:
                raise AuthError("replayed request (nonce seen before)")
            self._nonces = {n: t for n, t in self._nonces.items() if t >= now - 2 * self._skew}
            if len(self._nonces) >= _MAX_NONCES:
                raise AuthError("too many requests in the replay window")
            self._nonces[nonce] = now
        return OpenedRequest(principal, token, body)


def _assert_publishable(reply: Mapping[str, object]) -> None:
    result = reply.get("result")
    hits = result.get("hits", []) if isinstance(result, dict) else []
    for hit in hits if isinstance(hits, list) else []:
        for member in hit.get("members", []) if isinstance(hit, dict) else []:
            if isinstance(member, dict) and "raw" in member:
                raise PrivacyError("an MQTT reply would carry a raw identifier; not published")


class MqttResponder:
    """Answers query requests from the broker on a worker thread: `start()`, `stop()`, `handle()`."""

    def __init__(
        self,
        service: QueryService,
        principals: Principals,
        mqtt_cfg: MqttConfig,
        config: MqttQueryConfig,
        origin: Origin,
        *,
        password: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mqtt_cfg.protocol != "5":
            raise ConfigError('query.mqtt needs MQTT 5 (Response Topic and Correlation Data); set mqtt.protocol = "5"')
        self._service = service
        self._mqtt = mqtt_cfg
        self._cfg = config
        self._origin = origin
        self._password = password
        self._verifier = RequestVerifier(principals, config.max_skew_s, clock=clock)
        self._clock = clock
        self.topics = request_topics(origin, mqtt_cfg.topic_prefix, config)
        self._queue: queue.Queue[tuple[bytes, str, bytes] | None] = queue.Queue(maxsize=64)
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None
        self._subscribed = threading.Event()
        self.answered = 0
        self.rejected = 0
        self.dropped = 0

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect (reconnecting on its own) and start answering."""
        cid = self._mqtt.client_id or f"edgegw-{self._origin.gateway}-query"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{cid}-rr" if self._mqtt.client_id else cid,
                             protocol=mqtt.MQTTv5)
        if self._mqtt.username:
            client.username_pw_set(self._mqtt.username, self._password)
        tls = self._mqtt.tls
        if tls is not None:
            client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                           certfile=str(tls.cert_file) if tls.cert_file else None,
                           keyfile=str(tls.key_file) if tls.key_file else None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 60)
        self._client = client
        self._worker = threading.Thread(target=self._work, name="query-mqtt", daemon=True)
        self._worker.start()
        client.connect_async(self._mqtt.host, self._mqtt.port, self._mqtt.keepalive_s, clean_start=True)
        client.loop_start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once the request topics are subscribed (tests, start-up checks)."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        """Disconnect and stop the worker."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(10)
            self._worker = None

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("query responder: broker refused the connection: %s", rc)
            return
        client.subscribe([(t, 1) for t in self.topics])
        log.info("query responder subscribed to %d request topic(s)", len(self.topics))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = msg.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        if not isinstance(response_topic, str) or not response_topic:
            self.rejected += 1
            log.warning("query request on %s has no Response Topic; ignored", msg.topic)
            return
        try:
            self._queue.put_nowait((bytes(msg.payload), response_topic, bytes(correlation or b"")))
        except queue.Full:
            self.dropped += 1
            log.warning("query responder is busy; a request was dropped (the platform may retry)")

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            payload, response_topic, correlation = item
            try:
                reply = self.handle(payload, response_topic, correlation)
            except Exception:  # a bad request must not stop the responder
                log.exception("query responder failed on a request")
                continue
            if reply is not None and self._client is not None:
                props = _publish_props()
                props.CorrelationData = correlation
                props.MessageExpiryInterval = self._cfg.reply_expiry_s
                self._client.publish(response_topic, reply, qos=1, properties=props)

    # -- one request ------------------------------------------------------------------------------

    def handle(self, payload: bytes, response_topic: str, correlation: bytes) -> bytes | None:
        """Answer one request: the reply payload to publish, or None if there is nowhere to send it."""
        if not response_topic or len(response_topic) > _MAX_TOPIC or any(c in response_topic for c in "+#\0"):
            self.rejected += 1
            log.warning("query request with an invalid Response Topic; ignored")
            return None
        reply: dict[str, object] = {"v": VERSION, "district": self._origin.district,
                                    "community": self._origin.community, "gateway": self._origin.gateway,
                                    "ts": round(self._clock(), 3)}
        try:
            opened = self._verifier.open(payload, response_topic, correlation)
        except AuthError as exc:
            self.rejected += 1
            log.warning("query request rejected: %s", exc)
            reply.update(status="unauthenticated", error={"code": "unauthenticated", "message": str(exc)})
            return json.dumps(reply).encode("utf-8")
        body = dict(opened.body)
        kind_text = body.pop("kind", None)
        try:
            try:
                if not isinstance(kind_text, str):
                    raise WireError("the request body needs a kind")
                kind = query_kind(kind_text)
                request = request_from_json(kind, body)
            except WireError as exc:
                raise self._service.refuse(opened.principal, str(kind_text), Channel.MQTT, str(exc)) from None
            result = self._service.run(opened.principal, request, Channel.MQTT)
            reply.update(status="ok", result=result_to_json(result))
        except QueryRefusedError as err:
            reply.update(status="refused", **refusal_to_json(err))
        _assert_publishable(reply)
        reply["sig"] = _reply_mac(opened.token, reply, correlation)
        self.answered += 1
        return json.dumps(reply, ensure_ascii=False).encode("utf-8")
