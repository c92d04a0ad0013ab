"""Schema-valid event payloads for simulated gateways (tests, the load generator, the benchmark).

They are built the way a gateway builds them (`edge.events.to_wire` field set, key-sorted compact
JSON) and validated against the same schema, so the platform cannot tell them from real ones.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
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


_SLOT = re.compile(r"@@(event_id|ts|seq|ref|randomised)@@")
_TEMPLATED = ("face_passage", "plate_passage", "card_swipe", "device_aggregate")

EventMaker = Callable[[int, float], tuple[str, bytes]]
"""(seq, time) -> (event_id, payload): one source's next event, encoded."""


def event_maker(district: str, community: str, gateway: str, source: str, boot: int) -> EventMaker:
    """A fast `payload(event(...))` for one source: the same bytes, from a pre-encoded template.

    A load generator builds thousands of events a second, each a dict (~14 µs) then sorted compact
    JSON (~11 µs), on the machine whose workers it loads. Only the event id, seq, ts, the subject's
    random ref and the aggregate's count change from one event of a source to the next, so the
    key-sorted encoding of one sample, split at those values, is filled in per event. The first
    payload is validated against the schema; tests/district/test_simulate.py checks that every kind's
    payload is the canonical encoding of an event `event()` could have made.
    """
    sample = event(district, community, gateway, source, boot, 1)
    kind = str(sample["kind"])
    if kind not in _TEMPLATED:  # kinds the simulated sources do not use: the slow, general path
        def general(seq: int, now: float) -> tuple[str, bytes]:
            obj = event(district, community, gateway, source, boot, seq, ts=now)
            return str(obj["event_id"]), encode(obj)
        return general
    sample.update(event_id="@@event_id@@", ts="@@ts@@", seq="@@seq@@")
    if "subject" in sample:
        sample["subject"]["ref"] = "@@ref@@"
    if kind == "device_aggregate":
        sample["attrs"]["randomised"] = "@@randomised@@"
    # The ids (^[A-Za-z0-9_.-]+$) and the constant attrs cannot hold "@@"; the integers lose their quotes.
    text = encode(sample).decode().replace('"@@seq@@"', "@@seq@@").replace('"@@randomised@@"', "@@randomised@@")
    parts = _SLOT.split(text)
    literals = [p.encode() for p in parts[0::2]]
    slots = parts[1::2]
    second = [-1, ""]  # the ts text up to the second, recomputed once a second

    def make(seq: int, now: float) -> tuple[str, bytes]:
        ms = int(now * 1000)
        event_id = str(uuid7(ms))
        if ms // 1000 != second[0]:
            second[0], second[1] = ms // 1000, iso_ms(ms // 1000)[:-4]
        out = [literals[0]]
        for slot, lit in zip(slots, literals[1:], strict=True):
            if slot == "event_id":
                value = event_id
            elif slot == "ts":
                value = f"{second[1]}{ms % 1000:03d}Z"
            elif slot == "seq":
                value = str(seq)
            elif slot == "ref":
                value = random_ref()
            else:
                value = str(seq % 50)
            out.append(value.encode())
            out.append(lit)
        return event_id, b"".join(out)

    validate(json.loads(make(1, time.time())[1]))  # the template makes schema-valid events
    return make
