"""MQTT 5 request/response: the district platform fans a query out to many gateways.

The platform publishes a request with a Response Topic and Correlation Data (MQTT 5 properties) to
`{prefix}/{district}/query/request` (every gateway of the district) or to one gateway's
`{prefix}/{district}/{community}/{gateway}/query/request`. The payload is JSON (version 2):

    {"v": 2, "principal": NAME, "ts": SECONDS, "nonce": HEX32, "reply_key": B64(X25519 public),
     "keys": {"district/community/gateway": B64(wrapped content key), ...}, "body": B64, "sig": B64}

- Signed: Ed25519 over the canonical header (everything but `sig`) with the Response Topic and the
  Correlation Data. Gateways hold only the principal's public key (`verify_key` in the tokens
  file); nothing on a gateway can forge a request (issue 12: the shared platform token was on every
  gateway).
- Confidential: `body` (the query, as the HTTP API takes it, plus `kind`) is AES-256-GCM under a
  random content key, wrapped for each addressed gateway with X25519(ephemeral `reply_key`,
  gateway door key) + HKDF-SHA256 + AES-GCM. The broker never sees the plate or photo asked about.
- Fresh: `max_skew_s`, and nonces are kept in a SQLite window that survives restarts.
- Bound to a fixed reply namespace: the Response Topic must be
  `{prefix}/{district}/query/reply/{ID}`, so no broker client can make a gateway publish on
  another topic (its own event topics included).
- Replies are encrypted to the requester: AES-GCM under a key derived from the same X25519 secret
  (the gateway's door key with the request's ephemeral key), so only the requester can read them and
  only the addressed gateway can have written them. An unauthenticated request gets one generic
  answer in clear ("not accepted"), naming no principal and no reason.

Replies never carry raw identifiers whatever the principal's role (`CHANNEL_VIEW[MQTT]` is
PSEUDONYMS); a last check refuses to publish a reply that has any.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import queue
import re
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
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
from edge.sqlite import connect, transaction
from edge.types import Origin
from edge.uplink.config import MqttConfig

log = logging.getLogger(__name__)

VERSION = 2
_SALT = b"edgegw/mqtt-rr/v2"
_MAX_NONCES = 100_000
_MAX_TOPIC = 256
_REPLY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
NOT_ACCEPTED = "request not accepted"
"""The one answer to any request that fails authentication: it names no principal and no reason."""


class AuthError(EdgeError):
    """An MQTT request could not be authenticated (unknown principal, bad signature, stale, replayed)."""


class ReplyError(EdgeError):
    """A reply failed to open on the platform side."""


def reply_namespace(prefix: str, district: str) -> str:
    """The only topic tree gateways publish replies under: `{prefix}/{district}/query/reply/`."""
    return f"{prefix}/{district}/query/reply/"


def recipient(origin: Origin) -> str:
    """A gateway's name in a request's `keys` map."""
    return f"{origin.district}/{origin.community}/{origin.gateway}"


def _derive(shared: bytes, purpose: str, who: str, reply_key: bytes) -> bytes:
    info = f"edgegw mqtt-rr v2 {purpose}|{who}|".encode() + reply_key
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(shared)


def _signed_bytes(env: Mapping[str, object], response_topic: str, correlation: bytes) -> bytes:
    header = {k: v for k, v in env.items() if k != "sig"}
    return canonical_json([header, response_topic, correlation.hex()]).encode("utf-8")


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def door_public_key(door_key: bytes) -> X25519PublicKey:
    """The public half of a gateway's door key (32 private bytes, as a key file holds them)."""
    return X25519PrivateKey.from_private_bytes(door_key[:32]).public_key()


def request_topics(origin: Origin, prefix: str, config: MqttQueryConfig) -> list[str]:
    """The topics a gateway takes requests on."""
    if config.topics:
        return list(config.topics)
    return [f"{base_topic(origin, prefix)}/query/request", f"{prefix}/{origin.district}/query/request"]


# -- platform side -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PendingRequest:
    """What the platform keeps to open the replies to one request."""

    payload: bytes
    reply_secret: X25519PrivateKey
    gateways: Mapping[str, X25519PublicKey]


