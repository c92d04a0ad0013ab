"""`edgegw query plate|card|mac|photo|range|serve` and `edgegw passages purge|status`.

An officer at the gateway runs queries with their own token (`--token-file`, mode 0600); the token
decides the role and what the answer shows. A value given as `-` is read from standard input, so a
plate or card number need not appear in the shell history or the process list.
Exit status: 0 answered (even with no hits), 3 refused (the reason is printed and audited).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from edge.app.config import Config, load_config
from edge.errors import ConfigError
from edge.events import iso_ms
from edge.query.model import Channel, QueryKind, QueryRefusedError, QueryRequest, QueryResult, View
from edge.query.principals import read_token_file
from edge.query.wire import WireError, parse_time, refusal_to_json, result_to_json
from edge.types import IdKind, RawIdentifier

log = logging.getLogger(__name__)

EXIT_REFUSED = 3
_ID_KIND = {QueryKind.PLATE: IdKind.PLATE, QueryKind.CARD: IdKind.CARD, QueryKind.MAC: IdKind.MAC}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `query` and `passages` command groups."""
    query = subparsers.add_parser("query", help="police queries over the local passage records (audited)")
    qsub = query.add_subparsers(dest="query_command", required=True)
    for kind, what in ((QueryKind.PLATE, "plate text"), (QueryKind.CARD, "card number (hex)"),
                       (QueryKind.MAC, "phone MAC address")):
        p = qsub.add_parser(kind.value, help=f"passages of a {what}")
        p.add_argument("value", metavar="VALUE", help=f"the {what}, or - to read it from standard input")
        _common(p, kind)
    photo = qsub.add_parser("photo", help="passages of the person in a photo (largest face)")
    photo.add_argument("photo", type=Path, metavar="PATH", help="a JPEG/PNG/WebP image")
    photo.add_argument("--threshold", type=float, help="cosine similarity to reach (never below the gateway's)")
    _common(photo, QueryKind.PHOTO)
    _common(qsub.add_parser("range", help="every passage in a time range (optionally at one gate)"), QueryKind.RANGE)
    serve = qsub.add_parser("serve", help="run the HTTP API and the MQTT responder until stopped")
    serve.add_argument("--config", required=True)
    serve.set_defaults(func=cmd_serve)
    door = qsub.add_parser("door-key", help="print this gateway's MQTT door public key (what the district "
                                            "encrypts requests to)")
    door.add_argument("--config", required=True)
    door.set_defaults(func=cmd_door_key)

    passages = subparsers.add_parser("passages", help="the local passage store")
    psub = passages.add_subparsers(dest="passages_command", required=True)
    purge = psub.add_parser("purge", help="delete expired records and destroy expired epoch keys (audited)")
    purge.add_argument("--config", required=True)
    purge.set_defaults(func=cmd_purge)
    status = psub.add_parser("status", help="record counts and live/destroyed epoch keys")
    status.add_argument("--config", required=True)
    status.set_defaults(func=cmd_status)


def _common(p: argparse.ArgumentParser, kind: QueryKind) -> None:
    p.add_argument("--config", required=True)
    p.add_argument("--token-file", type=Path, required=True, help="file with your query token (mode 0600)")
    p.add_argument("--case", dest="case_id", help="case ID (required: a query without one is refused)")
    p.add_argument("--officer", dest="officer_id", help="your officer ID (defaults to the one your token names)")
    p.add_argument("--from", dest="t1", required=True, help="start: ISO-8601 (UTC if no offset) or epoch seconds")
    p.add_argument("--to", dest="t2", help="end (default: now)")
    p.add_argument("--gate", help="only this gate")
    p.add_argument("--limit", type=int, help="at most this many passages")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_query, kind=kind)


def _config(args: argparse.Namespace) -> Config:
    return load_config(Path(args.config))


def _request(args: argparse.Namespace) -> QueryRequest:
    kind: QueryKind = args.kind
    try:
        t1 = parse_time(args.t1, "--from")
        t2 = parse_time(args.t2, "--to") if args.t2 else time.time()
    except WireError as exc:
        raise ConfigError(str(exc)) from None
    identifier = None
    if kind in _ID_KIND:
        value = sys.stdin.readline().strip() if args.value == "-" else args.value
        identifier = RawIdentifier(_ID_KIND[kind], value)
    photo = None
    if kind is QueryKind.PHOTO:
        try:
            photo = args.photo.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read photo {args.photo}: {exc.strerror}") from exc
    return QueryRequest(kind=kind, case_id=args.case_id, officer_id=args.officer_id, t1=t1, t2=t2, gate=args.gate,
                        identifier=identifier, photo=photo, threshold=getattr(args, "threshold", None),
                        limit=args.limit)


