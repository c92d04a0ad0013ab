"""`edgegw capture`, `edgegw uplink`, `edgegw run` (both, for development and the demo), `config check`."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge.app.config import Config, load_config
from edge.app.uplink import run_uplink

log = logging.getLogger(__name__)


def _load(args: argparse.Namespace) -> Config:
    cfg = load_config(Path(args.config))
    updates: dict[str, Any] = {}
    if getattr(args, "mqtt_host", None):
        updates["host"] = args.mqtt_host
    if getattr(args, "mqtt_port", None):
        updates["port"] = args.mqtt_port
    if getattr(args, "mqtt_protocol", None):
        updates["protocol"] = args.mqtt_protocol
    if updates:
        cfg = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update=updates)})
    return cfg


def _on_signals(handler: Any, *signums: int) -> None:
    for signum in signums:
        signal.signal(signum, lambda *_: handler())


def cmd_capture(args: argparse.Namespace) -> int:
    """Run the capture daemon."""
    from edge.app.capture import CaptureDaemon  # the vision stack: loaded only for `capture`

    cfg = _load(args)
    daemon = CaptureDaemon(cfg, Path(args.config).resolve().parent)
    _on_signals(daemon.stop, signal.SIGTERM, signal.SIGINT)
    # Capture's status rides on the uplink's status message: no point refreshing it more slowly.
    return daemon.run(exit_when_done=args.exit_when_done, status_interval_s=min(5.0, cfg.uplink.status_interval_s))


def cmd_uplink(args: argparse.Namespace) -> int:
    """Run the uplink daemon."""
    return run_uplink(_load(args), until_empty=args.until_empty)


def _child(sub: str, args: argparse.Namespace, extra: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "edge.cli", *(["-v"] * args.verbose), sub, "--config", args.config, *extra]
    if args.mqtt_host:
        cmd += ["--mqtt-host", args.mqtt_host]
    if args.mqtt_port:
        cmd += ["--mqtt-port", str(args.mqtt_port)]
    if args.mqtt_protocol:
        cmd += ["--mqtt-protocol", args.mqtt_protocol]
    return subprocess.Popen(cmd)


def cmd_run(args: argparse.Namespace) -> int:
    """Run both daemons as child processes; with --exit-when-done, stop once the input is exhausted
    and every committed event has been acknowledged by the broker."""
    uplink = _child("uplink", args, [])
    capture = _child("capture", args, ["--exit-when-done"] if args.exit_when_done else [])
    stopping = False

    def stop_all() -> None:
        nonlocal stopping
        stopping = True
        for p in (capture, uplink):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    _on_signals(stop_all, signal.SIGTERM, signal.SIGINT)
    rc_capture = capture.wait()
    if not stopping and uplink.poll() is None:
        uplink.send_signal(signal.SIGUSR1 if args.exit_when_done else signal.SIGTERM)
    try:
        rc_uplink = uplink.wait(timeout=args.drain_timeout)
    except subprocess.TimeoutExpired:
        log.error("uplink did not drain the outbox within %.0f s; stopping it (events stay in the outbox)",
                  args.drain_timeout)
        uplink.terminate()
        rc_uplink = uplink.wait(10) or 1
    return rc_capture or rc_uplink


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate a config file; exit 2 with file, line and key on error."""
    cfg = load_config(Path(args.file))
    print(f"{args.file}: ok — gateway {cfg.gateway.district}/{cfg.gateway.community}/{cfg.gateway.gateway}, "
          f"{len(cfg.cameras)} camera(s), {len(cfg.serial)} serial sensor(s), {len(cfg.inputs)} input module(s), "
          f"{len(cfg.zones.zone)} zone(s), watch-lists {'on' if cfg.watchlist.enabled else 'off'}, "
          f"MQTT {cfg.mqtt.host}:{cfg.mqtt.port}")
    return 0


def _broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="gateway config (TOML)")
    p.add_argument("--mqtt-host", help="override mqtt.host")
    p.add_argument("--mqtt-port", type=int, help="override mqtt.port")
    p.add_argument("--mqtt-protocol", choices=["5", "3.1.1"], help="override mqtt.protocol")


def register(sub: Any) -> None:
    """Add the daemon and config commands."""
    p = sub.add_parser("capture", help="run the capture daemon (cameras and sensors → outbox)")
    _broker_args(p)
    p.add_argument("--exit-when-done", action="store_true", help="exit when every file source is exhausted")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("uplink", help="run the uplink daemon (outbox → MQTT)")
    _broker_args(p)
    p.add_argument("--until-empty", action="store_true", help="exit once the outbox is empty")
    p.set_defaults(func=cmd_uplink)

    p = sub.add_parser("run", help="run capture and uplink together (development, demo)")
    _broker_args(p)
    p.add_argument("--exit-when-done", action="store_true",
                   help="exit once file sources are exhausted and the outbox is drained")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate a config file")
    c.add_argument("file")
    c.set_defaults(func=cmd_config_check)


