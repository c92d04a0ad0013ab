"""`edgegw check --config FILE`: the installer's commissioning checklist (exit 1 if anything fails)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge.app.config import load_config
from edge.app.uplink import gateway_status


def cmd_check(args: argparse.Namespace) -> int:
    """Run the checks and print one line each (or JSON lines)."""
    from edge.app.commission import run_checks  # opens cameras and ports: loaded only for `check`

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
    p = sub.add_parser("check", help="commissioning checks: keys, models, cameras, serial ports, disk, outbox, broker")
    p.add_argument("--config", required=True)
    p.add_argument("--camera-timeout", type=float, default=10.0, help="seconds to wait for a camera's first frame")
    p.add_argument("--no-broker", action="store_true", help="skip the broker check (e.g. before the uplink exists)")
    p.add_argument("--json", action="store_true", help="one JSON object per check")
    p.set_defaults(func=cmd_check)

    s = sub.add_parser("status", help="the gateway's live status (cameras, ports, outbox, uplink) from the outbox")
    s.add_argument("--config", required=True)
    s.add_argument("--json", action="store_true", help="the status body exactly as the uplink publishes it")
    s.set_defaults(func=cmd_status)
