"""`edgegw district cases ...` and `edgegw district watchlist ...`: the case desk and the watch-lists.

    cases list [--state S] [--open] [--json]       cases show CASE_ID
    cases claim CASE_ID --officer O [--case-note N]
    cases dispatch CASE_ID --officer O --unit U [--case-note N]
    cases handle CASE_ID --officer O [--case-note N]
    cases close CASE_ID --officer O --case-note FEEDBACK
    cases export [--since CURSOR] [--limit N]      (JSON on stdout; `cursor` is the next --since)

    watchlist build --list-id L --case C --approver A --expires 2026-12-31|+30d [--plate V] [--card V]
                    [--mac V] [--stdin] [--push]
    watchlist push --list-id L | revoke --list-id L [--note N] | list [--json] | public-key

Every move is made as the operating-system user (`cli:<user>`) on behalf of `--officer`, and
audited. A refused move exits 3. Raw values for `watchlist build` are best given with `--stdin`
(one `kind value` per line), which keeps them out of the shell history.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from district.config import DistrictConfig

LoadConfigFn = Callable[[argparse.Namespace], DistrictConfig]
CommonFn = Callable[[argparse.ArgumentParser], None]
REFUSED = 3


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _desk(cfg: DistrictConfig) -> Any:
    from district.casedesk import CaseDesk
    from district.db import connect

    return CaseDesk(lambda: connect(cfg.database.dsn, timeout_s=cfg.database.connect_timeout_s))


def _print_case(case: Any) -> None:
    print(f"{case.case_id}  {case.state} ({case.state_label})  {case.code}  {case.district}/{case.community}/"
          f"{case.gateway}/{case.source}  {case.target}  opened {case.opened_at}"
          + (f"  list {case.list_id} case {case.police_case}" if case.list_id else "")
          + (f"  unit {case.unit}" if case.unit else ""))


def _database_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn PostgreSQL's errors into the CLI's: a schema not migrated yet says what to run."""
    def wrapped(args: argparse.Namespace) -> int:
        import psycopg

        from district.errors import DatabaseError
        from edge.errors import ConfigError

        try:
            return run(args)
        except psycopg.errors.UndefinedTable:
            raise ConfigError("the database has no case or watch-list tables: run `edgegw district migrate`") \
                from None
        except psycopg.Error as exc:
            raise DatabaseError(f"PostgreSQL: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") \
                from None
    return wrapped


def _cases_cmd(load: LoadConfigFn) -> Callable[[argparse.Namespace], int]:
    @_database_errors
    def run(args: argparse.Namespace) -> int:
        from district.casedesk import CaseError
        from district.cases import CaseState

        desk = _desk(load(args))
        try:
            if args.cases_command == "list":
                cases = desk.find(state=CaseState(args.state) if args.state else None, open_only=args.open,
                                  limit=args.limit)
                if args.json:
                    print(json.dumps([c.to_json() for c in cases], ensure_ascii=False))
                else:
                    for c in cases:
                        _print_case(c)
                    print(f"{len(cases)} case(s)", file=sys.stderr)
                return 0
            if args.cases_command == "export":
                page = desk.export(args.since, limit=args.limit)
                print(json.dumps({"cursor": page.cursor, "more": page.more,
                                  "cases": [c.to_json() for c in page.cases]}, ensure_ascii=False))
                return 0
            who = {"actor": _actor(), "officer": getattr(args, "officer", "") or ""}
            note = getattr(args, "case_note", "") or ""
            if args.cases_command == "show":
                case = desk.show(args.case_id)
            elif args.cases_command == "claim":
                case = desk.claim(args.case_id, note=note, **who)
            elif args.cases_command == "dispatch":
                case = desk.dispatch(args.case_id, unit=args.unit, note=note, **who)
            elif args.cases_command == "handle":
                case = desk.handle(args.case_id, note=note, **who)
            else:
                case = desk.close(args.case_id, note=note, **who)
        except CaseError as exc:
            print(f"refused ({exc.reason}): {exc}", file=sys.stderr)
            return REFUSED
        if args.cases_command == "show" or args.json:
            print(json.dumps(case.to_json(), ensure_ascii=False, indent=1 if args.cases_command == "show" else None))
        else:
            _print_case(case)
        return 0
    return run


