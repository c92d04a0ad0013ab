"""The per-kind compiled schema decides exactly like the gateway's full schema (edge.events.validate)."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from district.messages import _ts
from district.simulate import event
from district.validation import validate_event
from edge.compat import UTC
from edge.errors import PrivacyError
from edge.events import validate

KINDS = ["face_passage", "plate_passage", "card_swipe", "device_seen", "device_aggregate", "passage", "alarm"]


def _base(kind: str) -> dict[str, Any]:
    obj = event("d", "c", "g", "cam1", 1, 1, kind="alarm" if kind in ("passage", "alarm") else kind)
    if kind == "passage":
        obj.update(kind="passage", attrs={"members": 2, "face": True}, links=["x"])
    if kind == "alarm":
        obj["attrs"] = {"code": "outbox_quota", "message": "dropped", "count": 3}
    return obj


def _same(obj: dict[str, Any]) -> bool:
    """Both validators decide alike on `obj`; True if they accept it."""
    def verdict(fn: Any) -> str | None:
        try:
            fn(obj)
        except PrivacyError as exc:
            return str(exc).split(" at ")[1] if " at " in str(exc) else str(exc)
        return None
    full, fast = verdict(validate), verdict(validate_event)
    assert (full is None) == (fast is None), (obj, full, fast)
    return full is None


@pytest.mark.parametrize("kind", KINDS)
def test_valid_events_pass_both(kind: str) -> None:
    obj = _base(kind)
    validate(obj)
    validate_event(obj)


_MUTATIONS = [
    ("attrs", {"plate_text": "x"}), ("subject", {"type": "plate", "pseudonym": "0" * 32}),
    ("subject", {"type": "plate", "ref": "ab" * 8, "key_id": "0123abcd.2026-11"}), ("seq", 0), ("boot", -1),
    ("kind", "nope"), ("ts", "2026-11-01 00:00:00"), ("links", None), ("schema_version", 2), ("gateway", "a/b"),
    ("attrs", {}), ("subject", None), ("extra", 1),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.lists(st.sampled_from(range(len(_MUTATIONS))), max_size=3))
def test_both_validators_decide_alike_on_mutated_events(kind: str, muts: list[int]) -> None:
    obj = copy.deepcopy(_base(kind))
    for i in muts:
        key, value = _MUTATIONS[i]
        if value is None:
            obj.pop(key, None)
        elif key == "attrs" and value:
            obj["attrs"] = {**obj["attrs"], **value}
        else:
            obj[key] = value
    _same(obj)


_SUBJECT_VALUES: dict[str, list[Any]] = {
    "type": ["plate", "unknown_face", "nope", 3], "pseudonym": ["0" * 32, "0" * 31, None],
    "key_id": ["0123456789abcdef.2026-11", "x", 1], "ref": ["ab" * 8, "AB" * 8, []], "extra": ["x"]}


def test_the_subject_rule_decides_like_the_full_schema_for_every_set_of_properties() -> None:
    names = sorted(_SUBJECT_VALUES)
    tried = accepted = 0
    for mask in range(1 << len(names)):
        present = [n for i, n in enumerate(names) if mask >> i & 1]
        # Every combination of the values of the properties present (a few per property).
        combos: list[dict[str, Any]] = [{}]
        for n in present:
            combos = [{**c, n: v} for c in combos for v in _SUBJECT_VALUES[n]]
        for subject in combos:
            for kind in ("face_passage", "card_swipe"):
                obj = _base(kind)
                obj["subject"] = subject
                accepted += _same(obj)
                tried += 1
    bads: list[Any] = [[], "x", None, 1]
    for bad in bads:
        obj = _base("plate_passage")
        obj["subject"] = bad
        _same(obj)
    assert tried > 1000 and accepted >= 4, (tried, accepted)  # some of each kind pass, most do not


def test_timestamps_read_like_strptime() -> None:
    assert _ts("2026-11-24T14:33:30.097Z") == datetime(2026, 11, 24, 14, 33, 30, 97000, tzinfo=UTC)
