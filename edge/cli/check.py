"""`edgegw check --config FILE`: the installer's commissioning checklist (exit 1 if anything fails)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from edge.app.config import load_config
from edge.app.uplink import gateway_status
from edge.errors import ConfigError

_COLOURS = {"ok": "\033[32m", "warn": "\033[33m", "fail": "\033[31m", "skip": "\033[2m"}


def _patterns(values: list[str] | None) -> list[str]:
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def _colour(enabled: bool, status: str, text: str) -> str:
    return f"{_COLOURS[status]}{text}\033[0m" if enabled else text


def _use_colour(stream: Any) -> bool:
    # Colour only for a person at a terminal, and never when NO_COLOR is set (https://no-color.org).
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ


def cmd_check(args: argparse.Namespace) -> int:
    """Run the checks and print one line each (or one JSON document); exit 0 ok, 1 failed, 2 config error."""
    from edge.app.commission import FAMILIES, CheckOptions, build_checks, run_checks, selected, summarise
    from edge.app.uplink import check_result_file

    only, skip = _patterns(args.only), _patterns(args.skip)
    if args.list_checks and not args.config:
        for fid, title in FAMILIES:
            print(f"{fid:16} {title}")
        return 0
    if not args.config:
        raise ConfigError("edgegw check needs --config FILE")
    config_path = Path(args.config)
    cfg = load_config(config_path)
    opts = CheckOptions(camera_timeout_s=args.camera_timeout, sample_s=args.sample, broker=not args.no_broker,
                        interactive=args.interactive,
                        prompt=lambda text: print(f"→ {text}", file=sys.stderr, flush=True))
    if args.list_checks:
        for check in build_checks(cfg, config_path.resolve().parent, opts):
            mark = "" if selected(check.id, only, skip) else "  (not selected)"
            print(f"{check.id}{mark}")
        return 0
    colour = _use_colour(sys.stdout) and not args.json
    results = []
    if not args.json:
        print(f"{_colour(colour, 'ok', 'ok  ')} {'config':22} {config_path}")
    for result in run_checks(cfg, config_path.resolve().parent, options=opts, only=only, skip=skip):
        results.append(result)
        if not args.json:
            print(f"{_colour(colour, result.status, f'{result.status:4}')} {result.id:22} {result.detail}", flush=True)
            if result.hint and result.status in ("warn", "fail"):
                print(f"     {'':22} fix: {result.hint} ({result.docs})", flush=True)
    summary = summarise(results, strict=args.strict)
    body = {"summary": summary, "checks": [r.as_dict() for r in results]}
    with contextlib.suppress(OSError):  # the metrics and the console show the last result
        check_result_file(cfg).write_text(json.dumps({**body, "ts": time.time()}), encoding="utf-8")
    if args.json:
        print(json.dumps(body, ensure_ascii=False))
    else:
        counts = ", ".join(f"{summary[s]} {s}" for s in ("ok", "warn", "fail", "skip") if summary[s])
        verdict = "all checks passed" if summary["exit"] == 0 and not summary["fail"] else \
            f"{summary['fail']} check(s) failed" if summary["fail"] else f"{summary['warn']} warning(s) (--strict)"
        print(f"{verdict} ({counts})")
    return int(str(summary["exit"]))


def cmd_status(args: argparse.Namespace) -> int:
    """Print the gateway's status as the platform would see it, read from the local outbox."""
    cfg = load_config(Path(args.config))
    # The same body the uplink publishes; "online" is the uplink daemon's last recorded state.
    body, uplink_state = gateway_status(cfg)
    if args.json:
        print(json.dumps(body, ensure_ascii=False, sort_keys=True, default=str))
        return 0
    print(f"gateway {cfg.gateway.gateway}: uplink {'online' if body['online'] else 'OFFLINE'}"
          + (f" (last error: {uplink_state.get('last_error')})" if uplink_state.get("last_error") else ""))
    age = body["oldest_pending_age_s"]
    print(f"outbox: {body['outbox_depth']} pending" + (f", oldest {age:.0f} s" if age is not None else "")
          + f"; delivered {body['delivered']}, dropped {body['dropped']}, expired {body['expired']}")
    st = body["storage"]
    hours = st.get("outage_hours")
    print(f"disk: {st['disk_free_bytes'] / 2**20:.1f} MiB free, state {st.get('state_bytes', 0) / 2**20:.1f} MiB, "
          f"outbox quota {st['quota_bytes'] / 2**20:.1f} MiB; "
          + (f"outage buffer {hours:.1f} h at {st.get('rate_eps')} events/s" if hours is not None
             else "outage buffer: no event rate yet")
          + ("; DISK FULL" if body["disk_full"] else ""))
    passages = body.get("passages") or {}
    if passages.get("missed") or passages.get("lost"):
        print(f"passage store: {passages.get('missed')} missed, {passages.get('recorded_late')} recorded late, "
              f"{passages.get('backlog')} waiting, {passages.get('lost')} lost")
    if body["alarms"]:
        print(f"ALARMS: {', '.join(body['alarms'])}")
    for cam, st in sorted(body["cameras"].items()):
        err = f" — {st.get('last_error')}" if st.get("last_error") else ""
        print(f"camera {cam}: {st.get('state')}, {st.get('fps')} fps, {st.get('frames_dropped')} dropped{err}")
    for port, st in sorted(body["ports"].items()):
        if port.startswith("_"):
            continue
        err = f" — {st.get('last_error')}" if st.get("last_error") else ""
        state = "connected" if st.get("connected") else "DISCONNECTED"
        print(f"serial {port}: {state}, {st.get('frames_ok')} frames ok, rejected {st.get('frames_rejected')}{err}")
    return 0


def register(sub: Any) -> None:
    """Add the `check` command."""
    p = sub.add_parser("check", help="commissioning checks: keys, models, cameras, ports, broker, TLS, clock, disk",
                       description="Each check ends ok/warn/fail/skip with a fix. Exit 0: no failure; 1: a failure "
                                   "(or a warning with --strict); 2: the config does not validate.")
    p.add_argument("--config", help="gateway config (TOML)")
    p.add_argument("--camera-timeout", type=float, default=10.0, help="seconds to wait for a camera's first frame")
    p.add_argument("--sample", type=float, default=4.0, help="seconds of frames sampled per camera after the first")
    p.add_argument("--no-broker", action="store_true", help="skip the broker checks (e.g. before the uplink exists)")
    p.add_argument("--json", action="store_true", help="one JSON document: {summary, checks: [...]}")
    p.add_argument("--only", action="append", metavar="IDS", help="run only these ids or families (globs, commas)")
    p.add_argument("--skip", action="append", metavar="IDS", help="skip these check ids or families (globs, commas)")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument("--interactive", action="store_true",
                   help="ask someone to stand at the gate line and to swipe a card")
    p.add_argument("--list-checks", action="store_true", help="list the check ids (of this config, with --config)")
    p.set_defaults(func=cmd_check)

    s = sub.add_parser("status", help="the gateway's live status (cameras, ports, outbox, uplink) from the outbox")
    s.add_argument("--config", required=True)
    s.add_argument("--json", action="store_true", help="the status body exactly as the uplink publishes it")
    s.set_defaults(func=cmd_status)
