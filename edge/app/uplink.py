"""The uplink daemon's composition: the outbox, the broker settings and credentials, the drain loop.

Imports nothing of the capture side: `import edge.app.uplink` loads no OpenCV, ONNX Runtime or
pyserial, so a broken vision install never stops the backlog draining (tests/test_layers.py).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.app.config import Config
from edge.app.uplink_live import UplinkLive
from edge.app.watchlists import WatchlistReceiver
from edge.app.wiring import make_outbox, mqtt_password, open_watchlist, origin_of
from edge.outbox import Outbox
from edge.sdnotify import Notifier
from edge.telemetry.server import start_metrics
from edge.uplink.uplink import Uplink
from edge.uplink.window import AckListener
from edge.watchlist import watchlist_topic


def build_uplink(cfg: Config, outbox: Outbox, *, heartbeat: Callable[[], None] | None = None,
                 on_acked: AckListener | None = None, watchlists: WatchlistReceiver | None = None) -> Uplink:
    """The uplink for this gateway's broker settings and credentials (and its watch-list subscription)."""
    if watchlists is None:
        return Uplink(outbox, origin_of(cfg), cfg.mqtt, cfg.uplink, password=mqtt_password(cfg), heartbeat=heartbeat,
                      on_acked=on_acked)
    receiver = watchlists
    beat = heartbeat or (lambda: None)

    def housekeeping() -> None:
        beat()
        receiver.sweep()

    return Uplink(outbox, origin_of(cfg), cfg.mqtt, cfg.uplink, password=mqtt_password(cfg), heartbeat=housekeeping,
                  on_acked=on_acked, status_extra=lambda: {"watchlists": receiver.store.status()},
                  subscriptions={watchlist_topic(cfg.gateway.district, "+", cfg.mqtt.topic_prefix): receiver})


def published_file(cfg: Config) -> Path:
    """Where the uplink keeps the last events it published (the console's event list): beside the outbox,
    the one place the uplink may write and the console may read."""
    return cfg.path(cfg.outbox.path).parent / "published.json"


def check_result_file(cfg: Config) -> Path:
    """Where `edgegw check` leaves its last result (the metrics and the console read it)."""
    return cfg.path(Path("check-last.json"))


def run_uplink(cfg: Config, *, until_empty: bool = False) -> int:
    """Run the uplink daemon until SIGTERM/SIGINT (SIGUSR1: drain, then stop)."""
    outbox = make_outbox(cfg)
    notifier = Notifier()
    live = UplinkLive(outbox, check_result_file(cfg), published_file(cfg))
    # No audit log here: the uplink reaches only the outbox (docs/keys.md, a user per daemon). Its
    # refusals are counted in the retained status; capture audits each list it starts matching.
    store = open_watchlist(cfg, None)
    receiver = WatchlistReceiver(store, cfg.watchlist.sweep_interval_s) if store is not None else None

    def beat() -> None:
        # From the drain loop itself: the watchdog, a fresh metrics snapshot, systemd's status line.
        notifier.watchdog()
        live.refresh()
        stats = uplink.stats
        notifier.status(f"{'connected' if stats.connected else 'disconnected'}; {stats.acked} delivered"
                        + (f"; last error: {stats.last_error}" if stats.last_error and not stats.connected else ""))

    uplink = build_uplink(cfg, outbox, heartbeat=beat, on_acked=live.on_acked, watchlists=receiver)
    live.stats = uplink.stats
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: uplink.stop())
    signal.signal(signal.SIGUSR1, lambda *_: uplink.drain_and_stop())
    metrics = start_metrics(live.telemetry, cfg.metrics.host, cfg.metrics.port_for("uplink"),
                            live=live.liveness, ready=live.readiness)
    # Config parsed, keys and credentials loaded, the outbox open: that is ready for the uplink.
    notifier.ready("uplink started")
    try:
        uplink.run(until_empty=until_empty, idle_exit_s=1.0)
    finally:
        notifier.stopping()
        if metrics is not None:
            metrics.close()
        outbox.close()
    return 0


def gateway_status(cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the status body the uplink publishes, the uplink daemon's last recorded state), read locally."""
    outbox = make_outbox(cfg)
    try:
        # "online" is the uplink daemon's last recorded state.
        state = outbox.get_status().get("uplink", {})
        body = Uplink(outbox, origin_of(cfg), cfg.mqtt, cfg.uplink).status(online=bool(state.get("connected")))
    finally:
        outbox.close()
    return body, state


def probe_broker(cfg: Config) -> str | None:
    """Connect once with the configured broker settings; None if accepted, else the error to read."""
    outbox = make_outbox(cfg)
    try:
        return build_uplink(cfg, outbox).probe()
    finally:
        outbox.close()
