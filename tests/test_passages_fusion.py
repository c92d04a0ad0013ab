"""Passage fusion through the real Committer and outbox: windows, gates, direction, devices, schema, privacy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.events import validate
from edge.passages.config import GateConfig, PassageConfig, RetentionConfig
from edge.passages.fusion import PassageFusion, vote_direction
from edge.types import EventKind
from tests._events import assert_no_raw_identifiers
from tests._passages import CARDS, MACS, T0, Env, card_obs, face_obs, mac_obs, make_env, plate_obs, shared_plates


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = make_env(tmp_path)
    yield e
    e.close()


def test_face_plate_card_at_one_gate_fuse_into_one_passage(env: Env) -> None:
    plate = shared_plates(1)[0]
    members = env.commit([
        card_obs("reader-n", T0, CARDS[0], side="in"),
        plate_obs("cam-plate-n", T0 + 1.0, plate, direction="in"),
        face_obs("cam-face-n", T0 + 2.5, direction="out"),
    ])
    assert env.flush() != []
    passages = env.recorder.events(EventKind.PASSAGE)
    assert len(passages) == 1
    p = passages[0]
    assert p.source_id == "north"
    assert set(p.links) == {e.event_id for e in members}
    assert p.links[0] == members[0].event_id  # ordered by observation time
    assert dict(p.attrs) == {"members": 3, "face": True, "plate": True, "card": True, "devices": 0,
                             "window_s": 5.0, "direction": "in"}
    assert p.ts == T0
    assert p.subject is None


def test_published_passage_validates_and_carries_no_raw_identifier(env: Env) -> None:
    plate = shared_plates(1)[0]
    env.commit([plate_obs("cam-plate-n", T0, plate), card_obs("reader-n", T0 + 1, CARDS[0]),
                mac_obs("sniffer-n", T0 + 2, MACS[0], first_seen=T0 - 10)])
    env.flush()
    records = env.outbox.pending(100)
    kinds = [r.kind for r in records]
    assert EventKind.PASSAGE in kinds
    for r in records:
        validate(json.loads(r.payload))  # schema v1 forbids undeclared attributes
    payloads = [r.payload for r in records]
    assert_no_raw_identifiers(payloads)
    for raw in (plate, plate.replace("·", ""), CARDS[0], MACS[0], MACS[0].replace(":", "").lower()):
        assert all(raw.encode() not in p for p in payloads)


def test_members_outside_the_window_or_at_another_gate_make_separate_passages(env: Env) -> None:
    plates = shared_plates(3)
    a = env.commit([plate_obs("cam-plate-n", T0, plates[0])])
    b = env.commit([plate_obs("cam-plate-n", T0 + 5.5, plates[1])])  # span 5.5 s > window 5 s
    c = env.commit([plate_obs("cam-plate-s", T0 + 1, plates[2])])  # same time, other gate
    env.flush()
    by_link = {e.links: e for e in env.recorder.events(EventKind.PASSAGE)}
    assert set(by_link) == {(a[0].event_id,), (b[0].event_id,), (c[0].event_id,)}
    assert by_link[(c[0].event_id,)].source_id == "south"


def test_a_member_committed_late_still_joins_by_observation_time(env: Env) -> None:
    # A card swipe is committed at once; the face track that began before it ends (and is committed)
    # later, with an earlier end time than the window allows to differ.
    card = env.commit([card_obs("reader-n", T0 + 3.0, CARDS[0])])
    env.clock.now += 2.0
    face = env.commit([face_obs("cam-face-n", T0 + 0.5)])
    env.flush()
    (p,) = env.recorder.events(EventKind.PASSAGE)
    assert set(p.links) == {card[0].event_id, face[0].event_id}
    assert p.ts == T0 + 0.5


def test_passage_is_emitted_when_window_and_late_wait_have_passed(tmp_path: Path) -> None:
    env = make_env(tmp_path, passage_cfg=PassageConfig(window_s=4.0, late_s=6.0, purge_interval_s=0, min_members=1))
    try:
        env.commit([card_obs("anything", T0, CARDS[0])])
        env.committer.tick(T0 + 9.9)
        assert env.recorder.events(EventKind.PASSAGE) == []
        assert env.fusion.pending == 1
        env.committer.tick(T0 + 10.0)
        (p,) = env.recorder.events(EventKind.PASSAGE)
        assert p.source_id == "gate"  # no gates configured: one default gate takes every source
        assert env.fusion.pending == 0
    finally:
        env.close()


def test_phones_join_overlapping_passages_but_never_open_one(tmp_path: Path) -> None:
    env = make_env(tmp_path, passage_cfg=PassageConfig(
        gates=(GateConfig(id="north", sources=("reader-n", "sniffer-n")),), window_s=5.0, late_s=60.0,
        purge_interval_s=0))
    try:
        swipe = env.commit([card_obs("reader-n", T0, CARDS[0])])
        # The sniffer reports a phone when its 60 s dedupe window closes: after the swipe, with an
        # interval that covers it. A phone seen long before does not join.
        env.clock.now = T0 + 50
        near = env.commit([mac_obs("sniffer-n", T0 + 40, MACS[0], first_seen=T0 - 20)])
        far = env.commit([mac_obs("sniffer-n", T0 - 100, MACS[1], first_seen=T0 - 160)])
        env.committer.tick(T0 + 66)
        (p,) = env.recorder.events(EventKind.PASSAGE)
        assert p.links == (swipe[0].event_id, near[0].event_id)
        assert far[0].event_id not in p.links
        assert p.attrs["devices"] == 1 and p.attrs["members"] == 2
        # A phone alone is no passage.
        env.commit([mac_obs("sniffer-n", T0 + 500, MACS[1])])
        env.flush()
        assert len(env.recorder.events(EventKind.PASSAGE)) == 1
    finally:
        env.close()


def test_min_members_and_unmapped_sources(tmp_path: Path) -> None:
    env = make_env(tmp_path, passage_cfg=PassageConfig(
        gates=(GateConfig(id="north", sources=("reader-n", "cam-face-n")),), min_members=2, purge_interval_s=0))
    try:
        env.commit([face_obs("cam-face-n", T0)])  # alone: below min_members
        env.commit([card_obs("reader-x", T0 + 100, CARDS[0]), face_obs("cam-face-n", T0 + 100.5)])
        env.flush()
        assert env.recorder.events(EventKind.PASSAGE) == []
        assert env.fusion.ignored == 1  # reader-x is at no configured gate
        pair = env.commit([card_obs("reader-n", T0 + 200, CARDS[0]), face_obs("cam-face-n", T0 + 201)])
        env.flush()
        (p,) = env.recorder.events(EventKind.PASSAGE)
        assert set(p.links) == {e.event_id for e in pair}
    finally:
        env.close()


def test_direction_vote() -> None:
    assert vote_direction(["in", "in", "out"]) == "in"
    assert vote_direction(["out", None]) == "out"
    assert vote_direction(["in", "out"]) == "none"
    assert vote_direction([None, None]) == "none"
    assert vote_direction([]) == "none"


def test_card_reader_side_attribute_gives_the_direction() -> None:
    # The serial path reports a reader's configured side as `side`; fusion reads it as a direction.
    from edge.types import Event, IdKind, Observation, RawIdentifier
    from tests._passages import ORIGIN

    fusion = PassageFusion(PassageConfig(window_s=1.0, min_members=1), clock=lambda: T0)
    obs = Observation(EventKind.CARD_SWIPE, "r1", T0, subject=RawIdentifier(IdKind.CARD, CARDS[1]),
                      attrs={"format": "wiegand", "side": "out"})
    ev = Event("0190aaaa-0000-7000-8000-000000000001", EventKind.CARD_SWIPE, ORIGIN, "r1", T0)
    assert fusion.committed([(obs, ev)]) == []
    (derived,) = fusion.tick(T0 + 1.0)
    assert derived.observation.attrs["direction"] == "out" and derived.links == (ev.event_id,)


def test_config_refuses_a_source_at_two_gates_and_retention_beyond_records() -> None:
    with pytest.raises(ValidationError, match="one gate only"):
        PassageConfig(gates=(GateConfig(id="a", sources=("cam1",)), GateConfig(id="b", sources=("cam1",))))
    with pytest.raises(ValidationError, match="cannot exceed records_days"):
        RetentionConfig(records_days=7, faces_days=30)


def test_interleaved_people_each_card_fuses_with_the_nearest_face(env: Env) -> None:
    # Issue 12: fusion joined the first open passage, so with two people close behind each other a
    # resident's card fused with a stranger's face. Here the stranger's face is committed first
    # (T0 + 1.0), then resident A's card (T0 + 3.6), A's face (T0 + 3.4), B's card (T0 + 5.3) and
    # B's face (T0 + 5.5): every pair fits one window, so first-fit put A's card with the stranger.
    stranger = env.commit([face_obs("cam-face-n", T0 + 1.0)])
    card_a = env.commit([card_obs("reader-n", T0 + 3.6, CARDS[0])])
    face_a = env.commit([face_obs("cam-face-n", T0 + 3.4)])
    card_b = env.commit([card_obs("reader-n", T0 + 5.3, CARDS[1])])
    face_b = env.commit([face_obs("cam-face-n", T0 + 5.5)])
    env.flush()
    links = {frozenset(p.links) for p in env.recorder.events(EventKind.PASSAGE)}
    assert frozenset({card_a[0].event_id, face_a[0].event_id}) in links
    assert frozenset({card_b[0].event_id, face_b[0].event_id}) in links
    assert not any(stranger[0].event_id in group and len(group) > 1 for group in links)  # alone: below min_members


def test_nearest_grouping_is_one_anchor_per_kind_within_the_window() -> None:
    from edge.passages.fusion import _Member, _Pending, group_nearest

    def anchor(eid: str, kind: EventKind, ts: float) -> _Pending:
        return _Pending(_Member(eid, kind, ts, ts, None), 0.0)

    groups = group_nearest([anchor("f1", EventKind.FACE_PASSAGE, 0.0), anchor("c1", EventKind.CARD_SWIPE, 0.4),
                            anchor("f2", EventKind.FACE_PASSAGE, 0.5), anchor("c2", EventKind.CARD_SWIPE, 0.9),
                            anchor("p1", EventKind.PLATE_PASSAGE, 20.0)], window_s=5.0)
    as_ids = sorted(sorted(a.member.event_id for a in g) for g in groups)
    # c1 is nearest f2 (0.1 s), so f2+c1 first; then f1 may only take c2 (0.9 s, same-kind never twice).
    assert as_ids == [["c1", "f2"], ["c2", "f1"], ["p1"]]