def seal_request(principal: str, signing_key: Ed25519PrivateKey, query: Mapping[str, object],
                 response_topic: str, correlation: bytes, *, gateways: Mapping[str, X25519PublicKey],
                 now: float | None = None) -> PendingRequest:
    """Make a signed request for `gateways` (recipient name → door public key); `query` holds `kind` and fields."""
    ts = round(time.time() if now is None else now, 3)
    nonce = os.urandom(16).hex()
    secret = X25519PrivateKey.generate()
    reply_key = _raw_public(secret.public_key())
    content_key = AESGCM.generate_key(bit_length=256)
    keys: dict[str, str] = {}
    for who, door in sorted(gateways.items()):
        wrap = _derive(secret.exchange(door), "request", who, reply_key)
        iv = os.urandom(12)
        keys[who] = base64.b64encode(iv + AESGCM(wrap).encrypt(iv, content_key, nonce.encode())).decode("ascii")
    iv = os.urandom(12)
    body = iv + AESGCM(content_key).encrypt(iv, json.dumps(dict(query)).encode("utf-8"), nonce.encode())
    env: dict[str, object] = {"v": VERSION, "principal": principal, "ts": ts, "nonce": nonce,
                              "reply_key": base64.b64encode(reply_key).decode("ascii"), "keys": keys,
                              "body": base64.b64encode(body).decode("ascii")}
    env["sig"] = base64.b64encode(signing_key.sign(_signed_bytes(env, response_topic, correlation))).decode("ascii")
    return PendingRequest(json.dumps(env).encode("utf-8"), secret, dict(gateways))


def _publish_props() -> Properties:
    return Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho's Properties is untyped


def request_properties(response_topic: str, correlation: bytes) -> Properties:
    """The MQTT 5 PUBLISH properties a request needs."""
    props = _publish_props()
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    return props


def _reply_aad(who: str, response_topic: str, correlation: bytes) -> bytes:
    return canonical_json([VERSION, who, response_topic, correlation.hex()]).encode("utf-8")


