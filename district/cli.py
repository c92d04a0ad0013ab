"""`edgegw district ...`: the platform's commands (migrate, ingest, retention, search, audit-check, serve, viid).

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


def _details_service(cfg: DistrictConfig) -> Any:
    from district.db import connect
    from district.details import DetailsService
    from district.doorclient import DoorClient
    from district.search import KeyService

    # The door client logs in as its own broker user (the ACL's district-door) where one is set.
    login = cfg.door if cfg.door.username else cfg.mqtt
    mqtt_cfg = cfg.mqtt.model_copy(update={"username": login.username, "password_file": login.password_file})
    password = mqtt_cfg.password_file.read_text().strip() if mqtt_cfg.password_file else None
    client = DoorClient(mqtt_cfg, cfg.door, _officer_keys(cfg), password)
    return DetailsService(cfg.search, cfg.door, KeyService.from_config(cfg.search),
                          lambda: connect(cfg.database.dsn, timeout_s=cfg.database.connect_timeout_s), client.ask)


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
    if args.kind == "details":
        return _search_details(cfg, who, args)
    if len(args.value) != 1 or not args.start:
        print("a search takes one VALUE (or -) and --from", file=sys.stderr)
        return 2
    # "-" reads the value from stdin, so a plate or card number stays out of the shell history.
    value = sys.stdin.readline().strip() if args.value[0] == "-" else args.value[0]
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
              f" Details: `search details --case {args.case} --officer {args.officer} EVENT_ID…`.", file=sys.stderr)
    return 0


def _search_details(cfg: DistrictConfig, who: Any, args: argparse.Namespace) -> int:
    from district.details import DetailsRequest
    from district.errors import SearchRefusedError

    # The value the case's search was made for, from stdin unless given: the gateways need it.
    value = sys.stdin.readline().strip() if args.details_value == "-" else args.details_value
    try:
        res = _details_service(cfg).details(who, DetailsRequest(args.case, args.officer, value, tuple(args.value)))
    except SearchRefusedError as exc:
        print(f"refused ({exc.reason}): {exc}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps({"kind": res.kind, "gateways": [
            {"gateway": g.gateway, "status": g.status, "event_ids": list(g.event_ids), "hits": g.hits,
             "error": g.error, "gateway_audit_seq": g.gateway_audit_seq} for g in res.gateways],
            "missing": res.missing, "request_audit_seq": res.request_audit_seq,
            "outcome_audit_seq": res.outcome_audit_seq}, ensure_ascii=False))
    else:
        for g in res.gateways:
            print(f"{g.gateway}: {g.status}" + (f" ({g.error})" if g.error else "")
                  + (f", gateway audit record {g.gateway_audit_seq}" if g.gateway_audit_seq is not None else ""))
            for h in g.hits:
                members = ", ".join(f"{m.get('kind')}@{m.get('source')}" for m in h.get("members", []))
                print(f"  {h.get('ts')}  gate {h.get('gate')}  {h.get('direction') or '-'}  passage "
                      f"{h.get('passage_id') or '-'}: {members}")
        print(f"{len(res.missing)} event(s) without details; audit records {res.request_audit_seq} (request), "
              f"{res.outcome_audit_seq} (outcome)", file=sys.stderr)
    return 0 if not res.missing else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from district.api import create_app
    from district.principals import Principals
    from edge.errors import ConfigError

    cfg = _config(args)
    if cfg.search.tokens_file is None:
        raise ConfigError("[search].tokens_file is not set: the API admits callers by token only")
    details = _details_service(cfg) if cfg.door.signing_key_file else None
    app = create_app(_search_service(cfg), Principals.load(cfg.search.tokens_file), details)
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
    from district.auditcheck import check_against_chain, check_report
    from district.db import connect

    with connect(_config(args).database.dsn) as conn:
        report = check_report(conn, args.gateway)
        findings = list(report.findings)
        if args.gateway_db:
            if not args.gateway:
                print("--gateway-db needs --gateway DISTRICT/COMMUNITY/GATEWAY", file=sys.stderr)
                return 2
            findings += check_against_chain(conn, args.gateway, args.gateway_db)[1]
    # One block per gateway: its verdict, then each problem with the time the platform saw the head.
    gateways = sorted(set(report.heads) | {f.gateway for f in findings})
    for gw in gateways:
        mine = [f for f in findings if f.gateway == gw]
        print(f"{gw}: {'FAIL' if mine else 'ok'} ({report.heads.get(gw, 0)} head(s) stored, "
              f"{report.verified.get(gw, 0)} signature(s) verified)")
        for f in mine:
            print(f"  seen {f.seen_at}: {f.problem}")
    bad = len({f.gateway for f in findings})
    print(f"{sum(report.heads.values())} stored head(s) of {len(gateways)} gateway(s) checked; "
          f"{bad} gateway(s) with {len(findings)} problem(s)", file=sys.stderr)
    return 1 if findings else 0


def _cmd_gateway_register(args: argparse.Namespace) -> int:
    from district.db import connect
    from district.gateways import GatewayName, parse_door, register
    from edge.privacy.identity import GatewayPublic

    name = GatewayName.parse(args.gateway)
    identity = GatewayPublic.parse(_text_or_file(args.identity))
    door = parse_door(_text_or_file(args.door)) if args.door else None
    with connect(_config(args).database.dsn) as conn:
        register(conn, name, identity, door)
    print(f"registered {name}: identity {identity.fingerprint}" + (f", query door {door.hex()[:16]}…" if door else ""))
    return 0


def _cmd_gateway_list(args: argparse.Namespace) -> int:
    from district.db import connect
    from district.gateways import load_keys

    with connect(_config(args).database.dsn) as conn:
        keys = load_keys(conn)
    for name, k in keys.items():
        print(f"{name}  identity {k.identity.fingerprint}  door {k.door.hex() if k.door else '-'}")
    return 0


def _officer_keys(cfg: DistrictConfig) -> Any:
    from district.doorclient import OfficerKeys
    from edge.errors import ConfigError
    from edge.keys import load_secret

    if not cfg.door.signing_key_file:
        raise ConfigError("[door].signing_key_file is not set: details requests are signed with keys derived "
                          "from it")
    return OfficerKeys(load_secret(cfg.door.signing_key_file, purpose="door signing"), cfg.door.principal)


def _cmd_door_principal(args: argparse.Namespace) -> int:
    keys = _officer_keys(_config(args))
    # No token: the MQTT door authenticates by signature only; a token would open the HTTP door too.
    print(f'[[principal]]\nname = "{keys.principal(args.officer)}"\nrole = "police"\nofficer = "{args.officer}"\n'
          f'verify_key = "{keys.verify_key(args.officer)}"')
    return 0


def _text_or_file(value: str) -> str:
    path = Path(value)
    return path.read_text(encoding="utf-8") if len(value) < 4096 and path.is_file() else value


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
    s.add_argument("kind", choices=("plate", "card", "mac", "details"),
                   help="what to search by; `details` asks the gateways holding EVENT_IDs of this case's "
                        "search for their sealed records, over their MQTT query door")
    s.add_argument("value", nargs="+", metavar="VALUE|EVENT_ID",
                   help="the raw value, or - to read it from stdin (keeps it out of shell history); "
                        "for details: the event ids")
    s.add_argument("--from", dest="start", help="ISO date or time (UTC unless it says); required for a search")
    s.add_argument("--value", dest="details_value", default="-",
                   help="details: the value the case's search was made for (default -: read it from stdin)")
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

    gw = dsub.add_parser("gateway", help="the gateway registry: the public keys the platform knows per gateway")
    gsub = gw.add_subparsers(dest="gateway_command", required=True)
    gr = gsub.add_parser("register", help="register (or replace) a gateway's identity and query-door public keys")
    _common(gr)
    gr.add_argument("gateway", help="DISTRICT/COMMUNITY/GATEWAY")
    gr.add_argument("--identity", required=True,
                    help="edgegw-gw1:<x25519>:<ed25519>, as `edgegw keys init` prints it (or a file holding it)")
    gr.add_argument("--door", help="the query door's public key, as `edgegw query door-key` prints it (or a file)")
    gr.set_defaults(func=_cmd_gateway_register)
    gp = gsub.add_parser("door-principal", help="print the tokens-file entry a gateway needs to accept "
                                                  "this platform's details requests for one officer")
    _common(gp)
    gp.add_argument("--officer", required=True, help="the officer the entry is bound to")
    gp.set_defaults(func=_cmd_door_principal)
    gl = gsub.add_parser("list", help="list the registered gateways and their key fingerprints")
    _common(gl)
    gl.set_defaults(func=_cmd_gateway_list)

    # The GA/T 1400 bridge (district/viid).
    from district.viid.cli import add_commands as add_viid_commands

    add_viid_commands(dsub, _common, _config)

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
