"""The event schema: every kind validates; undeclared or wrong attributes are refused."""

from __future__ import annotations

import json

import pytest

from edge.errors import PrivacyError
from edge.events import encode, event_topic, iso_ms, status_topic, to_wire, validate
from edge.types import EventKind, Observation
from tests._events import ORIGIN, assert_no_raw_identifiers, events


def test_every_kind_validates_and_carries_no_raw_identifier() -> None:
    evs = events()
    assert {e.kind for e in evs} == set(EventKind)
    payloads = []
    for i, ev in enumerate(evs, start=1):
        wire = to_wire(ev, i, 1)
        validate(wire)
        payloads.append(encode(wire))
    assert_no_raw_identifiers(payloads)


def test_wire_format_fields() -> None:
    ev = events()[2]
    wire = json.loads(encode(to_wire(ev, 7, 123)))
    assert wire["schema_version"] == 1 and wire["seq"] == 7 and wire["boot"] == 123
    assert wire["ts"] == "2025-11-24T16:00:00.000Z"
    assert wire["subject"]["type"] == "plate" and len(wire["subject"]["pseudonym"]) == 32
    assert event_topic(ORIGIN, ev.kind) == "edgegw/dl-district/c0001/gw01/events/plate_passage"
    assert status_topic(ORIGIN) == "edgegw/dl-district/c0001/gw01/status"
    assert iso_ms(1.2345) == "1970-01-01T00:00:01.234Z"


def test_undeclared_attribute_is_refused() -> None:
    ev = events()[3]
    wire = to_wire(ev, 1, 1)
    wire["attrs"]["card_number"] = "04A1B2C3D4"
    with pytest.raises(PrivacyError, match="card_swipe") as err:
        validate(wire)
    assert "04A1B2C3D4" not in str(err.value)


def test_wrong_types_and_missing_subject_are_refused() -> None:
    ev = events()[2]
    wire = to_wire(ev, 1, 1)
    wire["attrs"]["confidence"] = 3
    with pytest.raises(PrivacyError):
        validate(wire)
    wire = to_wire(ev, 1, 1)
    del wire["subject"]
    with pytest.raises(PrivacyError):
        validate(wire)


def test_aggregate_attributes_are_numbers_only() -> None:
    from edge.privacy.boundary import PrivacyBoundary
    from edge.privacy.pseudonym import Pseudonymiser

    b = PrivacyBoundary(Pseudonymiser(b"k" * 32), ORIGIN)
    ev = b.to_event(Observation(EventKind.DEVICE_AGGREGATE, "s", 1.0, attrs={"mac": "3c:22:fb:12:34:56"}))
    with pytest.raises(PrivacyError):
        validate(to_wire(ev, 1, 1))
