"""The query service: each identifier kind and photos find the right passages; roles, refusals, rate limits, audit."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from edge.audit import AuditAction, Problem
from edge.query.config import QueryConfig, RateLimitConfig
from edge.query.model import (
    Channel,
    Principal,
    QueryKind,
    QueryRefusedError,
    QueryRequest,
    RefusalReason,
    Role,
    View,
)
from edge.types import EventKind, IdKind, RawIdentifier
from tests._passages import (
    CARDS,
    DAY,
    INSTALLER,
    MACS,
    PLATFORM,
    POLICE,
    T0,
    Env,
    card_obs,
    face_obs,
    mac_obs,
    make_env,
    plate_obs,
    shared_plates,
)


def _ident(kind: QueryKind, value: str, t1: float = T0 - DAY, t2: float = T0 + DAY, *, case: str | None = "C-2026-17",
           officer: str | None = "0042", gate: str | None = None) -> QueryRequest:
    id_kind = {QueryKind.PLATE: IdKind.PLATE, QueryKind.CARD: IdKind.CARD, QueryKind.MAC: IdKind.MAC}[kind]
    return QueryRequest(kind, case, officer, t1, t2, gate=gate, identifier=RawIdentifier(id_kind, value))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = make_env(tmp_path)
    yield e
    e.close()


@pytest.fixture
def scene(env: Env) -> dict[str, object]:
    """Three passages: a car with driver card and phone at north, another car at south, a pedestrian."""
    plates = shared_plates(3)
    car1 = env.commit([plate_obs("cam-plate-n", T0, plates[0]), card_obs("reader-n", T0 + 1, CARDS[0]),
                       mac_obs("sniffer-n", T0 + 2, MACS[0])])
    car2 = env.commit([plate_obs("cam-plate-s", T0 + 600, plates[1], direction="out"),
                       card_obs("reader-s", T0 + 601, CARDS[1], side="out")])
    walk = env.commit([face_obs("cam-face-n", T0 + 1200), mac_obs("sniffer-n", T0 + 1201, MACS[1])])
    passages = env.flush()
    assert len(passages) == 3
    passages.sort(key=lambda p: p.ts)
    return {"plates": plates, "car1": car1, "car2": car2, "walk": walk, "passages": passages}


def test_plate_query_finds_the_passage_with_its_card_and_phone(env: Env, scene: dict[str, object]) -> None:
    plates, car1, passages = scene["plates"], scene["car1"], scene["passages"]
    result = env.service.run(POLICE, _ident(QueryKind.PLATE, plates[0]), Channel.CLI)
    assert result.view is View.RAW and len(result.hits) == 1
    (hit,) = result.hits
    assert hit.passage_id == passages[0].event_id and hit.gate == "north" and hit.direction == "in"
    assert hit.matched == (car1[0].event_id,)
    assert [m.event_id for m in hit.members] == [e.event_id for e in car1]
    assert [m.raw for m in hit.members] == [plates[0], CARDS[0], MACS[0]]  # person–vehicle–card–phone
    assert hit.members[0].pseudonym == car1[0].subject.pseudonym


@pytest.mark.parametrize(("kind", "value", "member"), [(QueryKind.CARD, CARDS[1], 1), (QueryKind.MAC, MACS[1], 1)])
def test_card_and_mac_queries_find_their_passages(env: Env, scene: dict[str, object], kind: QueryKind, value: str,
                                                  member: int) -> None:
    expected = scene["car2"] if kind is QueryKind.CARD else scene["walk"]
    result = env.service.run(POLICE, _ident(kind, value), Channel.HTTP)
    (hit,) = result.hits
    assert hit.matched == (expected[member].event_id,)
    assert {m.event_id for m in hit.members} == {e.event_id for e in expected}
    assert hit.members[member].raw == value


def test_identifier_spelling_does_not_matter(env: Env, scene: dict[str, object]) -> None:
    plate = scene["plates"][0]
    spelled = f"{plate[:2]}·{plate[2:].lower()}"
    assert len(env.service.run(POLICE, _ident(QueryKind.PLATE, spelled), Channel.CLI).hits) == 1
    mac = MACS[0].replace(":", "-").lower()
    assert len(env.service.run(POLICE, _ident(QueryKind.MAC, mac), Channel.CLI).hits) == 1


def test_range_and_gate_narrow_the_search(env: Env, scene: dict[str, object]) -> None:
    plates = scene["plates"]
    assert env.service.run(POLICE, _ident(QueryKind.PLATE, plates[1], gate="north"), Channel.CLI).hits == ()
    assert len(env.service.run(POLICE, _ident(QueryKind.PLATE, plates[1], gate="south"), Channel.CLI).hits) == 1
    assert env.service.run(POLICE, _ident(QueryKind.PLATE, plates[0], T0 + 10, T0 + DAY), Channel.CLI).hits == ()
    result = env.service.run(POLICE, QueryRequest(QueryKind.RANGE, "C-1", "0042", T0 - 1, T0 + 700), Channel.CLI)
    by_time = sorted(scene["passages"], key=lambda p: p.ts)  # car1 (north), car2 (south), walk (north)
    assert [h.passage_id for h in result.hits] == [p.event_id for p in by_time[:2]]
    result = env.service.run(POLICE, QueryRequest(QueryKind.RANGE, "C-1", "0042", T0 - 1, T0 + DAY, gate="north"),
                             Channel.CLI)
    assert [h.gate for h in result.hits] == ["north", "north"]


def test_a_plate_seen_in_two_pseudonym_epochs_is_found_in_both(env: Env) -> None:
    plate = shared_plates(4)[3]
    jan = env.commit([plate_obs("cam-plate-n", T0, plate)])[0]
    feb = env.commit([plate_obs("cam-plate-n", T0 + 25 * DAY, plate)])[0]  # 2026-02-04: next monthly epoch
    assert jan.subject.pseudonym != feb.subject.pseudonym  # unlinkable across epochs when published
    result = env.service.run(POLICE, _ident(QueryKind.PLATE, plate, T0 - DAY, T0 + 26 * DAY), Channel.CLI)
    assert [h.matched for h in result.hits] == [(jan.event_id,), (feb.event_id,)]  # not fused: flush not run
    assert all(h.passage_id is None for h in result.hits)
    record = env.audit.records()[-1]
    assert len(json.loads(record.details)["pseudonyms"]) == 2


def test_roles_see_only_what_they_may(env: Env, scene: dict[str, object]) -> None:
    plates = scene["plates"]
    # Issue 12: a platform token ran plate, card, MAC and photo queries (remote identification).
    # It now gets aggregates only: time-range queries showing kinds, gates and times.
    for kind, value in ((QueryKind.PLATE, plates[0]), (QueryKind.CARD, CARDS[0]), (QueryKind.MAC, MACS[0])):
        with pytest.raises(QueryRefusedError) as refused:
            env.service.run(PLATFORM, _ident(kind, value, officer="D-17"), Channel.HTTP)
        assert refused.value.reason is RefusalReason.FORBIDDEN
    with pytest.raises(QueryRefusedError) as refused:
        env.service.run(PLATFORM, QueryRequest(QueryKind.PHOTO, "C-1", "D-17", T0 - 1, T0 + DAY, photo=b"x"),
                        Channel.HTTP)
    assert refused.value.reason is RefusalReason.FORBIDDEN
    platform = env.service.run(PLATFORM, QueryRequest(QueryKind.RANGE, "STATS-1", "D-17", T0 - 1, T0 + DAY),
                               Channel.HTTP)
    assert platform.view is View.METADATA
    assert all(m.pseudonym is None and m.raw is None and m.ref is None for h in platform.hits for m in h.members)
    police = env.service.run(POLICE, _ident(QueryKind.PLATE, plates[0]), Channel.HTTP)
    assert [m.pseudonym for m in police.hits[0].members] == [e.subject.pseudonym for e in scene["car1"]]
    # Police through MQTT: the reply is published, so it carries pseudonyms only.
    police_mqtt = env.service.run(POLICE, _ident(QueryKind.PLATE, plates[0]), Channel.MQTT)
    assert police_mqtt.view is View.PSEUDONYMS and all(m.raw is None for m in police_mqtt.hits[0].members)
    # The installer may only check that passages are recorded: no identifier queries, no subjects.
    with pytest.raises(QueryRefusedError) as err:
        env.service.run(INSTALLER, _ident(QueryKind.PLATE, plates[0], officer="inst-7"), Channel.HTTP)
    assert err.value.reason is RefusalReason.FORBIDDEN
    result = env.service.run(INSTALLER, QueryRequest(QueryKind.RANGE, "COMM-1", "inst-7", T0 - 1, T0 + DAY),
                             Channel.CLI)
    assert result.view is View.METADATA and len(result.hits) == 3
    for hit in result.hits:
        for m in hit.members:
            assert m.pseudonym is None and m.key_id is None and m.ref is None and m.raw is None
            assert m.subject_type is not None


def test_a_query_without_case_or_officer_is_refused_with_a_clear_error_and_audited(env: Env) -> None:
    for case, officer, reason, words in ((None, "0042", RefusalReason.MISSING_CASE_ID, "case ID"),
                                         ("  ", "0042", RefusalReason.MISSING_CASE_ID, "case ID"),
                                         ("C-1", None, RefusalReason.MISSING_OFFICER_ID, "officer ID")):
        before = len(env.audit.records())
        with pytest.raises(QueryRefusedError, match=words) as err:
            env.service.run(INSTALLER, QueryRequest(QueryKind.RANGE, case, officer, T0, T0 + 1), Channel.HTTP)
        assert err.value.reason is reason
        new = env.audit.records()[before:]
        assert len(new) == 1 and new[0].action == AuditAction.QUERY_REFUSED
        assert json.loads(new[0].details)["reason"] == reason.value
        assert err.value.audit_seq == new[0].seq


def test_a_personal_token_cannot_query_as_another_officer(env: Env) -> None:
    with pytest.raises(QueryRefusedError, match="belongs to officer 0042") as err:
        env.service.run(POLICE, _ident(QueryKind.CARD, CARDS[0], officer="0099"), Channel.CLI)
    assert err.value.reason is RefusalReason.FORBIDDEN
    # The officer defaults to the token's.
    assert env.service.run(POLICE, _ident(QueryKind.CARD, CARDS[0], officer=None), Channel.CLI).officer_id == "0042"


def test_invalid_requests_are_refused_without_echoing_the_value(env: Env) -> None:
    for request in (_ident(QueryKind.PLATE, "X1"), _ident(QueryKind.MAC, "not-a-mac-zz"),
                    _ident(QueryKind.CARD, CARDS[0], T0 + DAY, T0),
                    _ident(QueryKind.CARD, CARDS[0], T0, T0 + 400 * DAY),
                    QueryRequest(QueryKind.PLATE, "C-1", "0042", T0, T0 + 1,
                                 identifier=RawIdentifier(IdKind.CARD, "AB")),
                    QueryRequest(QueryKind.PHOTO, "C-1", "0042", T0, T0 + 1)):
        with pytest.raises(QueryRefusedError) as err:
            env.service.run(POLICE, request, Channel.CLI)
        assert err.value.reason is RefusalReason.INVALID
        if request.identifier is not None:
            assert request.identifier.value not in str(err.value)


def test_every_query_writes_exactly_one_audit_record_with_pseudonyms_only(env: Env, scene: dict[str, object]) -> None:
    plate = scene["plates"][0]
    before = len(env.audit.records())
    result = env.service.run(POLICE, _ident(QueryKind.PLATE, plate), Channel.CLI)
    env.service.run(POLICE, _ident(QueryKind.CARD, CARDS[0]), Channel.MQTT)
    records = env.audit.records()[before:]
    assert [r.action for r in records] == [AuditAction.QUERY, AuditAction.QUERY]
    first = json.loads(records[0].details)
    assert records[0].actor == "police:0042" and records[0].seq == result.audit_seq
    assert first["case_id"] == "C-2026-17" and first["kind"] == "plate" and first["outcome"] == "ok"
    assert first["matched_event_ids"] == [scene["car1"][0].event_id]
    # The audit keeps a keyed digest per case, never the matched pseudonym itself (issue 12).
    assert "pseudonym" not in first["pseudonyms"][0] and len(first["pseudonyms"][0]["digest"]) == 32
    assert scene["car1"][0].subject.pseudonym not in records[0].details
    assert json.loads(records[1].details)["channel"] == "mqtt"
    audit_bytes = (env.tmp / "audit.db").read_bytes() + b"".join(p.read_bytes() for p in env.tmp.glob("audit.db-*"))
    for raw in (plate, CARDS[0]):
        assert raw.encode() not in audit_bytes


def test_rate_limit_per_officer(tmp_path: Path) -> None:
    env = make_env(tmp_path, query_cfg=QueryConfig(rate_limit=RateLimitConfig(max_queries=3, per_s=60)))
    try:
        for _ in range(3):
            env.service.run(POLICE, _ident(QueryKind.CARD, CARDS[0]), Channel.CLI)
        with pytest.raises(QueryRefusedError) as err:
            env.service.run(POLICE, _ident(QueryKind.CARD, CARDS[0]), Channel.HTTP)  # one budget for every door
        assert err.value.reason is RefusalReason.RATE_LIMITED
        assert err.value.retry_after_s is not None and 0 < err.value.retry_after_s <= 60
        other = Principal("officer-0043", Role.POLICE, "0043")
        env.service.run(other, _ident(QueryKind.CARD, CARDS[0], officer="0043"), Channel.CLI)
        env.clock.now += 61
        env.service.run(POLICE, _ident(QueryKind.CARD, CARDS[0]), Channel.CLI)
        actions = [r.action for r in env.audit.records()]
        assert actions == ["query"] * 3 + ["query_refused"] + ["query"] * 2
    finally:
        env.close()


def test_tampering_with_query_records_is_detected(env: Env, scene: dict[str, object]) -> None:
    for value in (CARDS[0], CARDS[1], MACS[0]):
        kind = QueryKind.MAC if value in MACS else QueryKind.CARD
        env.service.run(POLICE, _ident(kind, value), Channel.CLI)
    assert env.audit.verify().ok
    n = env.audit.head().seq
    db = sqlite3.connect(env.audit.path)
    db.executescript("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
    original = db.execute("SELECT details FROM audit WHERE seq = 2").fetchone()[0]
    # An officer hides which case a query was for.
    db.execute("UPDATE audit SET details = replace(details, 'C-2026-17', 'C-0000-00') WHERE seq = 2")
    db.commit()
    result = env.audit.verify()
    assert not result.ok and result.problem is Problem.EDITED and result.first_bad_seq == 2
    db.execute("UPDATE audit SET details = ? WHERE seq = 2", (original,))
    db.execute("DELETE FROM audit WHERE seq = 2")  # ... or removes the record
    db.commit()
    result = env.audit.verify()
    assert not result.ok and result.problem is Problem.DELETED and result.first_bad_seq == 2
    db.close()
    # Cutting the newest record off the end is caught against the anchor.
    db = sqlite3.connect(env.audit.path)
    db.execute("DELETE FROM audit WHERE seq >= 2")
    db.commit()
    db.close()
    result = env.audit.verify()
    assert not result.ok and result.problem is Problem.TRUNCATED and n >= 2


def test_purged_plate_is_no_longer_found_and_its_key_is_gone(env: Env) -> None:
    plate = shared_plates(1)[0]
    env.commit([plate_obs("cam-plate-n", T0, plate), card_obs("reader-n", T0, CARDS[0])])
    env.flush()
    request = _ident(QueryKind.PLATE, plate, T0 - DAY, T0 + DAY)
    assert len(env.service.run(POLICE, request, Channel.CLI).hits) == 1
    env.clock.now = T0 + 31 * DAY
    env.store.purge()
    assert env.service.run(POLICE, request, Channel.CLI).hits == ()
    live = {k.label for k in env.store.keys.epochs()}
    assert "plates.2026-01-10" not in live
    assert "plates.2026-01-10" in {k.label for k in env.store.keys.destroyed()}


def test_range_results_are_capped(tmp_path: Path) -> None:
    env = make_env(tmp_path, query_cfg=QueryConfig(max_results=2))
    try:
        env.commit([card_obs("reader-n", T0 + 60 * i, CARDS[i % 2]) for i in range(4)])
        env.flush()
        result = env.service.run(POLICE, QueryRequest(QueryKind.RANGE, "C-1", "0042", T0 - 1, T0 + DAY), Channel.CLI)
        assert len(result.hits) == 2 and result.truncated
        assert json.loads(env.audit.records()[-1].details)["truncated"] is True
    finally:
        env.close()


# -- photo queries on real faces ---------------------------------------------------------------------

def _face_sets() -> list[tuple[str, list[str]]]:
    from tests._models import labels

    by: dict[str, list[str]] = defaultdict(list)
    for row in labels():
        if row["path"].startswith("faces/face_recognition/"):
            by[row["identity"]].append(row["path"])
    return sorted((ident, sorted(paths)) for ident, paths in by.items() if len(paths) >= 2)


@pytest.mark.models
def test_photo_query_finds_the_same_person_in_another_photo(tmp_path: Path) -> None:
    from tests._models import analyzer, image

    fa = analyzer()

    def embed(photo: bytes) -> np.ndarray | None:
        from edge.vision.faces import decode_image

        sample = fa.largest_face_embedding(decode_image(photo))
        return None if sample is None else sample.embedding

    people = _face_sets()
    assert len(people) >= 4
    env = make_env(tmp_path, embedder=embed)
    try:
        stored: dict[str, str] = {}
        for i, (ident, paths) in enumerate(people):
            sample = fa.largest_face_embedding(image(paths[0]))
            assert sample is not None
            face = env.commit([face_obs("cam-face-n", T0 + 60 * i, sample.embedding)])[0]
            stored[ident] = face.event_id
        env.flush()
        from tests._models import SHARED_DATA

        for ident, paths in people:
            photo = (SHARED_DATA / paths[1]).read_bytes()  # another photo of the same person
            result = env.service.run(POLICE, QueryRequest(QueryKind.PHOTO, "C-9", "0042", T0 - 1, T0 + DAY,
                                                          photo=photo), Channel.CLI)
            assert result.hits, ident
            best = result.hits[0]
            assert best.matched == (stored[ident],), ident
            assert best.score is not None and best.score >= 0.363
            others = {stored[o] for o, _ in people if o != ident}
            assert not others & {m for h in result.hits for m in h.matched}, ident
            assert best.members[0].score == pytest.approx(best.score, abs=1e-3)
        details = json.loads(env.audit.records()[-1].details)
        assert len(details["photo_digest"]) == 32 and details["threshold"] == pytest.approx(0.363)
        # A caller may raise the threshold, never lower it below the gateway's.
        low = env.service.run(POLICE, QueryRequest(QueryKind.PHOTO, "C-9", "0042", T0 - 1, T0 + DAY, photo=photo,
                                                   threshold=-1.0), Channel.CLI)
        assert all(h.score is not None and h.score >= 0.363 for h in low.hits)
        # Once face retention has passed, the embeddings are gone and the photo finds nothing.
        env.store.purge(T0 + 8 * DAY)
        env.clock.now = T0 + 8 * DAY
        result = env.service.run(POLICE, QueryRequest(QueryKind.PHOTO, "C-9", "0042", T0 - 1, T0 + DAY,
                                                      photo=photo), Channel.CLI)
        assert result.hits == ()
        # A photo without a face is refused, not answered with nothing.
        import cv2

        ok, blank = cv2.imencode(".png", np.full((200, 200, 3), 127, np.uint8))
        assert ok
        with pytest.raises(QueryRefusedError, match="no face"):
            env.service.run(POLICE, QueryRequest(QueryKind.PHOTO, "C-9", "0042", T0 - 1, T0 + DAY,
                                                 photo=blank.tobytes()), Channel.CLI)
    finally:
        env.close()


def test_passage_members_of_a_photo_hit_include_the_plate(tmp_path: Path) -> None:
    # With a stand-in embedder (a fixed vector), check that a face hit brings its passage along.
    import cv2

    plate = shared_plates(1)[0]
    v = np.zeros(128, np.float32)
    v[0] = 1.0
    env = make_env(tmp_path, embedder=lambda img: v)  # the real FaceAnalyzer is tested above
    try:
        face, _ = env.commit([face_obs("cam-face-n", T0, v), plate_obs("cam-plate-n", T0 + 1, plate)])
        env.flush()
        _, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
        result = env.service.run(POLICE, QueryRequest(QueryKind.PHOTO, "C-9", "0042", T0 - 1, T0 + 10,
                                                      photo=png.tobytes()), Channel.CLI)
        (hit,) = result.hits
        assert hit.matched == (face.event_id,) and hit.score == pytest.approx(1.0)
        assert [m.raw for m in hit.members] == [None, plate]
        assert [m.kind for m in hit.members] == [EventKind.FACE_PASSAGE, EventKind.PLATE_PASSAGE]
    finally:
        env.close()


def test_an_answer_costs_the_same_store_round_trips_for_3_or_12_passages(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # The store answers in one pass: no read (or decryption) per hit or per member.
    calls: dict[int, int] = {}
    for n in (3, 12):
        (tmp_path / str(n)).mkdir()
        env = make_env(tmp_path / str(n))
        try:
            plates = shared_plates(n)
            for i in range(n):
                env.commit([plate_obs("cam-plate-n", T0 + 60 * i, plates[i]),
                            card_obs("reader-n", T0 + 60 * i + 1, CARDS[i % len(CARDS)])])
            env.flush()
            rows = env.store._rows
            count = [0]

            def counted(sql: str, params: object, rows: object = rows, count: list[int] = count) -> object:
                count[0] += 1
                return rows(sql, params)  # type: ignore[operator]

            monkeypatch.setattr(env.store, "_rows", counted)
            result = env.service.run(POLICE, QueryRequest(QueryKind.RANGE, "C-1", "0042", T0 - 1, T0 + DAY),
                                     Channel.CLI)
            monkeypatch.undo()
            assert len(result.hits) == n and all(len(h.members) == 2 for h in result.hits)
            assert {m.raw for h in result.hits for m in h.members} >= set(plates)  # raw view, decrypted
            calls[n] = count[0]
        finally:
            env.close()
    assert calls[3] == calls[12] <= 6


def test_rotating_claimed_officer_ids_behind_one_token_stops_at_the_limit(tmp_path: Path) -> None:
    # Issue 12: 300/300 queries passed with rotating officer ids against a limit of 30 per hour.
    env = make_env(tmp_path, query_cfg=QueryConfig(rate_limit=RateLimitConfig(max_queries=5, per_s=3600)))
    try:
        granted = refused = 0
        for i in range(40):
            try:
                env.service.run(INSTALLER, QueryRequest(QueryKind.RANGE, "C-1", f"inst-{i}", T0, T0 + 1), Channel.HTTP)
                granted += 1
            except QueryRefusedError as err:
                assert err.reason is RefusalReason.RATE_LIMITED
                refused += 1
        assert (granted, refused) == (5, 35)
    finally:
        env.close()


def test_a_police_principal_without_an_officer_is_refused(env: Env) -> None:
    unbound = Principal("shared-police", Role.POLICE, None)
    with pytest.raises(QueryRefusedError, match="names no officer") as err:
        env.service.run(unbound, _ident(QueryKind.CARD, CARDS[0], officer="0042"), Channel.HTTP)
    assert err.value.reason is RefusalReason.FORBIDDEN


def test_a_tokens_file_with_an_unbound_police_token_does_not_load(tmp_path: Path) -> None:
    from edge.errors import ConfigError
    from edge.query.principals import load_principals

    path = tmp_path / "tokens.toml"
    path.write_text(f'[[principal]]\nname = "desk"\nrole = "police"\ntoken = "{"ab" * 32}"\n')
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="must name its officer") as err:
        load_principals(path)
    assert "ab" * 32 not in str(err.value)


def test_photo_queries_are_audited_as_biometric_processing(env: Env) -> None:
    before = len(env.audit.records())
    with pytest.raises(QueryRefusedError):
        env.service.run(POLICE, QueryRequest(QueryKind.PHOTO, "C-1", "0042", T0, T0 + 1, photo=b"not an image"),
                        Channel.CLI)
    (record,) = env.audit.records()[before:]
    assert json.loads(record.details)["processing"] == "biometric"


def test_a_refusal_flood_is_aggregated_not_one_record_each(env: Env) -> None:
    before = len(env.audit.records())
    for _ in range(200):
        with pytest.raises(QueryRefusedError):
            env.service.run(POLICE, _ident(QueryKind.PLATE, "X1"), Channel.HTTP)  # invalid plate
    records = env.audit.records()[before:]
    assert len(records) == 5  # the first burst in full
    env.service.flush_refusals()
    (summary,) = env.audit.records()[before + 5:]
    details = json.loads(summary.details)
    assert summary.action == AuditAction.REFUSALS and details["count"] == 195
    assert details["reasons"] == {"invalid": 195}
