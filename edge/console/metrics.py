"""The console's Prometheus metrics: logins by outcome, preview streams, config saves, request latency.

Served like the other daemons' (edge.telemetry: loopback only, `/metrics`, `/livez`, `/readyz`) on
`metrics.console_port`. Labels are fixed words and route templates (`/camera/{cam_id}`), never a
user name, client address, camera path or any identifier: a login by `alice` from 10.0.0.7 counts
as `outcome="ok"`, nothing more.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from edge.telemetry.metrics import Telemetry

LOGIN_OUTCOMES = ("ok", "failed", "throttled", "form_expired")
SAVE_OUTCOMES = ("saved", "refused", "unwritable")
CHANGES = ("gate_line", "zones_masks")
# A console page renders in milliseconds; a snapshot or a check run can take seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ConsoleMetrics:
    """The console's registry and the instruments the web app updates."""

    def __init__(self) -> None:
        self.telemetry = Telemetry("console")
        reg = self.telemetry.registry
        self.logins = Counter("edgegw_console_logins", "Console login attempts, by outcome", ["outcome"],
                              registry=reg)
        self.preview_starts = Counter("edgegw_console_preview_starts", "Live preview streams started",
                                      registry=reg)
        self.preview_sessions = Gauge("edgegw_console_preview_sessions", "Live preview streams open now",
                                      registry=reg)
        self.config_saves = Counter("edgegw_console_config_saves", "Config edits from the console, by change and "
                                    "outcome", ["change", "outcome"], registry=reg)
        self.request_seconds = Histogram("edgegw_console_request_seconds", "Console request latency (to the "
                                         "first byte of a stream), by route template and method",
                                         ["route", "method"], buckets=REQUEST_BUCKETS, registry=reg)
        # Every labelled series exists from the start, at 0: a rate() over a fresh console works.
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome)
        for change in CHANGES:
            for outcome in SAVE_OUTCOMES:
                self.config_saves.labels(change, outcome)

    def saved(self, change: str, outcome: str) -> None:
        """Count a config save (`change` and `outcome` from the fixed sets above)."""
        self.config_saves.labels(change, outcome).inc()
