"""The passage store: rows per event, sealed raw fields, links, retention purge and crypto-shredding."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge.audit import AuditAction
from edge.passages.config import PassageConfig, RetentionConfig
from edge.passages.store import DataClass, SealedField, epoch_of
from edge.sealed import KeyDestroyedError, SealError
from edge.types import EventKind
from tests._passages import (
    CARDS,
    DAY,
    GATES,
    MACS,
    T0,
    Env,
    card_obs,
    face_obs,
    mac_obs,
    make_env,
    plate_obs,
    shared_plates,
)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = make_env(tmp_path)
    yield e
    e.close()


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


def _file_bytes(tmp: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(tmp.glob("passage*")) if p.is_file())


def test_every_event_gets_a_row_with_its_published_subject(env: Env) -> None:
    plate = shared_plates(1)[0]
    events = env.commit([plate_obs("cam-plate-n", T0, plate), card_obs("reader-n", T0 + 1, CARDS[0]),
                         mac_obs("sniffer-n", T0 + 2, MACS[0]), face_obs("cam-face-n", T0 + 3, _unit(1))])
    (passage,) = env.flush()
    stored = env.store.get([e.event_id for e in [*events, passage]])
    assert len(stored) == 5
    for e in events:
        row = stored[e.event_id]
        assert row.kind is e.kind and row.ts == e.ts and row.gate == "north"
        assert e.subject is not None
        assert (row.subject_type, row.pseudonym, row.key_id, row.ref) == (
            e.subject.type, e.subject.pseudonym, e.subject.key_id, e.subject.ref)
    assert stored[passage.event_id].links == passage.links
    assert [m.event_id for m in env.store.members_of(passage.event_id)] == list(passage.links)
    assert env.store.raw_identifier(events[0].event_id) == plate
    assert env.store.raw_identifier(events[1].event_id) == CARDS[0]
    assert env.store.raw_identifier(events[2].event_id) == MACS[0]
    assert env.store.raw_identifier(events[3].event_id) is None  # an unknown face has no identifier
    records, matrix = env.store.face_embeddings(T0 - 10, T0 + 10)
    assert [r.event_id for r in records] == [events[3].event_id]
    assert np.allclose(matrix[0], _unit(1), atol=1e-6)


def test_raw_values_and_embeddings_are_not_in_the_files_in_clear(env: Env) -> None:
    plate = shared_plates(1)[0]
    emb = _unit(7)
    env.commit([plate_obs("cam-plate-n", T0, plate), card_obs("reader-n", T0, CARDS[0]),
                mac_obs("sniffer-n", T0, MACS[0]), face_obs("cam-face-n", T0, emb)])
    env.flush()
    data = _file_bytes(env.tmp)
    assert len(data) > 10_000
    for raw in (plate, CARDS[0], MACS[0]):
        assert raw.encode("utf-8") not in data
    assert emb.astype("<f4").tobytes()[:32] not in data
    assert env.store.counts()["sealed"] == 4


def test_a_sealed_field_is_bound_to_its_row(env: Env) -> None:
    plates = shared_plates(2)
    a, b = env.commit([plate_obs("cam-plate-n", T0, plates[0]), plate_obs("cam-plate-n", T0 + 9, plates[1])])
    epoch, blob = env.store.sealed_blob(a.event_id, SealedField.IDENTIFIER) or ("", b"")
    assert epoch == epoch_of(DataClass.PLATES, T0) == "plates.2026-01-10"
    assert env.store.open_sealed(a.event_id, SealedField.IDENTIFIER, epoch, blob) == plates[0].encode()
    with pytest.raises(SealError):
        env.store.open_sealed(b.event_id, SealedField.IDENTIFIER, epoch, blob)  # moved to another row
    # Swapping the blobs inside the database: each row then fails to open instead of showing the other plate.
    db = sqlite3.connect(env.store.path)
    db.execute("UPDATE sealed SET blob = ? WHERE event_id = ?", (blob, b.event_id))
    db.commit()
    db.close()
    with pytest.raises(SealError):
        env.store.raw_identifier(b.event_id)


def test_retention_purge_and_crypto_shredding(env: Env) -> None:
    plate = shared_plates(1)[0]
    plate_ev, face_ev = env.commit([plate_obs("cam-plate-n", T0, plate), face_obs("cam-face-n", T0 + 1, _unit(3))])
    env.flush()
    plate_copy = env.store.sealed_blob(plate_ev.event_id, SealedField.IDENTIFIER)
    face_copy = env.store.sealed_blob(face_ev.event_id, SealedField.EMBEDDING)
    assert plate_copy is not None and face_copy is not None
    live = {k.label for k in env.store.keys.epochs()}
    assert live == {"plates.2026-01-10", "faces.2026-01-10"}
    audit_before = len(env.audit.records())

    # Day 8: faces (7 days) expire; the record and the plate (30 days) stay.
    report = env.store.purge(T0 + 8 * DAY)
    assert report.records_deleted == 0 and report.sealed_deleted == {"faces": 1}
    assert [k.label for k in report.keys_destroyed] == ["faces.2026-01-10"]
    assert env.store.face_embeddings(T0 - DAY, T0 + DAY)[0] == []
    assert face_ev.event_id in env.store.get([face_ev.event_id])
    with pytest.raises(KeyDestroyedError):
        env.store.open_sealed(face_ev.event_id, SealedField.EMBEDDING, *face_copy)
    assert env.store.raw_identifier(plate_ev.event_id) == plate

    # Day 31: everything of that day is gone, and its plate key too.
    report = env.store.purge(T0 + 31 * DAY)
    assert report.records_deleted == 3  # plate, face and their passage
    assert [k.label for k in report.keys_destroyed] == ["plates.2026-01-10"]
    assert env.store.counts() == {"records": 0, "links": 0, "sealed": 0}
    assert env.store.keys.epochs() == []
    assert {d.label for d in env.store.keys.destroyed()} == live
    with pytest.raises(KeyDestroyedError):
        env.store.open_sealed(plate_ev.event_id, SealedField.IDENTIFIER, *plate_copy)

    # Each purge wrote exactly one audit record naming what it destroyed; the chain is intact.
    purges = env.audit.records()[audit_before:]
    assert [r.action for r in purges] == [AuditAction.PURGE, AuditAction.PURGE]
    assert json.loads(purges[1].details)["keys_destroyed"][0]["epoch"] == "plates.2026-01-10"
    assert env.audit.verify().ok


def test_a_key_is_destroyed_only_when_its_whole_day_has_expired(env: Env) -> None:
    late_in_day = T0 + 11.5 * 3600  # 23:30 UTC
    env.commit([plate_obs("cam-plate-n", late_in_day, shared_plates(1)[0])])
    # 30 days after noon, the 23:30 row is still within retention: neither row nor key may go.
    report = env.store.purge(T0 + 30 * DAY + 60)
    assert report.records_deleted == 0 and report.keys_destroyed == ()
    # The row has expired, but the day's key lives until the whole day has (data up to 23:59:59).
    report = env.store.purge(late_in_day + 30 * DAY + 1)
    assert report.records_deleted == 1 and report.keys_destroyed == ()
    report = env.store.purge(T0 + 30.5 * DAY)  # 2026-02-10T00:00Z
    assert [k.label for k in report.keys_destroyed] == ["plates.2026-01-10"]


def test_late_arrivals_are_not_resurrected_after_shredding(env: Env) -> None:
    plate = shared_plates(1)[0]
    env.commit([face_obs("cam-face-n", T0, _unit(1))])
    env.store.purge(T0 + 8 * DAY)  # faces.2026-01-10 destroyed
    env.clock.now = T0 + 8 * DAY
    late = env.commit([face_obs("cam-face-n", T0 + 60, _unit(2)), plate_obs("cam-plate-n", T0 - 40 * DAY, plate)])
    assert env.store.sealed_blob(late[0].event_id, SealedField.EMBEDDING) is None  # past face retention
    assert env.store.get([late[1].event_id]) == {}  # past record retention: not stored at all
    assert "faces.2026-01-10" not in {k.label for k in env.store.keys.epochs()}


def test_periodic_purge_runs_on_tick_but_never_on_the_shutdown_tick(tmp_path: Path) -> None:
    env = make_env(tmp_path, passage_cfg=PassageConfig(gates=GATES, purge_interval_s=3600, min_members=1,
                                                       retention=RetentionConfig(records_days=1, faces_days=1,
                                                                                 plates_days=1, cards_days=1,
                                                                                 devices_days=1)))
    try:
        env.commit([card_obs("reader-n", T0, CARDS[0])])
        env.flush()  # the Committer's shutdown tick: now = inf must not purge everything
        assert env.store.counts()["records"] == 2
        assert env.audit.records() == []
        env.clock.now = T0 + 2 * DAY
        env.committer.tick(env.clock.now)
        assert env.store.counts()["records"] == 0
        env.committer.tick(env.clock.now + 10)  # not due again yet
        assert [r.action for r in env.audit.records()] == [AuditAction.PURGE]
        env.committer.tick(env.clock.now + 3600)
        assert len(env.audit.records()) == 2
    finally:
        env.close()


def test_a_store_failure_never_breaks_the_commit(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.store._db.close()  # simulate a broken database file
    events = env.commit([card_obs("reader-n", T0, CARDS[0])])
    assert len(events) == 1 and env.outbox.depth() == 1  # the event is safe in the outbox
    assert env.store.failures == 1
    assert CARDS[0] not in caplog.text
    assert [e.kind for e in env.recorder.events()] == [EventKind.CARD_SWIPE]
