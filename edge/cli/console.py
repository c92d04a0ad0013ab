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
    from edge.console.users import Role, UserStore

    cfg = load_config(Path(args.config))
    users = UserStore(cfg.path(cfg.console.db))
    try:
        password = args.password or secrets.token_urlsafe(12)
        users.add(args.name, Role(args.role), password, must_change=True)
    finally:
        users.close()
    print(f"user {args.name} ({args.role}) added; first password: {password} (must be changed at first login)")
    return 0


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
