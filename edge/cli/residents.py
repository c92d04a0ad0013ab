"""`edgegw residents enrol|list|remove`: the consented resident gallery (embeddings encrypted at rest)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.app.config import load_config
from edge.compat import UTC
from edge.errors import EdgeError


def cmd_enrol(args: argparse.Namespace) -> int:
    """Enrol a resident from one or more photos."""
    from edge.app.residents import enrol_photos  # the face models: loaded for this command only
    from edge.residents import Consent

    cfg = load_config(Path(args.config))
    at = None
    if args.consented_at:
        try:
            at = datetime.fromisoformat(args.consented_at).replace(tzinfo=UTC).timestamp()
        except ValueError as exc:
            raise EdgeError(f"--consented-at: {exc} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)") from None
    consent = Consent(args.consent, args.consented_by, at, tuple(args.purpose or ("gate_access_face",)))
    stored, problems = enrol_photos(cfg, args.id, consent, [Path(p) for p in args.photos])
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if not stored:
        raise EdgeError(f"nothing enrolled for {args.id}: no usable face in the photos given")
    print(f"enrolled {args.id}: {stored} embedding(s), consent {args.consent}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List enrolled residents (ids and consent references; never embeddings)."""
    from edge.app.residents import open_gallery

    gallery = open_gallery(load_config(Path(args.config)))
    for r in gallery.list():
        when = datetime.fromtimestamp(r.enrolled_ts, UTC).strftime("%Y-%m-%d %H:%M")
        signed = datetime.fromtimestamp(r.consent.consented_at or r.enrolled_ts, UTC).strftime("%Y-%m-%d")
        print(f"{r.resident_id}\tconsent={r.consent_ref}\tby={r.consent.consented_by}\tsigned={signed}\t"
              f"purposes={','.join(r.consent.purposes)}\tenrolled={when}Z\tembeddings={r.embeddings}")
    gallery.close()
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Erase a resident completely (`remove`), or because they withdrew consent (`withdraw`)."""
    from edge.app.residents import erase_resident

    reason = "consent_withdrawn" if args.residents_command == "withdraw" else "removed"
    done = erase_resident(load_config(Path(args.config)), args.id, reason=reason)
    if done is None:
        raise EdgeError(f"no resident {args.id} is enrolled")
    print(f"erased {args.id}: {done[0]} embedding(s), {done[1]} stored passage record(s), their key shredded"
          + (" (consent withdrawn)" if reason == "consent_withdrawn" else ""))
    return 0


def register(sub: Any) -> None:
    """Add `residents` commands."""
    p = sub.add_parser("residents", help="the consented resident gallery")
    rs = p.add_subparsers(dest="residents_command", required=True)
    e = rs.add_parser("enrol", help="enrol a resident from photos")
    e.add_argument("--config", required=True)
    e.add_argument("--id", required=True, help="the community's resident id")
    e.add_argument("--consent", required=True, help="reference of the signed consent form")
    e.add_argument("--consented-by", default="resident",
                   help="who signed it: the resident (default) or a guardian/representative, as the form names them")
    e.add_argument("--consented-at", help="when it was signed (UTC, YYYY-MM-DD[THH:MM]; default: now)")
    e.add_argument("--purpose", action="append",
                   help="what was consented to (repeatable; default gate_access_face)")
    e.add_argument("photos", nargs="+")
    e.set_defaults(func=cmd_enrol)
    ls = rs.add_parser("list", help="list enrolled residents")
    ls.add_argument("--config", required=True)
    ls.set_defaults(func=cmd_list)
    for name, text in (("remove", "erase a resident completely (gallery, stored passages; key shredded)"),
                       ("withdraw", "the resident withdrew consent: record it and erase them completely")):
        rm = rs.add_parser(name, help=text)
        rm.add_argument("--config", required=True)
        rm.add_argument("--id", required=True)
        rm.set_defaults(func=cmd_remove)
