"""What may never leave through the bridge, checked on every finished body before it is sent.

The district holds pseudonyms, not plates or faces, and a pseudonym is not a plate number: putting
one in `PlateNo` would hand the upper platform a stable tracking key it cannot even read. Personal
objects (PersonObject, FaceObject, MotorVehicleObject with its PlateNo, images) may leave only for
an approved case, and then they are built by the gateway that holds the sealed details (its query
door), never here. So on the district side the rule is simple: no personal object, no image, no
pseudonym, no plate-, MAC- or card-shaped value in any field. A body that breaks it is refused
(`GuardRefusedError`), the notification is parked as refused and counted, and nothing is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from edge.errors import PrivacyError

# Keys that carry personal data in GA/T 1400 bodies (objects, lists of them, images, features).
PERSONAL_KEYS = frozenset({
    "PlateNo", "PlateNoAttach", "PersonObject", "PersonObjectList", "PersonListObject", "FaceObject",
    "FaceObjectList", "FaceListObject", "MotorVehicleObject", "MotorVehicleObjectList", "MotorVehicleListObject",
    "NonMotorVehicleObject", "NonMotorVehicleObjectList", "NonMotorVehicleListObject", "SubImageList",
    "SubImageInfoObject", "ImageListObject", "Data", "Feature", "FeatureObject", "IDNumber", "IDType",
    "IdNumber", "MACAddr", "MacAddr", "IMSI", "IMEI", "CardNo",
})

# A keyed pseudonym (128-bit hex) or any longer hex run. Our ids are decimal digits, which are hex
# digits too, so a run must hold a letter to count (an all-digit pseudonym is a 1-in-3-million case).
_PSEUDONYM = re.compile(r"(?i)(?=[0-9a-f]*[a-f])[0-9a-f]{32,}")
_MAC = re.compile(r"(?i)\b[0-9a-f]{2}([:-])(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}\b")
# A mainland plate: province character, letter, 5 or 6 letters/digits (new-energy plates have 6).
_PLATE = re.compile(r"[京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领][A-Z][A-Z0-9]{5,6}")
# A UUID (an event id or a random reference): not personal, but it joins our records to theirs.
_UUID = re.compile(r"(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class GuardRefusedError(PrivacyError):
    """A body that would carry personal data or an identifier-shaped value; `reason` says which rule."""

    def __init__(self, reason: str, where: str) -> None:
        super().__init__(f"refused to send: {reason} at {where}")
        self.reason = reason
        self.where = where


def _walk(node: Any, path: str) -> Iterator[tuple[str, str | None, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield f"{path}.{k}", str(k), v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield f"{path}[{i}]", None, v
            yield from _walk(v, f"{path}[{i}]")


def check_outgoing(body: Mapping[str, Any]) -> None:
    """Raise GuardRefusedError if `body` holds a personal key or an identifier-shaped string.

    The error names the rule and the JSON path, never the value.
    """
    for where, key, value in _walk(body, "$"):
        if key is not None and key in PERSONAL_KEYS:
            raise GuardRefusedError(f"personal field {key}", where)
        if isinstance(value, str):
            if _PSEUDONYM.search(value):
                raise GuardRefusedError("a pseudonym or hex identifier", where)
            if _MAC.search(value):
                raise GuardRefusedError("a MAC address", where)
            if _PLATE.search(value):
                raise GuardRefusedError("a plate number", where)
            if _UUID.search(value):
                raise GuardRefusedError("an event id or reference", where)
