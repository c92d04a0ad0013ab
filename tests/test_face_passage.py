"""The face path and the capture daemon on real photos: enrol, track, embed once, match, publish."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.app.config import load_config
from edge.app.wiring import data_key
from edge.cli import main
from edge.models.variants import runtime_model_path
from edge.outbox import Outbox
from edge.pipeline.faces import FacePath
from edge.residents import ResidentGallery
from edge.types import EventKind, Frame, IdKind
from edge.vision.faces import FaceAnalyzer
from tests._clips import letterboxed
from tests.conftest import MODELS_DIR, ROOT, SHARED_DATA, new_gateway

FACES = SHARED_DATA / "faces" / "face_recognition"
pytestmark = pytest.mark.models


def _setup(tmp_path: Path, extra: str = "") -> Path:
    if not FACES.exists():
        pytest.skip("../shared/data is not present")
    return new_gateway(tmp_path, f'[models]\ndir = "{MODELS_DIR}"\n\n[motion]\nenabled = false\n{extra}')


def test_enrol_list_remove_and_match(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = _setup(tmp_path)
    assert main(["residents", "enrol", "--config", str(cfg_path), "--id", "r-obama", "--consent", "C-17",
                 str(FACES / "obama" / "obama.jpg")]) == 0
    assert main(["residents", "list", "--config", str(cfg_path)]) == 0
    assert "r-obama\tconsent=C-17" in capsys.readouterr().out
    cfg = load_config(cfg_path)
    gallery = ResidentGallery(cfg.path(cfg.storage.residents_db), data_key(cfg))
    analyzer = FaceAnalyzer(MODELS_DIR)
    # The embedding is sealed at rest: the enrolled vector's float bytes (any 16 of them) are in
    # neither the database nor its WAL, and neither is the resident id (issue 12: ids encrypted at
    # rest); the table names are (so the scan reads the data).
    sample = analyzer.largest_face_embedding(cv2.imread(str(FACES / "obama" / "obama.jpg")))
    assert sample is not None
    clear = sample.embedding.astype("<f4").tobytes()
    db = cfg.path(cfg.storage.residents_db)
    wal = db.with_name(db.name + "-wal")
    raw = db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert b"r-obama" not in raw and b"resident_embeddings" in raw
    assert not any(clear[i:i + 16] in raw for i in range(0, len(clear) - 16, 4))
    # ...and the vector looked for is really the one enrolled (the gallery decrypts it back).
    assert gallery.match(sample.embedding, 0.99999).resident_id == "r-obama"
    path = FacePath("cam1", analyzer, gallery, cfg.face)
    obs = []
    t = 1_764_000_000.0
    for i, photo in enumerate([FACES / "obama" / "obama2.jpg", None, None, FACES / "biden" / "biden.jpg"]):
        image = letterboxed(photo) if photo else np.zeros((480, 640, 3), np.uint8)
        for k in range(6):  # each photo held for six frames at 10 fps, then a gap
            obs += path.process(Frame("cam1", i * 6 + k, t, image))
            t += 0.1
    obs += path.finish()
    assert len(obs) == 2  # one observation per passage, not per frame
    obama, biden = obs
    assert obama.kind is EventKind.FACE_PASSAGE and obama.subject is not None
    assert obama.subject.kind is IdKind.RESIDENT and obama.subject.value == "r-obama"
    # Decided while the person is still in view: on the third good frame, not when the track ends.
    assert obama.attrs["matched"] is True and obama.attrs["decision"] == "early"
    assert obama.attrs["frames"] == cfg.face.early_min_hits == 3 and obama.attrs["embedded"] == 3
    assert obama.ts == pytest.approx(1_764_000_000.0 + 0.2) and obama.event_id is not None
    assert biden.subject is None and biden.subject_ref and biden.attrs["matched"] is False
    assert biden.attrs["unmatched"] == "no_resident"
    # Issue 12: an unknown face publishes no gallery similarity (it told how close a stranger came).
    assert "confidence" not in biden.attrs and 0 < float(obama.attrs["confidence"]) <= 1
    assert obama.embedding is not None and abs(float(np.linalg.norm(obama.embedding)) - 1) < 1e-4
    gallery.close()
    assert main(["residents", "remove", "--config", str(cfg_path), "--id", "r-obama"]) == 0
    assert main(["residents", "remove", "--config", str(cfg_path), "--id", "r-obama"]) == 1


def test_capture_daemon_commits_one_event_per_passage(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    clip.mkdir()
    frames = [FACES / "biden" / "biden.jpg", None, None, FACES / "obama" / "obama3.jpg", None, None]
    for i, photo in enumerate(frames):
        cv2.imwrite(str(clip / f"{i:02d}.jpg"), letterboxed(photo) if photo else np.zeros((480, 640, 3), np.uint8))
    cfg_path = _setup(tmp_path, f'\n[[cameras]]\nid = "gate1"\nkind = "file"\npath = "{clip}"\npace = "fast"\n'
                                 'fps = 10\nhold_frames = 5\n')
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "capture", "--config", str(cfg_path), "--exit-when-done"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(cfg_path)
    ob = Outbox(cfg.path(cfg.outbox.path))
    rows = ob.pending(100)
    payloads = [json.loads(r.payload) for r in rows]
    assert [p["kind"] for p in payloads] == ["face_passage", "face_passage"]
    assert [p["seq"] for p in payloads] == [1, 2]
    assert all(p["subject"]["type"] == "unknown_face" for p in payloads)
    assert all("confidence" not in p["attrs"] for p in payloads)
    assert payloads[0]["subject"]["ref"] != payloads[1]["subject"]["ref"]
    status = ob.get_status()["capture"]
    assert status["cameras"]["gate1"]["state"] == "finished"  # type: ignore[index]
    assert status["committed"] == 2
    # Which ONNX Runtime provider each model runs on is part of the status (CPU on this machine).
    # SFace: the file the default options load (the int8 copy once `edgegw models fetch` wrote it).
    sface = runtime_model_path(MODELS_DIR, "sface", cfg.models.runtime_options()).name
    assert status["inference"] == {"yunet.edge.onnx": "CPUExecutionProvider", sface: "CPUExecutionProvider"}
    # The passage store's write health rides in capture's status (issue 17): both recorded, none missed.
    assert status["passages"]["stored"] == 2 and status["passages"]["missed"] == 0  # type: ignore[index]
    assert status["full_refusals"] == 0


def test_capture_refuses_a_world_readable_key(tmp_path: Path) -> None:
    cfg_path = _setup(tmp_path, '\n[[cameras]]\nid = "gate1"\nkind = "fake"\nframes = 1\n')
    key = tmp_path / "data" / "gateway.key"
    os.chmod(key, 0o644)
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "capture", "--config", str(cfg_path), "--exit-when-done"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1
    assert "chmod 600" in proc.stderr and str(key) in proc.stderr
    assert key.read_text().strip() not in proc.stderr


def test_enrolment_removal_and_config_changes_are_audited_without_raw_ids(tmp_path: Path) -> None:
    from edge.audit import AuditLog

    cfg_path = _setup(tmp_path, '\n[[cameras]]\nid = "gate1"\nkind = "fake"\nframes = 2\n')
    assert main(["residents", "enrol", "--config", str(cfg_path), "--id", "r-biden", "--consent", "C-9",
                 str(FACES / "biden" / "biden.jpg")]) == 0
    assert main(["residents", "remove", "--config", str(cfg_path), "--id", "r-biden"]) == 0
    for _ in range(2):  # the same config twice: one config_change record, not two
        proc = subprocess.run([sys.executable, "-m", "edge.cli", "capture", "--config", str(cfg_path),
                               "--exit-when-done"], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
    cfg = load_config(cfg_path)
    with AuditLog(cfg.path(cfg.audit.path), create=False) as audit:
        assert audit.verify().ok
        records = audit.records()
    # Each daemon start also runs (and audits) a retention purge; the rest is ours.
    assert [r.action for r in records if r.action != "purge"] == ["enrol", "remove", "config_change"]
    assert all("r-biden" not in r.details for r in records)
    assert json.loads(records[0].details)["consent"] == "C-9"


def test_a_16_bit_png_enrols(tmp_path: Path) -> None:
    # Issue 12: `residents enrol` read photos unchanged, so a 16-bit PNG reached the detector as uint16
    # and crashed the command. Photos now go through read_image (sized from the header, 8-bit BGR).
    cfg_path = _setup(tmp_path)
    photo = cv2.imread(str(FACES / "obama" / "obama.jpg"))
    assert photo is not None
    deep = tmp_path / "obama16.png"
    assert cv2.imwrite(str(deep), photo.astype(np.uint16) * 257)
    assert main(["residents", "enrol", "--config", str(cfg_path), "--id", "r-deep", "--consent", "C-18",
                 str(deep)]) == 0
