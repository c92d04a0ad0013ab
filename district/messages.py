"""Turn one broker message into a row to store or a reject with its reason (pure: no I/O).

A message is accepted only if it is small enough, is JSON, matches the event schema, and names in
its body the same district, community, gateway and kind as the topic it arrived on: the broker's
ACL lets a gateway publish only under its own base, so a payload that claims another gateway's id
is a forgery, not a routing accident.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from district.validation import validate_event
from edge.errors import PrivacyError

_MAX_STATUS_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class GatewayKey:
    """A gateway, named by its topic path."""

    district: str
    community: str
    gateway: str

    def base(self, prefix: str) -> str:
        """`{prefix}/{district}/{community}/{gateway}`."""
        return f"{prefix}/{self.district}/{self.community}/{self.gateway}"


@dataclass(frozen=True, slots=True)
class EventRow:
    """A valid event, with the columns the events table indexes."""

    event_id: uuid.UUID
    ts: datetime
    gw: GatewayKey
    source: str
    boot: int
    seq: int
    kind: str
    subject_type: str | None
    subject_pseudonym: str | None
    key_id: str | None
    payload: str


@dataclass(frozen=True, slots=True)
class StatusRow:
    """A gateway's status message: the fields the history keeps in columns, and the whole body."""

    gw: GatewayKey
    online: bool
    boot: int | None
    outbox_depth: int | None
    oldest_pending_age_s: float | None
    alarms: tuple[str, ...]
    models: str | None
    audit_seq: int | None
    audit_hash: str | None
    floors: dict[str, int]
    last: dict[str, int]
    body: str


@dataclass(frozen=True, slots=True)
class Reject:
    """A message that is acknowledged but not stored; `reason` never quotes the payload."""

    topic: str
    reason: str
    size: int
    payload_sha256: str


Parsed = EventRow | StatusRow | Reject


def _reject(topic: str, payload: bytes, reason: str) -> Reject:
    return Reject(topic[:512], reason, len(payload), hashlib.sha256(payload).hexdigest())


def split_topic(topic: str, prefix: str) -> tuple[GatewayKey, str, str | None] | None:
    """(gateway, "events" | "status", kind) for `{prefix}/d/c/g/events/{kind}` or `.../status`, else None."""
    parts = topic.split("/")
    if len(parts) == 6 and parts[0] == prefix and parts[4] == "events":
        return GatewayKey(parts[1], parts[2], parts[3]), "events", parts[5]
    if len(parts) == 5 and parts[0] == prefix and parts[4] == "status":
        return GatewayKey(parts[1], parts[2], parts[3]), "status", None
    return None


def _ts(text: str) -> datetime:
    # The schema pinned the form (YYYY-MM-DDTHH:MM:SS.mmmZ); fromisoformat reads it ~50x faster than strptime.
    return datetime.fromisoformat(text)


def parse(topic: str, payload: bytes, *, prefix: str = "edgegw", max_bytes: int = 65536) -> Parsed:
    """Classify one message; never raises on bad input."""
    where = split_topic(topic, prefix)
    if where is None:
        return _reject(topic, payload, "topic is neither .../events/{kind} nor .../status under the prefix")
    gw, what, kind = where
    if what == "status":
        return _parse_status(gw, topic, payload)
    if len(payload) > max_bytes:
        return _reject(topic, payload, f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte limit")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return _reject(topic, payload, "payload is not valid UTF-8 JSON")
    if not isinstance(body, dict):
        return _reject(topic, payload, "payload is not a JSON object")
    if b"\\u" in payload and not _storable(body):
        return _reject(topic, payload, "payload holds a NUL or an unpaired surrogate, which jsonb cannot store")
    try:
        validate_event(body)
    except PrivacyError as exc:
        return _reject(topic, payload, str(exc))
    claimed = GatewayKey(body["district"], body["community"], body["gateway"])
    if claimed != gw:
        return _reject(topic, payload, "payload names another gateway than its topic (forged or misrouted)")
    if body["kind"] != kind:
        return _reject(topic, payload, "payload kind differs from the topic's kind")
    subject = body.get("subject") or {}
    return EventRow(
        event_id=uuid.UUID(body["event_id"]), ts=_ts(body["ts"]), gw=gw, source=body["source"],
        boot=int(body["boot"]), seq=int(body["seq"]), kind=body["kind"], subject_type=subject.get("type"),
        subject_pseudonym=subject.get("pseudonym"), key_id=subject.get("key_id"),
        payload=payload.decode("utf-8"))


def _storable(body: Any) -> bool:
    """False if jsonb would refuse the text: a NUL character or an unpaired UTF-16 surrogate."""
    try:
        text = json.dumps(body, ensure_ascii=False)
        text.encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        return False
    # json.dumps escapes control characters even with ensure_ascii=False, so NUL shows as \\u0000.
    return "\\u0000" not in text


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int_map(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _parse_status(gw: GatewayKey, topic: str, payload: bytes) -> Parsed:
    if len(payload) > _MAX_STATUS_BYTES:
        return _reject(topic, payload, f"status of {len(payload)} bytes exceeds the {_MAX_STATUS_BYTES}-byte limit")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return _reject(topic, payload, "status is not valid UTF-8 JSON")
    if not isinstance(body, dict) or not isinstance(body.get("online"), bool):
        return _reject(topic, payload, "status is not an object with a boolean 'online'")
    if b"\\u" in payload and not _storable(body):
        return _reject(topic, payload, "status holds a NUL or an unpaired surrogate, which jsonb cannot store")
    seq = _obj(body.get("seq"))
    capture = _obj(_obj(body.get("components")).get("capture"))
    head = body.get("audit_head") or capture.get("audit_head")
    audit_seq = audit_hash = None
    if isinstance(head, dict) and isinstance(head.get("hash"), str):
        audit_seq, audit_hash = _opt_int(head.get("seq")), head["hash"][:64]
    models = body.get("models") or capture.get("models")
    age = body.get("oldest_pending_age_s")
    alarms_raw = body.get("alarms")
    alarms: list[Any] = alarms_raw if isinstance(alarms_raw, list) else []
    return StatusRow(
        gw=gw, online=body["online"], boot=_opt_int(body.get("boot")), outbox_depth=_opt_int(body.get("outbox_depth")),
        oldest_pending_age_s=float(age) if isinstance(age, int | float) and math.isfinite(age) else None,
        alarms=tuple(str(a)[:64] for a in alarms[:32]),
        models=json.dumps(models, sort_keys=True) if isinstance(models, dict) else None,
        audit_seq=audit_seq, audit_hash=audit_hash, floors=_int_map(seq.get("floor")), last=_int_map(seq.get("last")),
        body=payload.decode("utf-8"))