def open_reply(pending: PendingRequest, payload: bytes, response_topic: str, correlation: bytes) -> dict[str, Any]:
    """Decrypt and authenticate one gateway's reply (platform side); ReplyError if it does not open."""
    try:
        outer = json.loads(payload)
        who, box = outer["gateway"], base64.b64decode(outer["box"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ReplyError("not an encrypted reply") from exc
    door = pending.gateways.get(who) if isinstance(who, str) else None
    if door is None or len(box) < 13:
        raise ReplyError("a reply from a gateway the request was not addressed to")
    reply_key = _raw_public(pending.reply_secret.public_key())
    key = _derive(pending.reply_secret.exchange(door), "reply", who, reply_key)
    try:
        plain = AESGCM(key).decrypt(box[:12], box[12:], _reply_aad(who, response_topic, correlation))
    except InvalidTag as exc:
        raise ReplyError("reply does not open (altered, or another request's reply)") from exc
    reply = json.loads(plain)
    if not isinstance(reply, dict):
        raise ReplyError("reply is not a JSON object")
    return reply


# -- gateway side --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OpenedRequest:
    """An authenticated request: who sent it, the key to encrypt the reply under, and the query body."""

    principal: Principal
    reply_key: bytes
    body: dict[str, object]


class NonceWindow:
    """Nonces seen within the replay window, in SQLite: a captured request stays refused after a restart."""

    def __init__(self, path: Path, window_s: float) -> None:
        self._window_s = window_s
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect(path, synchronous="FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, ts REAL NOT NULL)")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the MQTT nonce window {path}: {exc}") from exc

    def claim(self, nonce: str, now: float) -> None:
        """Record `nonce`; AuthError if it was seen within the window (or the window is full)."""
        with self._lock, transaction(self._db, lambda exc: AuthError(f"nonce window: {exc}")):
            self._db.execute("DELETE FROM nonces WHERE ts < ?", (now - self._window_s,))
            if self._db.execute("SELECT 1 FROM nonces WHERE nonce = ?", (nonce,)).fetchone():
                raise AuthError("replayed request (nonce seen before)")
            (count,) = self._db.execute("SELECT count(*) FROM nonces").fetchone()
            if count >= _MAX_NONCES:
                raise AuthError("too many requests in the replay window")
            self._db.execute("INSERT INTO nonces (nonce, ts) VALUES (?, ?)", (nonce, now))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class RequestVerifier:
    """Authenticates request payloads: known signer, fresh, not replayed, addressed to this gateway."""

    def __init__(self, principals: Principals, door_key: bytes, who: str, nonces: NonceWindow, max_skew_s: float,
                 *, clock: Callable[[], float] = time.time) -> None:
        self._principals = principals
        self._door = X25519PrivateKey.from_private_bytes(door_key[:32])
        self._who = who
        self._nonces = nonces
        self._skew = max_skew_s
        self._clock = clock

    def open(self, payload: bytes, response_topic: str, correlation: bytes) -> OpenedRequest:
        """Verify and decrypt a request; AuthError (its message is logged, never sent) if anything is wrong."""
        try:
            env = json.loads(payload)
            name, ts, nonce, sig = env["principal"], env["ts"], env["nonce"], env["sig"]
            reply_key = base64.b64decode(env["reply_key"], validate=True)
            wrapped = env["keys"].get(self._who)
            body = base64.b64decode(env["body"], validate=True)
            signature = base64.b64decode(sig, validate=True)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise AuthError("malformed request envelope") from exc
        if env.get("v") != VERSION or not isinstance(name, str) or not isinstance(nonce, str) \
                or not _NONCE_RE.match(nonce) or isinstance(ts, bool) or not isinstance(ts, int | float) \
                or len(reply_key) != 32:
            raise AuthError("malformed request envelope")
        found = self._principals.signer(name)
        if found is None:
            raise AuthError("unknown signer")
        principal, verify_key = found
        try:
            verify_key.verify(signature, _signed_bytes(env, response_topic, correlation))
        except InvalidSignature as exc:
            raise AuthError("request signature does not verify") from exc
        now = self._clock()
        if abs(now - float(ts)) > self._skew:
            raise AuthError(f"request time is more than {self._skew:g} s from the gateway clock")
        if not isinstance(wrapped, str):
            raise AuthError("request not addressed to this gateway")
        try:
            shared = self._door.exchange(X25519PublicKey.from_public_bytes(reply_key))
            blob = base64.b64decode(wrapped, validate=True)
            content_key = AESGCM(_derive(shared, "request", self._who, reply_key)).decrypt(
                blob[:12], blob[12:], nonce.encode())
            plain = AESGCM(content_key).decrypt(body[:12], body[12:], nonce.encode())
            query = json.loads(plain)
        except (ValueError, InvalidTag, binascii.Error) as exc:
            raise AuthError("request does not open with this gateway's door key") from exc
        if not isinstance(query, dict):
            raise AuthError("request body is not a JSON object")
        # Claimed after the signature so a forger cannot burn a legitimate nonce.
        self._nonces.claim(nonce, now)
        return OpenedRequest(principal, _derive(shared, "reply", self._who, reply_key), query)


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
        door_key: bytes,
        nonce_db: Path,
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
        self._who = recipient(origin)
        self._nonces = NonceWindow(nonce_db, 2 * config.max_skew_s)
        self._verifier = RequestVerifier(principals, door_key, self._who, self._nonces, config.max_skew_s, clock=clock)
        self._reply_ns = reply_namespace(mqtt_cfg.topic_prefix, origin.district)
        self._clock = clock
        self.topics = request_topics(origin, mqtt_cfg.topic_prefix, config)
        self._queue: queue.Queue[tuple[bytes, str, bytes] | None] = queue.Queue(maxsize=64)
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None
        self._subscribed = threading.Event()
        self.answered = 0
        self.rejected = 0
        self._warned_at = -60.0
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

    def alive(self) -> bool:
        """True while the worker thread answers requests (the daemon's watchdog ping depends on it)."""
        return self._worker is not None and self._worker.is_alive()

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
        self._nonces.close()

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
        rest = response_topic.removeprefix(self._reply_ns)
        if rest == response_topic or not _REPLY_ID.match(rest) or len(response_topic) > _MAX_TOPIC:
            # Outside the fixed reply namespace: answering would let any client make us publish anywhere.
            self.rejected += 1
            log.warning("query request with a Response Topic outside %s+; ignored", self._reply_ns)
            return None
        try:
            opened = self._verifier.open(payload, response_topic, correlation)
        except AuthError as exc:
            self.rejected += 1
            # The reason stays in the log; a flood of bad requests logs one warning a minute, not one each.
            now = time.monotonic()
            if now - self._warned_at >= 60.0:
                self._warned_at = now
                log.warning("query request not accepted: %s (%d rejected so far)", exc, self.rejected)
            else:
                log.debug("query request not accepted: %s", exc)
            return json.dumps({"v": VERSION, "gateway": self._who, "status": "unauthenticated",
                               "error": {"code": "unauthenticated", "message": NOT_ACCEPTED}}).encode("utf-8")
        body = dict(opened.body)
        kind_text = body.pop("kind", None)
        reply: dict[str, object] = {"v": VERSION, "district": self._origin.district,
                                    "community": self._origin.community, "gateway": self._origin.gateway,
                                    "ts": round(self._clock(), 3)}
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
        iv = os.urandom(12)
        box = iv + AESGCM(opened.reply_key).encrypt(iv, json.dumps(reply, ensure_ascii=False).encode("utf-8"),
                                                     _reply_aad(self._who, response_topic, correlation))
        self.answered += 1
        return json.dumps({"v": VERSION, "gateway": self._who,
                           "box": base64.b64encode(box).decode("ascii")}).encode("utf-8")


def generate_signing_key() -> tuple[Ed25519PrivateKey, str]:
    """A new Ed25519 signing key for a principal and the hex public key its tokens-file entry names."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, public.hex()