def _parse_expiry(text: str) -> int:
    """`+30d`, `+12h`, an ISO date (end of that day, UTC) or an ISO time."""
    from datetime import timedelta

    from edge.compat import UTC

    if text.startswith("+") and text[-1:] in ("d", "h") and text[1:-1].isdigit():
        return int(time.time()) + int(text[1:-1]) * (86400 if text[-1] == "d" else 3600)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if len(text) == 10:
        dt += timedelta(days=1)
    return int(dt.timestamp())


def _watch_desk(cfg: DistrictConfig) -> Any:
    from district.db import connect
    from district.keyservice import KeyService
    from district.watchlists import MqttPublisher, WatchlistDesk, signing_key
    from edge.errors import ConfigError
    from edge.keys import load_secret

    w = cfg.watchlist
    if not w.district or not w.signing_key:
        raise ConfigError("[watchlist].district and [watchlist].signing_key must be set to build or push lists")
    if not cfg.search.key_file:
        raise ConfigError("[search].key_file (the district key) must be set: list entries are its pseudonyms")
    keys = KeyService(load_secret(cfg.search.key_file, purpose="district root"), cfg.search.epoch)
    signer = signing_key(load_secret(w.signing_key, purpose="watch-list signing"))
    return WatchlistDesk(lambda: connect(cfg.database.dsn, timeout_s=cfg.database.connect_timeout_s), keys, signer,
                         w.district, MqttPublisher(cfg.mqtt), prefix=cfg.mqtt.topic_prefix,
                         epochs_ahead=w.epochs_ahead, max_days=w.max_days)


