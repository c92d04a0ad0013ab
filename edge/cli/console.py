"""`edgegw console`: the installer's web console; `console user add` for more users."""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path
from typing import Any

from edge.app.config import load_config


def cmd_console(args: argparse.Namespace) -> int:
    """Serve the console."""
    from edge.app.console import run_console  # FastAPI and uvicorn: loaded only for `console`
    from edge.errors import ConfigError

    if not args.config:
        raise ConfigError("edgegw console needs --config FILE")
    return run_console(Path(args.config))


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a console user with a random first password (to be changed at first login)."""
    from edge.app.wiring import open_registry
    from edge.console.users import UserStore
    from edge.principals import Role

    cfg = load_config(Path(args.config))
    registry = open_registry(cfg)
    users = UserStore(cfg.path(cfg.console.db), registry=registry)  # listed in the registry at once
    try:
        password = args.password or secrets.token_urlsafe(12)
        users.add(args.name, Role(args.role), password, must_change=True)
    finally:
        users.close()
        registry.close()
    print(f"user {args.name} ({args.role}) added; first password: {password} (must be changed at first login)")
    return 0


def cmd_principal(args: argparse.Namespace) -> int:
    """List, revoke or restore principals of both doors in the one registry (edge.principals)."""
    from edge.app.wiring import open_audit, open_registry
    from edge.principals import RegistryError

    cfg = load_config(Path(args.config))
    registry = open_registry(cfg)
    try:
        if args.principal_command == "list":
            for p in registry.listed():
                state = f"revoked by {p.revoked_by}" if p.revoked else "active"
                print(f"{p.name:24} {p.door:8} {p.role.value:10} {state}")
            return 0
        try:
            if args.principal_command == "revoke":
                registry.revoke(args.name, args.by)
            else:
                registry.restore(args.name)
        except RegistryError as exc:
            print(f"edgegw principal: {exc}")
            return 1
        audit = open_audit(cfg)
        try:
            audit.append(args.by, f"principal_{args.principal_command}", {"principal": args.name, "by": "cli"})
        finally:
            audit.close()
        print(f"{args.name} {'revoked at both doors' if args.principal_command == 'revoke' else 'restored'}")
        return 0
    finally:
        registry.close()


def register(sub: Any) -> None:
    """Add the `console` commands."""
    p = sub.add_parser("console", help="the installer's web console (dashboard, preview, aiming, gate lines)")
    p.add_argument("--config", help="gateway config (TOML)")
    p.set_defaults(func=cmd_console)
    csub = p.add_subparsers(dest="console_command")
    u = csub.add_parser("user", help="console users")
    usub = u.add_subparsers(dest="user_command", required=True)
    a = usub.add_parser("add", help="add a console user")
    a.add_argument("name")
    a.add_argument("--role", choices=["admin", "installer", "viewer"], default="viewer")
    a.add_argument("--password", help=argparse.SUPPRESS)  # tests only; a password on a command line leaks
    a.add_argument("--config", required=True, dest="config")
    a.set_defaults(func=cmd_user_add)
    pr = sub.add_parser("principal", help="everyone who may use the console or the query door: list, revoke, restore")
    prsub = pr.add_subparsers(dest="principal_command", required=True)
    for name, text in (("list", "every principal of both doors"), ("revoke", "refuse NAME at both doors"),
                       ("restore", "lift a revocation")):
        c = prsub.add_parser(name, help=text)
        if name != "list":
            c.add_argument("name")
            c.add_argument("--by", default="root", help="who does it (the audit's actor)")
        c.add_argument("--config", required=True, dest="config")
        c.set_defaults(func=cmd_principal)
