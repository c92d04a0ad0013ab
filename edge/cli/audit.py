"""CLI groups `edgegw audit` (verify, show the audit log) and `edgegw keys` (generate, fingerprint key files)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edge.audit import AuditError, AuditLog, ChainHead
from edge.keys import generate_key_file, key_fingerprint, load_secret

# Exit statuses of `audit verify`: monitoring scripts tell "tampered" from "could not check".
EXIT_OK = 0
EXIT_TAMPERED = 1
EXIT_CANNOT_CHECK = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `audit` and `keys` command groups."""
    audit = subparsers.add_parser("audit", help="check and read the tamper-evident audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)

    verify = audit_sub.add_parser(
        "verify", help="verify the hash chain; exit 0 intact, 1 tampered, 2 cannot check",
        description="Verify every record's hash and link, then the end of the chain against the anchor "
                    "file and an optional published head. Exit 0 intact, 1 tampered, 2 cannot check.",
    )
    verify.add_argument("--db", type=Path, required=True, help="audit log database")
    verify.add_argument("--anchor", type=Path, help="anchor file (default: DB.anchor beside the database)")
    verify.add_argument("--no-anchor-file", action="store_true",
                        help="do not use an anchor file (e.g. for an exported copy); truncation of the end "
                             "is then detected only with --expect-head")
    verify.add_argument("--expect-head", type=_head_arg, metavar="SEQ:HASH",
                        help="a chain head published earlier (status message) that the log must contain")
    verify.set_defaults(func=_verify)

    show = audit_sub.add_parser("show", help="print the last records as JSON lines")
    show.add_argument("--db", type=Path, required=True, help="audit log database")
    show.add_argument("--limit", type=int, default=50, metavar="N", help="how many records (default 50)")
    show.set_defaults(func=_show)

    shred = audit_sub.add_parser("shred-case", help="close a case: destroy its audit key (its digests unlink)")
    shred.add_argument("--config", required=True)
    shred.add_argument("--case", required=True, dest="case_id")
    shred.set_defaults(func=_shred_case)

    keys = subparsers.add_parser("keys", help="create and identify secret key files")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="create a random key file with mode 0600")
    gen.add_argument("path", type=Path, metavar="PATH")
    gen.add_argument("--bytes", type=int, default=32, dest="nbytes", help="key length (default 32)")
    gen.add_argument("--force", action="store_true",
                     help="replace an existing file (data sealed under the old key becomes unreadable)")
    gen.set_defaults(func=_generate)

    fp = keys_sub.add_parser("fingerprint", help="print a key file's id (safe to share; not the key)")
    fp.add_argument("path", metavar="PATH", help="key file, or a systemd credential name")
    fp.add_argument("--domain", default="key-id", help="fingerprint domain (default key-id)")
    fp.set_defaults(func=_fingerprint)
    from edge.cli.keys import add_commands

    add_commands(keys_sub)


def _head_arg(text: str) -> ChainHead:
    try:
        return ChainHead.parse(text)
    except AuditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _verify(args: argparse.Namespace) -> int:
    try:
        with AuditLog(args.db, anchor_path=args.anchor, create=False) as audit:
            result = audit.verify(args.expect_head, use_anchor_file=not args.no_anchor_file)
    except AuditError as exc:
        print(f"edgegw audit verify: cannot check: {exc}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    if result.ok:
        print(f"{args.db}: OK, {result.records} records, head {result.head}")
        if args.no_anchor_file and args.expect_head is None:
            print("note: without an anchor, records cut off the end cannot be detected", file=sys.stderr)
        return EXIT_OK
    problem = result.problem.value if result.problem else "problem"
    print(f"{args.db}: TAMPERED at record {result.first_bad_seq} ({problem}): {result.message}", file=sys.stderr)
    return EXIT_TAMPERED


def _show(args: argparse.Namespace) -> int:
    with AuditLog(args.db, create=False) as audit:
        records = audit.records(limit=args.limit)
    for rec in records:
        ts = _iso_ms(rec.ts_ms)
        print(json.dumps({
            "seq": rec.seq, "ts": ts, "actor": rec.actor, "action": rec.action,
            "details": _parsed(rec.details), "prev_hash": rec.prev_hash, "hash": rec.hash,
        }, ensure_ascii=False))
    return 0


def _iso_ms(ts_ms: object) -> object:
    # A tampered row may hold anything; show it as stored rather than crash (verify names the problem).
    if not isinstance(ts_ms, int):
        return ts_ms
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms // 1000)) + f".{ts_ms % 1000:03d}Z"


def _parsed(details: str) -> object:
    try:
        return json.loads(details)
    except (TypeError, ValueError):
        return details


def _shred_case(args: argparse.Namespace) -> int:
    import getpass

    from edge.app.config import load_config
    from edge.app.wiring import open_audit, open_case_keys

    cfg = load_config(Path(args.config))
    with open_case_keys(cfg) as keys:
        had = keys.shred(args.case_id)
    with open_audit(cfg) as audit:
        audit.append(f"cli:{getpass.getuser()}", "case_shred", {"case_id": args.case_id, "had_key": had})
    print(f"case {args.case_id}: audit key {'shredded' if had else 'was not held (marked closed)'}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    key = generate_key_file(args.path, args.nbytes, force=args.force)
    # Print the fingerprint only: the key itself never goes to a terminal or log.
    print(f"created {args.path} (mode 0600, {len(key)} bytes), fingerprint {key_fingerprint(key)}")
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    key = load_secret(args.path, purpose="the", min_bytes=16)
    print(f"{key_fingerprint(key, domain=args.domain)}  {args.path}")
    return 0
