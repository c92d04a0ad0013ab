"""`edgegw check --config FILE`: the installer's commissioning checklist (exit 1 if anything fails)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge.config import load_config


def cmd_check(args: argparse.Namespace) -> int:
    """Run the checks and print one line each (or JSON lines)."""
    from edge.commission import run_checks

    config_path = Path(args.config)
    cfg = load_config(config_path)
    print(f"config {config_path}: ok" if not args.json else json.dumps({"check": "config", "ok": True}))
    failed = 0
    for result in run_checks(cfg, config_path.resolve().parent, camera_timeout_s=args.camera_timeout,
                             broker=not args.no_broker):
        failed += not result.ok
        if args.json:
            print(json.dumps({"check": result.name, "ok": result.ok, "detail": result.detail}, ensure_ascii=False))
        else:
            print(f"{result.name}: {'ok' if result.ok else 'FAIL'} — {result.detail}", flush=True)
    if not args.json:
        print("all checks passed" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0


def register(sub: Any) -> None:
    """Add the `check` command."""
    p = sub.add_parser("check", help="commissioning checks: keys, models, cameras, serial ports, disk, outbox, broker")
    p.add_argument("--config", required=True)
    p.add_argument("--camera-timeout", type=float, default=10.0, help="seconds to wait for a camera's first frame")
    p.add_argument("--no-broker", action="store_true", help="skip the broker check (e.g. before the uplink exists)")
    p.add_argument("--json", action="store_true", help="one JSON object per check")
    p.set_defaults(func=cmd_check)