def cmd_query(args: argparse.Namespace) -> int:
    """Run one query as the officer whose token is given."""
    from edge.app.query import open_query_stack  # the query stack: loaded when a query command runs

    cfg = _config(args)
    token = read_token_file(args.token_file)
    request = _request(args)
    stack = open_query_stack(cfg)
    try:
        principal = stack.principals.by_token(token)
        if principal is None:
            print("edgegw query: the token is not known to this gateway", file=sys.stderr)
            return EXIT_REFUSED
        try:
            result = stack.service.run(principal, request, Channel.CLI)
        except QueryRefusedError as err:
            if args.json:
                print(json.dumps(refusal_to_json(err), ensure_ascii=False))
            print(f"edgegw query: refused ({err.reason.value}): {err}", file=sys.stderr)
            return EXIT_REFUSED
    finally:
        stack.close()
    if args.json:
        print(json.dumps(result_to_json(result), ensure_ascii=False, indent=2))
    else:
        _print(result)
    return 0


def _print(result: QueryResult) -> None:
    print(f"query {result.query_id}  case {result.case_id}  officer {result.officer_id}: {len(result.hits)} "
          f"passage(s){' (truncated)' if result.truncated else ''}; shown: {result.view.name.lower()}; "
          f"audit record {result.audit_seq}")
    for hit in result.hits:
        score = f"  score {hit.score:.3f}" if hit.score is not None else ""
        print(f"{iso_ms(hit.ts)}  gate {hit.gate or '-'}  {hit.direction or 'none'}  "
              f"passage {hit.passage_id or '(not fused)'}{score}")
        for m in hit.members:
            if m.raw is not None:
                who = f"{m.subject_type} {m.raw}"
            elif m.pseudonym is not None and result.view >= View.PSEUDONYMS:
                who = f"{m.subject_type} pseudonym {m.pseudonym} ({m.key_id})"
            elif m.ref is not None:
                who = f"{m.subject_type} ref {m.ref}"
            else:
                who = m.subject_type or ""
            mark = "*" if m.event_id in hit.matched else " "
            extra = f"  score {m.score:.3f}" if m.score is not None else ""
            print(f"  {mark} {m.kind.value:<15} {m.source_id:<12} {iso_ms(m.ts)}  {who}{extra}")


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the HTTP API and the MQTT responder until SIGTERM/SIGINT."""
    from edge.app.query import serve  # the query stack: loaded when a query command runs

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(_config(args), stop)
    return 0


def cmd_door_key(args: argparse.Namespace) -> int:
    """Print the recipient name and X25519 public key the district addresses this gateway's requests to."""
    from cryptography.hazmat.primitives import serialization

    from edge.app.query import door_key
    from edge.app.wiring import origin_of
    from edge.query.mqtt_rr import door_public_key, recipient

    cfg = _config(args)
    public = door_public_key(door_key(cfg)).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    print(f"{recipient(origin_of(cfg))} {public.hex()}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """Purge expired passage data now (also done hourly by the capture daemon)."""
    from edge.app.query import open_store_stack  # the query stack: loaded when a query command runs
    from edge.app.retention import apply_retention

    cfg = _config(args)
    audit, store = open_store_stack(cfg)
    try:
        report = store.purge(actor=f"cli:{getpass.getuser()}")
        kept = apply_retention(cfg, audit, actor=f"cli:{getpass.getuser()}")
    finally:
        store.close()
        audit.close()
    print(f"audit: {kept.audit_records_pruned} record(s) past retention pruned, {kept.case_keys_shredded} case "
          f"key(s) shredded; pseudonym epoch keys destroyed: {kept.epoch_keys_destroyed}")
    sealed = ", ".join(f"{k} {v}" for k, v in sorted(report.sealed_deleted.items())) or "none"
    print(f"purged {report.records_deleted} record(s); sealed fields deleted: {sealed}; "
          f"epoch keys destroyed: {len(report.keys_destroyed)}; audit record {report.audit_seq}")
    for key in report.keys_destroyed:
        print(f"  destroyed {key.label} (key {key.key_id})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print record counts and the live and destroyed epoch keys."""
    from edge.app.query import open_store_stack  # the query stack: loaded when a query command runs

    audit, store = open_store_stack(_config(args))
    try:
        counts = store.counts()
        live = store.keys.epochs()
        destroyed = store.keys.destroyed()
    finally:
        store.close()
        audit.close()
    print(f"records {counts['records']}, links {counts['links']}, sealed fields {counts['sealed']}")
    print(f"live epoch keys ({len(live)}): {', '.join(k.label for k in live) or '-'}")
    print(f"destroyed epoch keys ({len(destroyed)}): {', '.join(k.label for k in destroyed) or '-'}")
    return 0
