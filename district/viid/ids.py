"""Stable identifiers: 20-digit device codes, 41-digit object ids, 33-digit ids and local times.

Device codes follow GB/T 28181 Annex D (as GA/T 1400 uses them): positions 1-8 the centre code
(province, city, county, unit), 9-10 the industry, 11-13 the type code, 14 the network, 15-20 a
serial. The type code says what a thing is, so a code in the wrong place (a camera's code given as
the platform's) is a configuration error, not something the upper platform should discover.

Object ids are the 41-digit layout of GA/T 1400 (20-digit device code, a 2-digit sub-type, the
14-digit local time, a 5-digit serial), derived from an event id alone: the same event always gives
the same id, so a retry, a restart or a second bridge reuses it and the upper platform can dedupe.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from enum import Enum
from zoneinfo import ZoneInfo

from edge.compat import UTC

LOCAL_FORMAT = "%Y%m%d%H%M%S"


class DeviceRole(Enum):
    """Where a code is used, which fixes the type codes (positions 11-13) it may carry."""

    PLATFORM = "platform"  # our own id and the upper platform's: 200-299 platform devices, 500-599 (视图库 503 …)
    APE = "ape"  # a capture device: 111-199 front-end devices (131 camera, 132 IPC, …)
    TOLLGATE = "tollgate"  # a tollgate (卡口): a front-end position, 111-199 as well


_TYPE_RANGES: dict[DeviceRole, tuple[range, ...]] = {
    DeviceRole.PLATFORM: (range(200, 300), range(500, 600)),
    DeviceRole.APE: (range(111, 200),),
    DeviceRole.TOLLGATE: (range(111, 200),),
}


class DeviceCodeError(ValueError):
    """A device code that is not 20 digits, or whose province or type code is impossible."""


def validate_device_code(code: str, role: DeviceRole) -> str:
    """Return `code` if it is a valid 20-digit code for `role`; raise DeviceCodeError saying why not."""
    if len(code) != 20 or not code.isascii() or not code.isdigit():
        raise DeviceCodeError(f"device code {code!r} must be 20 digits")
    province = int(code[0:2])
    if not 11 <= province <= 82:
        raise DeviceCodeError(f"device code {code}: positions 1-2 ({code[0:2]}) are not a province code (11-82)")
    type_code = int(code[10:13])
    if not any(type_code in r for r in _TYPE_RANGES[role]):
        allowed = ", ".join(f"{r.start}-{r.stop - 1}" for r in _TYPE_RANGES[role])
        raise DeviceCodeError(f"device code {code}: type code {code[10:13]} (positions 11-13) is not a "
                              f"{role.value} type ({allowed})")
    return code


class SubType:
    """The 2-digit sub-type in the ids this bridge makes (ours, documented in docs/district.md)."""

    PASSAGE = "02"  # the passage a watch-hit matched (the object the gateway would build for a case)
    SUBSCRIBE_NOTIFICATION = "03"
    DISPOSITION_NOTIFICATION = "04"


def local_time(ts: datetime, tz: ZoneInfo) -> str:
    """`yyyyMMddHHmmss` in the configured zone (GA/T 1400 times carry no zone)."""
    if ts.tzinfo is None:
        raise ValueError("a naive datetime has no defined local time")
    return ts.astimezone(tz).strftime(LOCAL_FORMAT)


def parse_local_time(text: str, tz: ZoneInfo) -> datetime:
    """The instant a `yyyyMMddHHmmss` string names in zone `tz`."""
    if len(text) != 14 or not text.isdigit():
        raise ValueError(f"{text!r} is not yyyyMMddHHmmss")
    return datetime.strptime(text, LOCAL_FORMAT).replace(tzinfo=tz)


def uuid7_time(event_id: uuid.UUID) -> datetime:
    """The millisecond timestamp a UUIDv7 starts with."""
    if event_id.version != 7:
        raise ValueError(f"{event_id} is not a UUIDv7")
    return datetime.fromtimestamp((event_id.int >> 80) / 1000, UTC)


def serial_for(event_id: uuid.UUID, bump: int = 0) -> int:
    """A 5-digit serial from an event id: its millisecond (3 digits) and 2 digits of its hash.

    Two events of one device in the same second differ in the serial unless they share the
    millisecond and the hash digits (1 in 100 then); the outbox catches that with its unique index
    and asks again with `bump`, so the id stays a pure function of (event, bump).
    """
    ms = (event_id.int >> 80) % 1000
    h = int.from_bytes(hashlib.sha256(event_id.bytes).digest()[:4], "big") % 100
    return (ms * 100 + h + bump) % 100_000


def object_id(device_code: str, sub_type: str, event_id: uuid.UUID, tz: ZoneInfo, bump: int = 0) -> str:
    """The 41-digit id of the object an event stands for: device, sub-type, local time, serial."""
    if len(sub_type) != 2 or not sub_type.isdigit():
        raise ValueError(f"sub-type {sub_type!r} must be 2 digits")
    if len(device_code) != 20 or not device_code.isdigit():
        raise DeviceCodeError(f"device code {device_code!r} must be 20 digits")
    out = f"{device_code}{sub_type}{local_time(uuid7_time(event_id), tz)}{serial_for(event_id, bump):05d}"
    assert len(out) == 41
    return out


def sequence_id(device_code: str, sub_type: str, at: datetime, seq: int, tz: ZoneInfo) -> str:
    """A 41-digit id for something with no event behind it (a subscription's report): a stored serial."""
    return f"{device_code}{sub_type}{local_time(at, tz)}{seq % 100_000:05d}"


def disposition_id(org_code: str, list_id: str) -> str:
    """A stable 33-digit DispositionID for a watch-list the upper platform gave no id for.

    12-digit organisation code, sub-type 01 (布控), then 19 digits of the list id's hash: the same
    list always maps to the same id, so the upper platform can be told it once.
    """
    digits = int.from_bytes(hashlib.sha256(list_id.encode()).digest()[:8], "big") % 10**19
    return f"{org_code}01{digits:019d}"
