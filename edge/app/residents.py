"""Residents: enrolment from photos (largest face, embedded, sealed), removal, the audit of both."""

from __future__ import annotations

import getpass
import time
from pathlib import Path

import numpy as np

from edge.app.config import Config
from edge.app.wiring import data_key, open_audit, pseudonymiser, runtime_options
from edge.audit import AuditAction
from edge.residents import ResidentGallery
from edge.types import IdKind
from edge.vision.faces import FaceAnalyzer, ImageError, read_image


def open_gallery(cfg: Config) -> ResidentGallery:
    """The resident gallery (embeddings sealed under the data-at-rest key); close it after use."""
    return ResidentGallery(cfg.path(cfg.storage.residents_db), data_key(cfg))


def audit_resident(cfg: Config, action: AuditAction, resident_id: str, **details: str | int) -> None:
    """Record an enrolment or removal in the audit log, naming the resident by pseudonym."""
    # The audit trail names the resident by pseudonym only: it is published (its head) and exported.
    pseudonym, key_id = pseudonymiser(cfg).pseudonym_at(
        IdKind.RESIDENT, resident_id, time.time())
    audit = open_audit(cfg)
    try:
        audit.append(f"cli:{getpass.getuser()}", action, {"resident": pseudonym, "key_id": key_id, **details})
    finally:
        audit.close()


def enrol_photos(cfg: Config, resident_id: str, consent: str, photos: list[Path]) -> tuple[int, list[str]]:
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
        stored = gallery.enrol(resident_id, consent, analyzer.embed(np.stack(crops)))
    finally:
        gallery.close()
    audit_resident(cfg, AuditAction.ENROL, resident_id, consent=consent, embeddings=stored)
    return stored, problems


def remove_resident(cfg: Config, resident_id: str) -> int:
    """Remove a resident's embeddings (consent withdrawn); audited. Returns how many were removed."""
    gallery = open_gallery(cfg)
    try:
        n = gallery.remove(resident_id)
    finally:
        gallery.close()
    if n:
        audit_resident(cfg, AuditAction.REMOVE, resident_id, embeddings=n)
    return n
