"""Schema-valid event payloads for simulated gateways (tests, the load generator, the benchmark).

They are built the way a gateway builds them (`edge.events.to_wire` field set, key-sorted compact
JSON) and validated against the same schema, so the platform cannot tell them from real ones.
"""

from __future__ import annotations

import time
from typing import Any

from edge.events import encode, iso_ms, validate
from edge.ids import random_ref, uuid7
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import IdKind

_SOURCES = ("cam1", "cam2", "reader1", "sniffer1")


def event(district: str, community: str, gateway: str, source: str, boot: int, seq: int, *,  # noqa: PLR0917
          ts: float | None = None, kind: str | None = None, subject: dict[str, str] | None = None) -> dict[str, Any]:
    """One event object; the kind follows the source's role unless given."""
    now = time.time() if ts is None else ts
    kind = kind or {"cam1": "face_passage", "cam2": "plate_passage", "reader1": "card_swipe"}.get(source,
                                                                                                  "device_aggregate")
    attrs: dict[str, Any]
    if kind == "face_passage":
        attrs = {"matched": False, "quality": 0.5, "frames": 4, "duration_s": 0.5}
        subject = subject or {"type": "unknown_face", "ref": random_ref()}
    elif kind == "plate_passage":
        attrs = {"confidence": 0.97, "colour": "blue", "plate_type": "blue_single", "local": True, "frames": 6,
                 "duration_s": 2.0, "direction": "in"}
        subject = subject or {"type": "unread_plate", "ref": random_ref()}
    elif kind == "card_swipe":
        attrs = {"format": "rdm6300", "direction": "in"}
        subject = subject or {"type": "unknown", "ref": random_ref()}
    elif kind == "device_seen":
        attrs = {"first_seen": now - 5, "last_seen": now, "sightings": 3}
        subject = subject or {"type": "unknown", "ref": random_ref()}
    else:
        attrs = {"window_s": 60, "randomised": seq % 50, "distinct": 3}
        subject = None
    obj: dict[str, Any] = {
        "schema_version": 1, "event_id": str(uuid7(int(now * 1000))), "seq": seq, "boot": boot,
        "district": district, "community": community, "gateway": gateway, "source": source, "kind": kind,
        "ts": iso_ms(now), "attrs": attrs,
    }
    if subject is not None:
        obj["subject"] = subject
    return obj


def pseudonymous_subject(pseudonymiser: Pseudonymiser, kind: IdKind, value: str, ts: float) -> dict[str, str]:
    """The subject a gateway publishes for a raw plate, card or MAC seen at `ts`."""
    pseudonym, key_id = pseudonymiser.pseudonym_at(kind, value, ts)
    return {"type": kind.value, "pseudonym": pseudonym, "key_id": key_id}


def payload(obj: dict[str, Any]) -> bytes:
    """Validate and encode like a gateway (stable bytes for the same event)."""
    validate(obj)
    return encode(obj)


def sources(n: int) -> tuple[str, ...]:
    """The first `n` simulated source ids (a face camera, a plate camera, a reader, a sniffer, ...)."""
    return tuple(_SOURCES[i] if i < len(_SOURCES) else f"src{i}" for i in range(n))
