"""Residents and PIPL (issue 12): complete erasure, ids encrypted at rest, consent records, withdrawal.

The attacker of these tests holds every file and key on the gateway after the resident left
(`residents withdraw`): gallery, passage store, audit log, data key, epoch keys. Real SQLite files,
the real keyring and boundary, the real CLI.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from edge.app.config import Config, load_config
from edge.app.residents import audit_resident, open_gallery
from edge.app.wiring import build_passage_observers, data_key, open_audit, open_store, pseudonymiser
from edge.audit import AuditAction
from edge.cli import main
from edge.passages.fusion import PassageFusion
from edge.passages.store import PassageStore
from edge.privacy.boundary import PrivacyBoundary
from edge.residents import Consent, ResidentGallery, _derive
from edge.sealed import Sealer
from edge.types import EventKind, IdKind, Observation, Origin, RawIdentifier
from tests.conftest import MODELS_DIR, SHARED_DATA, new_gateway

GONE, STAYS = "r-0001-zhang", "r-0002-wang"
CARD = "0A1B2C3D01"
DAY = 86400.0


def _files(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def _embedding(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


def _face(resident: str, ts: float, seed: int) -> Observation:
    return Observation(EventKind.FACE_PASSAGE, "cam1", ts, subject=RawIdentifier(IdKind.RESIDENT, resident),
                       attrs={"matched": True, "quality": 0.8, "frames": 6, "embedded": 3, "duration_s": 0.9,
                              "confidence": 0.7, "direction": "in"}, embedding=_embedding(seed))


def _card(card: str, ts: float) -> Observation:
    return Observation(EventKind.CARD_SWIPE, "reader1", ts, subject=RawIdentifier(IdKind.CARD, card),
                       attrs={"format": "rdm6300", "direction": "in"})


def _enrol(cfg: Config, resident: str, seed: int) -> str:
    gallery = open_gallery(cfg)
    try:
        gallery.enrol(resident, Consent("F-2026-17", "guardian Li Hua", time.time() - DAY, ("gate_access_face",)),
                      np.stack([_embedding(seed), _embedding(seed + 100)]))
        handle = gallery.handle_of(resident)
    finally:
        gallery.close()
    assert handle is not None
    audit_resident(cfg, AuditAction.ENROL, handle, consent="F-2026-17", embeddings=2)
    return handle


def test_withdrawal_erases_everything_recoverable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = new_gateway(tmp_path, '[passages]\nmin_members = 2\nwindow_s = 5\n\n[[passages.gates]]\nid = "gate1"\n'
                                     'sources = ["cam1", "reader1"]\n')
    cfg = load_config(cfg_path)
    handle = _enrol(cfg, GONE, 1)
    _enrol(cfg, STAYS, 2)
    now = time.time()
    boundary = PrivacyBoundary(pseudonymiser(cfg), Origin("d1", "c1", "g1"))
    # The resident passes twice; the second time they swipe their card and the gateway fuses both into
    # a passage. The other resident passes alone.
    obs = [_face(GONE, now - 3600, 1), _face(GONE, now - 60, 1), _card(CARD, now - 59), _face(STAYS, now - 30, 2)]
    audit = open_audit(cfg)
    store, fusion = build_passage_observers(cfg, data_key(cfg), audit)
    assert isinstance(store, PassageStore) and isinstance(fusion, PassageFusion)
    events = [boundary.to_event(o) for o in obs]
    pairs = list(zip(obs, events, strict=True))
    store.committed(pairs)
    fusion.committed(pairs)
    fused = [(d.observation, boundary.to_event(d.observation, links=d.links)) for d in fusion.tick(float("inf"))]
    store.committed(fused)
    assert [set(e.links) for _, e in fused] == [{events[1].event_id, events[2].event_id}]
    ids = [e.event_id for e in events] + [e.event_id for _, e in fused]
    # Before: with the gateway's keys, the store decrypts the resident's id and their card (the attack works).
    assert store.raw_identifiers(ids) == {ids[0]: GONE, ids[1]: GONE, ids[2]: CARD, ids[3]: STAYS}
    pseudonyms = {e.subject.pseudonym for e in events[:2] if e.subject is not None and e.subject.pseudonym}
    store.close()
    audit.close()
    gallery_path, store_path, audit_path = (cfg.path(cfg.storage.residents_db), cfg.path(cfg.passages.path),
                                            cfg.path(cfg.audit.path))
    with closing(sqlite3.connect(gallery_path)) as db:
        wrapped_before = db.execute("SELECT wrapped_key FROM residents WHERE handle = ?", (handle,)).fetchone()[0]

    assert main(["residents", "withdraw", "--config", str(cfg_path), "--id", GONE]) == 0
    out = capsys.readouterr().out
    assert "2 embedding(s), 4 stored passage record(s)" in out, out  # two faces, the card, the passage

    # After: nothing the gateway holds gives the resident back.
    audit = open_audit(cfg)
    store = open_store(cfg, data_key(cfg), audit)
    try:
        assert store.raw_identifiers(ids) == {ids[3]: STAYS}  # the other resident is untouched
        assert set(store.get(ids)) == {ids[3]}
    finally:
        store.close()
        audit.close()
    gallery = open_gallery(cfg)
    assert [r.resident_id for r in gallery.list()] == [STAYS]
    assert gallery.match(_embedding(1), 0.5).resident_id is None  # the face no longer matches anyone
    gallery.close()
    # The files themselves (WAL included): no id, no pseudonym of any held epoch, no wrapped key.
    held = [p for p, _ in pseudonymiser(cfg).pseudonyms_between(IdKind.RESIDENT, GONE, now - 60 * DAY, now)]
    assert pseudonyms <= set(held)
    everything = _files(gallery_path) + _files(store_path) + _files(audit_path)
    assert GONE.encode() not in everything and CARD.encode() not in everything
    assert not [p for p in held if p.encode() in everything]
    assert bytes(wrapped_before) not in _files(gallery_path)
    # The audit shows the withdrawal, by a handle that now links to nobody, and is still intact.
    audit = open_audit(cfg)
    try:
        last = audit.records()[-1]
        assert last.action == "consent_withdrawn" and json.loads(last.details)["resident"] == handle
        assert audit.verify().ok
    finally:
        audit.close()
    assert handle.encode() not in _files(gallery_path)


def test_ids_and_consent_are_sealed_at_rest_and_listed_in_full(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = new_gateway(tmp_path)
    cfg = load_config(cfg_path)
    _enrol(cfg, GONE, 3)
    raw = _files(cfg.path(cfg.storage.residents_db))
    for clear in (GONE, "F-2026-17", "Li Hua", "gate_access_face"):
        assert clear.encode() not in raw, clear
    assert main(["residents", "list", "--config", str(cfg_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{GONE}\tconsent=F-2026-17\tby=guardian Li Hua\tsigned=")
    assert "purposes=gate_access_face" in line and "embeddings=2" in line
    # The audit of the enrolment names no id and no pseudonym: joining it with the gallery gives nothing.
    audit = open_audit(cfg)
    try:
        details = audit.records()[-1].details
    finally:
        audit.close()
    assert GONE not in details
    now = time.time()
    for p, _ in pseudonymiser(cfg).pseudonyms_between(IdKind.RESIDENT, GONE, now - 40 * DAY, now):
        assert p not in details


def test_a_v1_gallery_is_migrated_and_its_clear_ids_are_gone(tmp_path: Path) -> None:
    key = bytes(range(32))
    path = tmp_path / "residents.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE embeddings (row_id INTEGER PRIMARY KEY AUTOINCREMENT, resident_id TEXT NOT NULL, "
                     "consent_ref TEXT NOT NULL, enrolled_ts REAL NOT NULL, sealed BLOB NOT NULL);")
    legacy = Sealer(_derive(key, b"resident gallery"))
    ts = 1_764_000_000.0
    db.execute("INSERT INTO embeddings (resident_id, consent_ref, enrolled_ts, sealed) VALUES (?,?,?,?)",
               (GONE, "C-1", ts, legacy.seal(_embedding(5).astype("<f4").tobytes(),
                                             f"resident|{GONE}|{ts!r}".encode())))
    db.commit()
    db.close()
    gallery = ResidentGallery(path, key)
    try:
        assert [(r.resident_id, r.consent_ref) for r in gallery.list()] == [(GONE, "C-1")]
        assert gallery.match(_embedding(5), 0.99).resident_id == GONE
    finally:
        gallery.close()
    assert GONE.encode() not in _files(path)


def test_enrol_records_who_consented_when_and_to_what(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = SHARED_DATA / "faces" / "face_recognition" / "obama" / "obama.jpg"
    if not photo.exists():
        pytest.skip("../shared/data is not present")
    cfg_path = new_gateway(tmp_path, f'[models]\ndir = "{MODELS_DIR}"\n')
    assert main(["residents", "enrol", "--config", str(cfg_path), "--id", "r-obama", "--consent", "F-88",
                 "--consented-by", "guardian Michelle", "--consented-at", "2026-11-02T09:30",
                 "--purpose", "gate_access_face", "--purpose", "visitor_log", str(photo)]) == 0
    capsys.readouterr()
    assert main(["residents", "list", "--config", str(cfg_path)]) == 0
    line = capsys.readouterr().out
    assert "by=guardian Michelle\tsigned=2026-11-02\tpurposes=gate_access_face,visitor_log" in line
    assert main(["residents", "enrol", "--config", str(cfg_path), "--id", "r-x", "--consent", "F-89",
                 "--consented-at", "last tuesday", str(photo)]) == 1
    assert "--consented-at" in capsys.readouterr().err
    # Withdrawal erases, and says so in the audit.
    assert main(["residents", "withdraw", "--config", str(cfg_path), "--id", "r-obama"]) == 0
    assert "consent withdrawn" in capsys.readouterr().out
    cfg = load_config(cfg_path)
    audit = open_audit(cfg)
    try:
        actions = [r.action for r in audit.records()]
    finally:
        audit.close()
    assert actions[-2:] == ["enrol", "consent_withdrawn"]
    assert main(["residents", "withdraw", "--config", str(cfg_path), "--id", "r-obama"]) == 1