def _values(args: argparse.Namespace) -> dict[Any, list[str]]:
    from edge.types import IdKind

    out: dict[IdKind, list[str]] = {}
    for kind in ("plate", "card", "mac"):
        for v in getattr(args, kind) or []:
            out.setdefault(IdKind(kind), []).append(v)
    if args.stdin:
        for n, raw in enumerate(sys.stdin, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            kind, _, value = line.partition(" ")
            if kind not in ("plate", "card", "mac") or not value.strip():
                # Name the line, never echo it: it holds a raw value.
                raise ValueError(f"stdin line {n}: expected `plate|card|mac VALUE`")
            out.setdefault(IdKind(kind), []).append(value.strip())
    return out


def _watch_cmd(load: LoadConfigFn) -> Callable[[argparse.Namespace], int]:
    @_database_errors
    def run(args: argparse.Namespace) -> int:
        from district.watchlists import WatchlistError, public_hex, signing_key
        from edge.keys import load_secret

        cfg = load(args)
        if args.watchlist_command == "public-key":
            if not cfg.watchlist.signing_key:
                from edge.errors import ConfigError

                raise ConfigError("[watchlist].signing_key is not set")
            print(public_hex(signing_key(load_secret(cfg.watchlist.signing_key, purpose="watch-list signing"))))
            return 0
        desk = _watch_desk(cfg)
        try:
            if args.watchlist_command == "list":
                lists = desk.lists()
                if args.json:
                    print(json.dumps([s.to_json() for s in lists], ensure_ascii=False))
                else:
                    for s in lists:
                        print(f"{s.list_id}  v{s.version}  {s.state:<8} case {s.police_case}  approver {s.approver}  "
                              f"expires {datetime.fromtimestamp(s.expires_at).isoformat()}  {s.counts}  "
                              f"epochs {','.join(s.epochs)}")
                return 0
            if args.watchlist_command == "build":
                try:
                    values = _values(args)
                except ValueError as exc:
                    print(f"refused: {exc}", file=sys.stderr)
                    return REFUSED
                summary = desk.build(args.list_id, values, case_id=args.case, approver=args.approver,
                                     expires_at=_parse_expiry(args.expires), actor=_actor())
                if args.push:
                    summary = desk.push(args.list_id, actor=_actor())
            elif args.watchlist_command == "push":
                summary = desk.push(args.list_id, actor=_actor())
            else:
                summary = desk.revoke(args.list_id, actor=_actor(), note=args.note or "")
        except WatchlistError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return REFUSED
        print(json.dumps(summary.to_json(), ensure_ascii=False))
        return 0
    return run


def register(dsub: Any, common: CommonFn, load: LoadConfigFn) -> None:
    """Add `cases` and `watchlist` to the district command group."""
    from district.cases import CaseState

    c = dsub.add_parser("cases", help="alarms and watch-list hits as cases: list, claim, dispatch, close, export")
    cs = c.add_subparsers(dest="cases_command", required=True)
    run = _cases_cmd(load)
    lst = cs.add_parser("list", help="cases, newest first")
    lst.add_argument("--state", choices=[s.value for s in CaseState])
    lst.add_argument("--open", action="store_true", help="only cases not archived")
    lst.add_argument("--limit", type=int, default=100)
    lst.add_argument("--json", action="store_true")
    show = cs.add_parser("show", help="one case and its history (JSON)")
    show.add_argument("case_id")
    for name, text in (("claim", "上报 → 受理: take the case"), ("dispatch", "受理 → 分拨: send a unit"),
                       ("handle", "分拨 → 处置: the unit is on it"),
                       ("close", "→ 反馈 → 归档: record the outcome and archive")):
        p = cs.add_parser(name, help=text)
        p.add_argument("case_id")
        p.add_argument("--officer", required=True, help="the officer id the move is made for")
        p.add_argument("--case-note", required=name == "close", default="",
                       help="the note (for close: the feedback, required)")
        p.add_argument("--json", action="store_true")
        if name == "dispatch":
            p.add_argument("--unit", required=True, help="the unit sent (e.g. a property-management team)")
    exp = cs.add_parser("export", help="cases changed since a cursor, with history (JSON, for a case system)")
    exp.add_argument("--since", type=int, default=0, help="the cursor from the previous export (0: everything)")
    exp.add_argument("--limit", type=int, default=500)
    for p in (lst, show, exp, *(cs.choices[n] for n in ("claim", "dispatch", "handle", "close"))):
        common(p)
        p.set_defaults(func=run)

    w = dsub.add_parser("watchlist", help="watch-lists (布控): build, sign and push to the gateways; revoke")
    ws = w.add_subparsers(dest="watchlist_command", required=True)
    wrun = _watch_cmd(load)
    b = ws.add_parser("build", help="pseudonymise values for this and the next epoch, sign, store (--push: publish)")
    b.add_argument("--list-id", required=True)
    b.add_argument("--case", required=True, help="the police case id the list is for")
    b.add_argument("--approver", required=True, help="who approved the list")
    b.add_argument("--expires", required=True, help="+30d, +12h, an ISO date (end of day, UTC) or time")
    for kind in ("plate", "card", "mac"):
        b.add_argument(f"--{kind}", action="append", help=f"a {kind} to watch (repeatable; prefer --stdin)")
    b.add_argument("--stdin", action="store_true", help="read `kind value` lines from stdin")
    b.add_argument("--push", action="store_true", help="publish it right away")
    pu = ws.add_parser("push", help="publish the newest version retained (re-signed as the next if pushed before)")
    pu.add_argument("--list-id", required=True)
    rv = ws.add_parser("revoke", help="publish a newer, empty version: the gateways stop matching")
    rv.add_argument("--list-id", required=True)
    rv.add_argument("--note", default="")
    ls = ws.add_parser("list", help="the lists, their versions and counts (never the pseudonyms)")
    ls.add_argument("--json", action="store_true")
    pk = ws.add_parser("public-key", help="print the signing public key gateways pin ([watchlist].public_key)")
    for p in (b, pu, rv, ls, pk):
        common(p)
        p.add_argument("--mqtt-host")
        p.add_argument("--mqtt-port", type=int)
        p.set_defaults(func=wrun)
