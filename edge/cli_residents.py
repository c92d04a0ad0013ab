"""`edgegw residents enrol|list|remove`: the consented resident gallery (embeddings encrypted at rest)."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.audit import AuditAction
from edge.compat import UTC
from edge.config import Config, load_config
from edge.errors import EdgeError
from edge.passages.factory import open_audit
from edge.privacy import Pseudonymiser
from edge.residents import ResidentGallery
from edge.secrets import data_key, district_key
from edge.types import IdKind


def _gallery(cfg: Config) -> ResidentGallery:
    return ResidentGallery(cfg.path(cfg.storage.residents_db), data_key(cfg))


def _audit(cfg: Config, action: AuditAction, resident_id: str, **details: str | int) -> None:
    # The audit trail names the resident by pseudonym only: it is published (its head) and exported.
    pseudonym, key_id = Pseudonymiser(district_key(cfg), cfg.privacy.epoch).pseudonym_at(
        IdKind.RESIDENT, resident_id, time.time())
    audit = open_audit(cfg)
    try:
        audit.append(f"cli:{getpass.getuser()}", action, {"resident": pseudonym, "key_id": key_id, **details})
    finally:
        audit.close()


def enrol_photos(cfg: Config, resident_id: str, consent: str, photos: list[Path]) -> tuple[int, list[str]]:
    """Embed the largest face of each photo and store them; returns (stored, problems)."""
    from edge.capture import runtime_options
    from edge.vision.faces import FaceAnalyzer

    analyzer = FaceAnalyzer(cfg.models.dir, runtime_options(cfg), score_threshold=cfg.face.score_threshold)
    crops = []
    problems = []
    for photo in photos:
        image = cv2.imread(str(photo), cv2.IMREAD_UNCHANGED)
        if image is None:
            problems.append(f"{photo}: not an image OpenCV can read")
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
    gallery = _gallery(cfg)
    try:
        stored = gallery.enrol(resident_id, consent, analyzer.embed(np.stack(crops)))
    finally:
        gallery.close()
    _audit(cfg, AuditAction.ENROL, resident_id, consent=consent, embeddings=stored)
    return stored, problems


def cmd_enrol(args: argparse.Namespace) -> int:
    """Enrol a resident from one or more photos."""
    cfg = load_config(Path(args.config))
    stored, problems = enrol_photos(cfg, args.id, args.consent, [Path(p) for p in args.photos])
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if not stored:
        raise EdgeError(f"nothing enrolled for {args.id}: no usable face in the photos given")
    print(f"enrolled {args.id}: {stored} embedding(s), consent {args.consent}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List enrolled residents (ids and consent references; never embeddings)."""
    gallery = _gallery(load_config(Path(args.config)))
    for r in gallery.list():
        when = datetime.fromtimestamp(r.enrolled_ts, UTC).strftime("%Y-%m-%d %H:%M")
        print(f"{r.resident_id}\tconsent={r.consent_ref}\tenrolled={when}Z\tembeddings={r.embeddings}")
    gallery.close()
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Remove a resident (consent withdrawn)."""
    cfg = load_config(Path(args.config))
    gallery = _gallery(cfg)
    n = gallery.remove(args.id)
    gallery.close()
    if not n:
        raise EdgeError(f"no resident {args.id} is enrolled")
    _audit(cfg, AuditAction.REMOVE, args.id, embeddings=n)
    print(f"removed {args.id} ({n} embedding(s))")
    return 0


def register(sub: Any) -> None:
    """Add `residents` commands."""
    p = sub.add_parser("residents", help="the consented resident gallery")
    rs = p.add_subparsers(dest="residents_command", required=True)
    e = rs.add_parser("enrol", help="enrol a resident from photos")
    e.add_argument("--config", required=True)
    e.add_argument("--id", required=True, help="the community's resident id")
    e.add_argument("--consent", required=True, help="reference of the signed consent")
    e.add_argument("photos", nargs="+")
    e.set_defaults(func=cmd_enrol)
    ls = rs.add_parser("list", help="list enrolled residents")
    ls.add_argument("--config", required=True)
    ls.set_defaults(func=cmd_list)
    rm = rs.add_parser("remove", help="remove a resident")
    rm.add_argument("--config", required=True)
    rm.add_argument("--id", required=True)
    rm.set_defaults(func=cmd_remove)
