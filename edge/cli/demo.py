"""`edgegw demo`: run the demo gateway end to end (see edge.app.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import edge


def default_demo_config() -> Path:
    """config/demo.toml of the source tree."""
    return Path(edge.__file__).resolve().parents[1] / "config" / "demo.toml"


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    from edge.app.demo import run_demo

    return run_demo(Path(args.config) if args.config else default_demo_config(), args.broker, args.verbose)


def register(sub: Any) -> None:
    """Add the `demo` command."""
    p = sub.add_parser("demo", help="run a demo gateway on sample input and print the events received")
    p.add_argument("--config", help="demo config (default: config/demo.toml)")
    p.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto",
                   help="local broker: mosquitto if installed (auto), or the embedded one")
    p.set_defaults(func=cmd_demo)
