"""`edgegw district viid run | register-test | status`: the GA/T 1400 bridge's commands."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from typing import Any

from district.config import DistrictConfig, ViidConfig
from edge.errors import ConfigError

log = logging.getLogger(__name__)


def _password(cfg: ViidConfig) -> str:
    from edge.keys import resolve_secret_path

    if cfg.password_file is None:
        raise ConfigError("[viid].password_file is not set: the upper platform admits us by digest password")
    path = resolve_secret_path(cfg.password_file)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"[viid].password_file: cannot read {path}: {exc.strerror}") from exc
    if not text:
        raise ConfigError(f"[viid].password_file: {path} is empty")
    return text


def _parts(cfg: DistrictConfig) -> tuple[Any, Any]:
    from district.db import connect
    from district.viid.client import ViidClient
    from district.viid.outbox import Outbox

    outbox = Outbox(cfg.viid, lambda: connect(cfg.database.dsn, timeout_s=cfg.database.connect_timeout_s,
                                              autocommit=True))
    return ViidClient(cfg.viid, _password(cfg.viid)), outbox


def cmd_run(cfg: DistrictConfig, args: argparse.Namespace) -> int:
    """The bridge and our /VIID/Subscribes server, until SIGTERM."""
    import uvicorn

    from district.viid.bridge import Bridge
    from district.viid.client import ViidRefusedError
    from district.viid.server import create_viid_app

    client, outbox = _parts(cfg)
    bridge = Bridge(cfg.viid, client, outbox)
    app = create_viid_app(cfg.viid, outbox, on_change=bridge.wake)
    port = args.port if args.port is not None else cfg.viid.port
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.viid.bind, port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    web = threading.Thread(target=server.run, name="viid-subscribes", daemon=True)
    web.start()

    def _stop(*_: object) -> None:
        bridge.stop()
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    try:
        bridge.run()
    except ViidRefusedError as exc:
        log.error("VIID: giving up: %s", exc)
        return 1
    finally:
        server.should_exit = True
        web.join(timeout=5)
    return 0


def cmd_register_test(cfg: DistrictConfig, args: argparse.Namespace) -> int:
    """Register, keepalive once, read the server's time, unregister; print what happened as JSON."""
    from district.viid.client import ViidClient, ViidRefusedError, ViidUnavailableError

    client = ViidClient(cfg.viid, _password(cfg.viid))
    out: dict[str, Any] = {"server": cfg.viid.server_url, "device_id": cfg.viid.device_id}
    rc = 0
    try:
        out["register"] = client.register().code
        out["keepalive"] = client.keepalive().code
        ts = client.time()
        out["time_offset_s"] = round(ts.offset_s, 3)
        out["rtt_s"] = round(ts.rtt_s, 4)
        out["unregister"] = client.unregister().code
    except ViidRefusedError as exc:
        out["refused"] = str(exc)
        rc = 1
    except ViidUnavailableError as exc:
        out["unavailable"] = str(exc)
        rc = 1
    finally:
        client.close()
    print(json.dumps(out, ensure_ascii=False))
    return rc


def cmd_status(cfg: DistrictConfig, args: argparse.Namespace) -> int:
    """The bridge's recorded state, outbox counts, subscriptions and cursor (from PostgreSQL)."""
    from district.db import connect
    from district.viid.outbox import Outbox

    ob = Outbox(cfg.viid, lambda: connect(cfg.database.dsn, timeout_s=cfg.database.connect_timeout_s,
                                          autocommit=True))
    print(json.dumps(ob.status(), ensure_ascii=False, default=str))
    return 0


def add_commands(dsub: Any, common: Any, load: Any) -> None:
    """Add `viid run|register-test|status` under the district command group.

    `common` adds --config/--dsn to a parser; `load` turns parsed args into a DistrictConfig.
    """
    v = dsub.add_parser("viid", help="the GA/T 1400 (/VIID) bridge to an upper platform")
    vsub = v.add_subparsers(dest="viid_command", required=True)
    r = vsub.add_parser("run", help="register, keep alive, answer subscriptions, deliver notifications")
    common(r)
    r.add_argument("--port", type=int, help="our /VIID/Subscribes port (overrides [viid].port)")
    r.set_defaults(func=lambda a: cmd_run(load(a), a))
    t = vsub.add_parser("register-test", help="register, keepalive, time, unregister once; print JSON")
    common(t)
    t.set_defaults(func=lambda a: cmd_register_test(load(a), a))
    s = vsub.add_parser("status", help="the bridge's state and outbox counts (JSON)")
    common(s)
    s.set_defaults(func=lambda a: cmd_status(load(a), a))
