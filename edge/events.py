"""Event wire format: topics, JSON encoding and schema validation (schema version 1)."""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any

import fastjsonschema

from edge.compat import UTC
from edge.errors import PrivacyError
from edge.types import Event, EventKind, Origin

SCHEMA_VERSION = 1
SCHEMA_FILE = "event-v1.schema.json"

# Lower numbers are dropped first when the outbox quota is reached (see edge.outbox).
PRIORITY: dict[EventKind, int] = {
    EventKind.DEVICE_AGGREGATE: 0,
    EventKind.DEVICE_SEEN: 1,
    EventKind.FACE_PASSAGE: 2,
    EventKind.PLATE_PASSAGE: 3,
    EventKind.CARD_SWIPE: 3,
    EventKind.PASSAGE: 4,
    EventKind.ALARM: 5,
}


def base_topic(origin: Origin, prefix: str = "edgegw") -> str:
    """`{prefix}/{district}/{community}/{gateway}`."""
    return f"{prefix}/{origin.district}/{origin.community}/{origin.gateway}"


def event_topic(origin: Origin, kind: EventKind, prefix: str = "edgegw") -> str:
    """The topic an event of `kind` is published on."""
    return f"{base_topic(origin, prefix)}/events/{kind.value}"


def status_topic(origin: Origin, prefix: str = "edgegw") -> str:
    """The retained status topic (with the last will)."""
    return f"{base_topic(origin, prefix)}/status"


def iso_ms(ts: float) -> str:
    """UTC ISO-8601 with milliseconds and a Z suffix."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def to_wire(event: Event, seq: int, boot: int) -> dict[str, Any]:
    """The JSON object for `event` with its committed sequence number."""
    obj: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event.event_id,
        "seq": seq,
        "boot": boot,
        "district": event.origin.district,
        "community": event.origin.community,
        "gateway": event.origin.gateway,
        "source": event.source_id,
        "kind": event.kind.value,
        "ts": iso_ms(event.ts),
        "attrs": dict(event.attrs),
    }
    if event.subject is not None:
        subj = {k: v for k, v in (("type", event.subject.type), ("pseudonym", event.subject.pseudonym),
                                   ("key_id", event.subject.key_id), ("ref", event.subject.ref)) if v is not None}
        obj["subject"] = subj
    if event.links:
        obj["links"] = list(event.links)
    return obj


def encode(obj: dict[str, Any]) -> bytes:
    """Compact, key-sorted UTF-8 JSON (stable bytes for the same event)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def schema() -> dict[str, Any]:
    """The event JSON Schema shipped with the package."""
    text = resources.files("edge.schema").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@lru_cache(maxsize=1)
def _validator() -> Any:
    # fastjsonschema compiles the schema to Python once: ~40 µs an event here against ~700 µs for
    # jsonschema's interpreter, which dominated the commit path under cProfile.
    return fastjsonschema.compile(schema())


def compile_schema() -> None:
    """Compile the schema validator now (once per process) rather than on the first event.

    Compiling costs about 40 ms of CPU: paid at start it stays off the first passage's commit.
    """
    _validator()


def validate(obj: dict[str, Any]) -> None:
    """Raise PrivacyError if `obj` does not match the schema (unknown attributes included).

    The schema forbids undeclared attributes, so validation is also the last guard against a raw
    identifier slipping into an event through a free-form field. The message names the path only.
    """
    try:
        _validator()(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        # Path and rule only: the message itself may quote the offending value.
        where = "/".join(str(p) for p in exc.path[1:]) or "(root)"
        raise PrivacyError(f"event of kind {obj.get('kind')!r} fails schema v{SCHEMA_VERSION} at {where}: "
                           f"{exc.rule} check failed") from None
