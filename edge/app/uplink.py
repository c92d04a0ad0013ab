"""The uplink daemon's composition: the outbox, the broker settings and credentials, the drain loop.

Imports nothing of the capture side: `import edge.app.uplink` loads no OpenCV, ONNX Runtime or
pyserial, so a broken vision install never stops the backlog draining (tests/test_layers.py).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from edge.app.config import Config
from edge.app.watchlists import WatchlistReceiver
from edge.app.wiring import make_outbox, mqtt_password, open_watchlist, origin_of
from edge.outbox import Outbox
from edge.sdnotify import Notifier
from edge.uplink.uplink import Uplink
from edge.watchlist import watchlist_topic


def build_uplink(cfg: Config, outbox: Outbox, *, heartbeat: Callable[[], None] | None = None,
                 watchlists: WatchlistReceiver | None = None) -> Uplink:
    """The uplink for this gateway's broker settings and credentials (and its watch-list subscription)."""
    if watchlists is None:
        return Uplink(outbox, origin_of(cfg), cfg.mqtt, cfg.uplink, password=mqtt_password(cfg), heartbeat=heartbeat)
    receiver = watchlists
    beat = heartbeat or (lambda: None)

    def housekeeping() -> None:
        beat()
        receiver.sweep()

    return Uplink(outbox, origin_of(cfg), cfg.mqtt, cfg.uplink, password=mqtt_password(cfg), heartbeat=housekeeping,
                  status_extra=lambda: {"watchlists": receiver.store.status()},
                  subscriptions={watchlist_topic(cfg.gateway.district, "+", cfg.mqtt.topic_prefix): receiver})


def run_uplink(cfg: Config, *, until_empty: bool = False) -> int:
    """Run the uplink daemon until SIGTERM/SIGINT (SIGUSR1: drain, then stop)."""
    outbox = make_outbox(cfg)
    notifier = Notifier()
    # No audit log here: the uplink reaches only the outbox (docs/keys.md, a user per daemon). Its
    # refusals are counted in the retained status; capture audits each list it starts matching.
    store = open_watchlist(cfg, None)
    receiver = WatchlistReceiver(store, cfg.watchlist.sweep_interval_s) if store is not None else None
    uplink = build_uplink(cfg, outbox, heartbeat=notifier.watchdog, watchlists=receiver)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: uplink.stop())
    signal.signal(signal.SIGUSR1, lambda *_: uplink.drain_and_stop())
    notifier.ready("uplink started")
    try:
        uplink.run(until_empty=until_empty, idle_exit_s=1.0)
    finally:
        notifier.stopping()
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
