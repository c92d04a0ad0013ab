"""Residents: enrolment from photos (largest face, embedded, sealed) with a consent record, complete
erasure (removal or withdrawn consent), the audit of both (by a random handle, never an id or pseudonym)."""

from __future__ import annotations

import getpass
import time
from pathlib import Path

import numpy as np

from edge.app.config import Config
from edge.app.wiring import data_key, open_audit, open_store, pseudonymiser, runtime_options
from edge.audit import AuditAction, JsonValue
from edge.residents import Consent, ResidentGallery
from edge.types import IdKind
from edge.vision.faces import FaceAnalyzer, ImageError, read_image


def open_gallery(cfg: Config) -> ResidentGallery:
    """The resident gallery (embeddings sealed under the data-at-rest key); close it after use."""
    return ResidentGallery(cfg.path(cfg.storage.residents_db), data_key(cfg))


def audit_resident(cfg: Config, action: AuditAction | str, handle: str, **details: JsonValue) -> None:
    """Record an enrolment or erasure in the audit log, naming the resident by their random handle.

    The handle exists only in the resident's gallery row: once they are erased, it links to nobody.
    (A pseudonym here would link the audit to every published event of theirs, forever.)
    """
    audit = open_audit(cfg)
    try:
        audit.append(f"cli:{getpass.getuser()}", action, {"resident": handle, **details})
    finally:
        audit.close()


def erase_resident(cfg: Config, resident_id: str, *, reason: str = "removed") -> tuple[int, int] | None:
    """Erase a resident completely: gallery key, id, consent and embeddings shredded, and every stored
    passage record about them (by their pseudonym in each epoch whose key the gateway holds) erased.
    Audited. Returns (embeddings, passage records) destroyed, or None if not enrolled."""
    gallery = open_gallery(cfg)
    try:
        done = gallery.erase(resident_id)
    finally:
        gallery.close()
    if done is None:
        return None
    records = 0
    if cfg.passages.enabled and cfg.path(cfg.passages.path).exists():
        now = time.time()
        # Records live at most records_days; one more epoch covers the one the oldest record is in.
        since = now - (cfg.passages.retention.records_days + 31) * 86400.0
        pseudonyms = [p for p, _ in pseudonymiser(cfg).pseudonyms_between(IdKind.RESIDENT, resident_id, since, now)]
        audit = open_audit(cfg)
        try:
            store = open_store(cfg, data_key(cfg), audit)
            try:
                records = store.erase_subject(IdKind.RESIDENT.value, pseudonyms)
            finally:
                store.close()
        finally:
            audit.close()
    audit_resident(cfg, AuditAction.REMOVE if reason == "removed" else "consent_withdrawn", done.handle,
                   embeddings=done.embeddings, passage_records=records, reason=reason)
    return done.embeddings, records


def enrol_photos(cfg: Config, resident_id: str, consent: Consent | str, photos: list[Path]) -> tuple[int, list[str]]:
    """Embed the largest face of each photo and store them; returns (stored, problems)."""
    analyzer = FaceAnalyzer(cfg.models.dir, runtime_options(cfg), score_threshold=cfg.face.score_threshold)
    crops = []
    problems = []
    for photo in photos:
        try:  # sized from the header first; 16-bit and RGBA PNGs come back as 8-bit BGR
            image = read_image(photo)
        except ImageError as exc:
            problems.append(str(exc))
            continue
        dets = analyzer.detect(image)
        if not dets:
            problems.append(f"{photo}: no face found")
            continue
        if len(dets) > 1:
            problems.append(f"{photo}: {len(dets)} faces; using the largest")
        best = max(dets, key=lambda d: d.box.area)
        crops.append(analyzer.align(image, best))
    if not crops:
        return 0, problems
    gallery = open_gallery(cfg)
    try:
        record = Consent(consent) if isinstance(consent, str) else consent
        stored = gallery.enrol(resident_id, record, analyzer.embed(np.stack(crops)))
        handle = gallery.handle_of(resident_id)
    finally:
        gallery.close()
    assert handle is not None
    # The consent's reference and purposes are audited; who signed it stays sealed in the gallery.
    audit_resident(cfg, AuditAction.ENROL, handle, consent=record.reference, purposes=list(record.purposes),
                   embeddings=stored)
    return stored, problems


def remove_resident(cfg: Config, resident_id: str) -> int:
    """Erase a resident (see `erase_resident`); returns how many embeddings were destroyed (0: not enrolled)."""
    done = erase_resident(cfg, resident_id)
    return 0 if done is None else done[0]
