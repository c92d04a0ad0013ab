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

    for extra in _EXTRA:
        extra(dsub)


_EXTRA: list[Any] = []


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
