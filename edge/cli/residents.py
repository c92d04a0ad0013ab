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
    from edge.app.residents import open_gallery

    gallery = open_gallery(load_config(Path(args.config)))
    for r in gallery.list():
        when = datetime.fromtimestamp(r.enrolled_ts, UTC).strftime("%Y-%m-%d %H:%M")
        print(f"{r.resident_id}\tconsent={r.consent_ref}\tenrolled={when}Z\tembeddings={r.embeddings}")
    gallery.close()
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Remove a resident (consent withdrawn)."""
    from edge.app.residents import remove_resident

    n = remove_resident(load_config(Path(args.config)), args.id)
    if not n:
        raise EdgeError(f"no resident {args.id} is enrolled")
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
