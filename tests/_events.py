"""Valid sample observations of every event kind, shared by schema, outbox and uplink tests."""

from __future__ import annotations

import os

from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Event, EventKind, IdKind, Observation, Origin, RawIdentifier

ORIGIN = Origin("dl-district", "c0001", "gw01")
RAW = {
    IdKind.PLATE: "辽B·12345",
    IdKind.CARD: "04A1B2C3D4",
    IdKind.MAC: "3C:22:FB:12:34:56",
    IdKind.RESIDENT: "resident-0042",
}


def observations(ts: float = 1_764_000_000.0, source: str = "cam1") -> list[Observation]:
    """One observation of each event kind."""
    return [
        Observation(EventKind.FACE_PASSAGE, source, ts, subject=RawIdentifier(IdKind.RESIDENT, RAW[IdKind.RESIDENT]),
                    attrs={"matched": True, "confidence": 0.71, "threshold": 0.363, "quality": 0.8, "frames": 9,
                           "embedded": 3, "duration_s": 1.2, "direction": "in"}),
        Observation(EventKind.FACE_PASSAGE, source, ts, subject_ref=os.urandom(12).hex(),
                    attrs={"matched": False, "quality": 0.4, "frames": 4, "duration_s": 0.5}),
        Observation(EventKind.PLATE_PASSAGE, source, ts, subject=RawIdentifier(IdKind.PLATE, RAW[IdKind.PLATE]),
                    attrs={"confidence": 0.97, "colour": "blue", "plate_type": "blue_single", "local": True,
                           "frames": 6, "reads": 5, "duration_s": 2.0, "direction": "out"}),
        Observation(EventKind.CARD_SWIPE, "reader1", ts, subject=RawIdentifier(IdKind.CARD, RAW[IdKind.CARD]),
                    attrs={"format": "rdm6300", "direction": "in"}),
        Observation(EventKind.DEVICE_SEEN, "sniffer1", ts, subject=RawIdentifier(IdKind.MAC, RAW[IdKind.MAC]),
                    attrs={"first_seen": ts - 30, "last_seen": ts, "sightings": 4, "rssi_min": -80, "rssi_max": -60,
                           "rssi_mean": -70.5, "channel": 6}),
        Observation(EventKind.DEVICE_AGGREGATE, "sniffer1", ts,
                    attrs={"window_s": 60, "randomised": 12, "distinct": 3}),
        Observation(EventKind.ALARM, "outbox", ts, attrs={"code": "outbox_quota", "message": "dropped events",
                                                          "count": 3, "severity": "warning"}),
    ]


def events(ts: float = 1_764_000_000.0, key: bytes = b"k" * 32, source: str = "cam1") -> list[Event]:
    """Events for `observations()`, through the real privacy boundary."""
    boundary = PrivacyBoundary(Pseudonymiser(key), ORIGIN)
    out = [boundary.to_event(o) for o in observations(ts, source)]
    out.append(boundary.to_event(Observation(EventKind.PASSAGE, "gate1", ts, attrs={
        "members": 2, "face": True, "plate": True, "devices": 0, "window_s": 5.0, "direction": "in"}),
        links=(out[0].event_id, out[2].event_id)))
    return out


def assert_no_raw_identifiers(payloads: list[bytes]) -> None:
    """Fail if any payload contains a raw identifier in any common spelling."""
    forms: list[str] = []
    for value in RAW.values():
        forms += [value, value.replace("·", ""), value.replace(":", "").lower(), value.lower(), value.replace(":", "")]
    for payload in payloads:
        text = payload.decode("utf-8", "replace")
        for form in forms:
            assert form not in text, "a raw identifier was published"
