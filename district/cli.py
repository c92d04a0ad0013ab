"""`edgegw district ...`: the platform's commands (migrate, ingest, retention, search, audit-check, serve).

`register(sub)` adds the group to the edgegw CLI; `python -m district ...` runs the same commands
without the gateway's CLI (the systemd units and the tests use that).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from district.config import DistrictConfig, load_config

log = logging.getLogger(__name__)


def _config(args: argparse.Namespace) -> DistrictConfig:
    cfg = load_config(args.config)
    updates: dict[str, Any] = {}
    if args.dsn:
        updates["database"] = cfg.database.model_copy(update={"dsn": args.dsn})
    mqtt: dict[str, Any] = {}
    if getattr(args, "mqtt_host", None):
        mqtt["host"] = args.mqtt_host
    if getattr(args, "mqtt_port", None):
        mqtt["port"] = args.mqtt_port
    if getattr(args, "client_id", None):
        mqtt["client_id"] = args.client_id
    if mqtt:
        updates["mqtt"] = cfg.mqtt.model_copy(update=mqtt)
    if getattr(args, "amqp_url", None):
        updates["amqp"] = cfg.amqp.model_copy(update={"url": args.amqp_url})
    return cfg.model_copy(update=updates) if updates else cfg


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="district TOML (default: built-in defaults)")
    p.add_argument("--dsn", help="PostgreSQL DSN (overrides [database].dsn)")


def _cmd_migrate(args: argparse.Namespace) -> int:
    from district.db import migrate

    applied = migrate(_config(args).database.dsn)
    print(f"applied {len(applied)} migration(s): {applied}" if applied else "schema is up to date")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.migrate:
        from district.db import migrate

        migrate(cfg.database.dsn)
    worker: Any
    if args.transport == "amqp":
        from district.amqp_worker import AmqpIngestWorker

        worker = AmqpIngestWorker(cfg)
    else:
        from district.mqtt_worker import MqttIngestWorker

        worker = MqttIngestWorker(cfg)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    worker.run()
    return 0


def _cmd_retention(args: argparse.Namespace) -> int:
    from district.db import connect
    from district.partitions import drop_older_than

    cfg = _config(args)
    days = args.days or cfg.retention.events_days
    with connect(cfg.database.dsn, autocommit=True) as conn:
        dropped = drop_older_than(conn, days)
        conn.execute("DELETE FROM gateway_status WHERE received_at < now() - make_interval(days => %s)",
                     (cfg.retention.status_days,))
        conn.execute("DELETE FROM rejects WHERE received_at < now() - make_interval(days => %s)", (days,))
    print(json.dumps({"dropped_partitions": dropped, "kept_days": days}))
    return 0


def _principal(cfg: DistrictConfig, token_file: Path) -> Any:
    from district.principals import Principals
    from edge.errors import ConfigError

    if cfg.search.tokens_file is None:
        raise ConfigError("[search].tokens_file is not set: searches are made under a token's principal")
    who = Principals.load(cfg.search.tokens_file).authenticate(token_file.read_text().strip())
    if who is None:
        raise ConfigError(f"the token in {token_file} is not in {cfg.search.tokens_file}")
    return who


def _search_service(cfg: DistrictConfig) -> Any:
    from district.db import connect
    from district.search import KeyService, SearchService

    return SearchService(cfg.search, KeyService.from_config(cfg.search),
                         lambda: connect(cfg.database.dsn, timeout_s=cfg.database.connect_timeout_s))


def _when(text: str, *, end: bool = False) -> Any:
    from datetime import datetime, timedelta

    from edge.compat import UTC

    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if end and len(text) == 10:  # a bare date as the end means the whole day
        dt += timedelta(days=1) - timedelta(milliseconds=1)
    return dt


def _cmd_search(args: argparse.Namespace) -> int:
    from datetime import datetime

    from district.errors import SearchRefusedError
    from district.search import SearchKind, SearchRequest
    from edge.compat import UTC

    cfg = _config(args)
    who = _principal(cfg, args.token_file)
    # "-" reads the value from stdin, so a plate or card number stays out of the shell history.
    value = sys.stdin.readline().strip() if args.value == "-" else args.value
    req = SearchRequest(SearchKind(args.kind), value, _when(args.start),
                        _when(args.end, end=True) if args.end else datetime.now(UTC), args.case, args.officer)
    try:
        res = _search_service(cfg).search(who, req)
    except SearchRefusedError as exc:
        print(f"refused ({exc.reason}): {exc}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps({"hits": [{"event_id": h.event_id, "ts": h.ts.isoformat(), "gateway":
                                    f"{h.district}/{h.community}/{h.gateway}", "gate": h.gate, "kind": h.kind}
                                   for h in res.hits], "epochs": res.epochs, "truncated": res.truncated,
                          "audit_seq": res.audit_seq}, ensure_ascii=False))
    else:
        for h in res.hits:
            print(f"{h.ts.isoformat()}  {h.district}/{h.community}/{h.gateway}  {h.gate:<12} {h.kind:<14} {h.event_id}")
        print(f"{len(res.hits)} hit(s) over epochs {', '.join(res.epochs)}; audit record {res.audit_seq}."
              f" Details: ask each gateway's query door with --case {args.case}.", file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from district.api import create_app
    from district.principals import Principals
    from edge.errors import ConfigError

    cfg = _config(args)
    if cfg.search.tokens_file is None:
        raise ConfigError("[search].tokens_file is not set: the API admits callers by token only")
    app = create_app(_search_service(cfg), Principals.load(cfg.search.tokens_file))
    uvicorn.run(app, host=cfg.http.bind, port=args.port if args.port is not None else cfg.http.port,
                log_level="info", access_log=False)  # access logs are off: no caller detail in the journal
    return 0


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from district.db import connect
    from district.platform_audit import verify

    with connect(_config(args).database.dsn) as conn:
        c = verify(conn)
    print(json.dumps({"ok": c.ok, "records": c.records, "head": f"{c.head_seq}:{c.head_hash}",
                      "first_bad_seq": c.first_bad_seq, "message": c.message}))
    return 0 if c.ok else 1


def _cmd_audit_check(args: argparse.Namespace) -> int:
    from district.auditcheck import check_against_chain, check_history
    from district.db import connect

    with connect(_config(args).database.dsn) as conn:
        if args.gateway_db:
            if not args.gateway:
                print("--gateway-db needs --gateway DISTRICT/COMMUNITY/GATEWAY", file=sys.stderr)
                return 2
            n, findings = check_against_chain(conn, args.gateway, args.gateway_db)
        else:
            n, findings = check_history(conn, args.gateway)
    for f in findings:
        print(f"{f.gateway} (head seen {f.seen_at}): {f.problem}")
    print(f"{n} stored head(s) checked, {len(findings)} problem(s)", file=sys.stderr)
    return 1 if findings else 0


def register(sub: Any) -> None:
    """Add the `district` command group to an argparse sub-parsers object."""
    p = sub.add_parser("district", help="the district platform: ingest, search, audit checks")
    _add_commands(p.add_subparsers(dest="district_command", required=True))


def _add_commands(dsub: Any) -> None:

    m = dsub.add_parser("migrate", help="apply the versioned schema migrations")
    _common(m)
    m.set_defaults(func=_cmd_migrate)

    i = dsub.add_parser("ingest", help="run one ingest worker (MQTT 5 shared subscription or AMQP)")
    _common(i)
    i.add_argument("--transport", choices=("mqtt", "amqp"), default="mqtt")
    i.add_argument("--mqtt-host")
    i.add_argument("--mqtt-port", type=int)
    i.add_argument("--amqp-url")
    i.add_argument("--client-id", help="stable per worker, so its broker session survives a restart")
    i.add_argument("--migrate", action="store_true", help="apply migrations first")
    i.set_defaults(func=_cmd_ingest)

    r = dsub.add_parser("retention", help="drop whole day partitions older than the retention")
    _common(r)
    r.add_argument("--days", type=int, help="keep this many days (default [retention].events_days)")
    r.set_defaults(func=_cmd_retention)

    s = dsub.add_parser("search", help="district-wide police search by plate, card or MAC (audited)")
    _common(s)
    s.add_argument("kind", choices=("plate", "card", "mac"))
    s.add_argument("value", help="the raw value, or - to read it from stdin (keeps it out of shell history)")
    s.add_argument("--from", dest="start", required=True, help="ISO date or time (UTC unless it says)")
    s.add_argument("--to", dest="end", help="ISO date or time (default: now)")
    s.add_argument("--case", required=True, help="the case id (required)")
    s.add_argument("--officer", required=True, help="the officer id (required)")
    s.add_argument("--token-file", required=True, type=Path, help="file holding your API token")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_search)

    v = dsub.add_parser("serve", help="the HTTP API (FastAPI; OpenAPI at /openapi.json)")
    _common(v)
    v.add_argument("--port", type=int)
    v.set_defaults(func=_cmd_serve)

    av = dsub.add_parser("audit-verify", help="verify the platform's own hash-chained audit log")
    _common(av)
    av.set_defaults(func=_cmd_audit_verify)

    ac = dsub.add_parser("audit-check", help="compare the gateways' stored audit heads (tamper evidence)")
    _common(ac)
    ac.add_argument("--gateway", help="DISTRICT/COMMUNITY/GATEWAY (default: every gateway)")
    ac.add_argument("--gateway-db", type=Path, help="that gateway's audit database, to check the heads against")
    ac.set_defaults(func=_cmd_audit_check)

    # The case desk and the watch-lists (their own module: one job each).
    from district.cases_cli import register as register_cases

    register_cases(dsub, _common, _config)

    # The key service's own commands (issue epoch-key bundles, verify signed heads).
    from district.keyservice import register as register_keyservice

    register_keyservice(dsub)


def main(argv: list[str] | None = None) -> int:
    """`python -m district ...`: the same commands as `edgegw district ...`."""
    from edge.errors import ConfigError, EdgeError

    parser = argparse.ArgumentParser(prog="python -m district")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    _add_commands(parser.add_subparsers(dest="district_command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rc: int = args.func(args)
    except ConfigError as exc:
        print(f"edgegw district: configuration error: {exc}", file=sys.stderr)
        return 2
    except EdgeError as exc:
        print(f"edgegw district: {exc}", file=sys.stderr)
        return 1
    return rc
