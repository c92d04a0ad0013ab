"""The `edgegw` command line: one entry point, a sub-command group per subsystem."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edge import __version__
from edge.errors import ConfigError, EdgeError

# Each module exposes `register(subparsers)` that adds its commands and sets `func` on them;
# `func(args) -> int` returns the exit status. Explicit list: nothing is discovered by scanning.
_GROUPS: tuple[str, ...] = (
    "edge.cli.serial",
    "edge.cli.models",
    "edge.cli.faces",
    "edge.cli.daemons",
    "edge.cli.check",
    "edge.cli.residents",
    "edge.cli.demo",
    "edge.cli.audit",
    "edge.cli.query",
    "edge.cli.plates",
    "district.cli",
    "edge.cli.inputs",
    "edge.cli.watchlist",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser."""
    parser = argparse.ArgumentParser(prog="edgegw", description="Smart-community edge gateway")
    parser.add_argument("--version", action="version", version=f"edgegw {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _GROUPS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for configuration errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        rc: int = args.func(args)
    except ConfigError as exc:
        print(f"edgegw: configuration error: {exc}", file=sys.stderr)
        return 2
    except EdgeError as exc:
        print(f"edgegw: {exc}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
