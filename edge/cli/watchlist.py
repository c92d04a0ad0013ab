"""`edgegw watchlist verify`: check a signed watch-list file as a gateway would, and summarise it."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from edge.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `watchlist` command group."""
    group = subparsers.add_parser("watchlist", help="signed watch-lists (布控) from the platform")
    sub = group.add_subparsers(dest="watchlist_command", required=True)
    verify = sub.add_parser("verify", help="verify a list's signature, district and expiry; print its summary")
    verify.add_argument("file", type=Path, help="the list as published (JSON)")
    verify.add_argument("--key", required=True, type=Path, help="the platform's Ed25519 public key (PEM or hex)")
    verify.add_argument("--district", default=None, help="refuse a list for another district")
    verify.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    from edge.watchlist import Refusal, WatchlistRefusedError, load_public_key, verify_watchlist

    try:
        payload = args.file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{args.file}: {exc.strerror or exc}") from None
    wl, _ = verify_watchlist(payload, load_public_key(args.key))
    now = time.time()
    if args.district is not None and wl.district != args.district:
        raise WatchlistRefusedError(Refusal.WRONG_DISTRICT, f"the list is for district {wl.district}")
    if now >= wl.expires_at:
        raise WatchlistRefusedError(Refusal.EXPIRED, "expires_at has passed")
    # Counts only: the pseudonyms themselves are the platform's business.
    print(json.dumps({"list_id": wl.list_id, "version": wl.version, "district": wl.district, "case_id": wl.case_id,
                      "approver": wl.approver, "issued_at": wl.issued_at, "expires_at": wl.expires_at,
                      "entries": dict(Counter(e.kind.value for e in wl.entries)),
                      "epochs": sorted({e.key_id for e in wl.entries})}, ensure_ascii=False, separators=(",", ":")))
    return 0
