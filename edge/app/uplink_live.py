"""The uplink daemon's telemetry: outbox backlog, MQTT connection, events published by kind.

The outbox connection belongs to the uplink's loop thread; a scrape never touches it. The loop's
heartbeat refreshes a snapshot (at most every 2 s) that the scrape thread reads.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.outbox import Outbox
from edge.telemetry.metrics import Family, Telemetry, counter, gauge
from edge.types import OutboxRecord
from edge.uplink.stats import UplinkStats

_REFRESH_S = 2.0
CHECK_CODES = {"ok": 0.0, "warn": 1.0, "fail": 2.0, "skip": -1.0}


class UplinkLive:
    """Counts what the uplink delivers and snapshots the backlog for `/metrics`."""

    def __init__(self, outbox: Outbox, check_file: Path, published_file: Path | None = None) -> None:
        self.telemetry = Telemetry("uplink")
        self._outbox = outbox
        self._check_file = check_file
        self._lock = threading.Lock()
        self.published_by_kind: dict[str, int] = {}
        self._snapshot: dict[str, Any] = {}
        self._next = 0.0
        self.stats: UplinkStats | None = None
        self.beat = time.monotonic()
        # The last events exactly as published (pseudonyms only, by the event schema), for the console.
        self._published_file = published_file
        self._recent: deque[str] = deque(maxlen=50)
        self._recent_dirty = False
        self.telemetry.add_families(self.families)

    def on_acked(self, records: Sequence[OutboxRecord], now: float) -> None:
        """The broker acknowledged these records."""
        with self._lock:
            for r in records:
                self.published_by_kind[r.kind.value] = self.published_by_kind.get(r.kind.value, 0) + 1
                if self._published_file is not None and r.kind.value != "status":
                    self._recent.append(r.payload.decode("utf-8", "replace"))
                    self._recent_dirty = True

    def refresh(self) -> None:
        """Called from the uplink's loop (its heartbeat): take a fresh snapshot now and then."""
        self.beat = time.monotonic()
        if self.beat < self._next:
            return
        self._next = self.beat + _REFRESH_S
        snap = {"depth": self._outbox.depth(), "oldest": self._outbox.oldest_age_s(),
                "counters": self._outbox.counters()}
        with self._lock:
            self._snapshot = snap
            recent = list(self._recent) if self._recent_dirty else None
            self._recent_dirty = False
        if recent is not None and self._published_file is not None:
            self._write_recent(self._published_file, recent)

    @staticmethod
    def _write_recent(path: Path, payloads: list[str]) -> None:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("[" + ",".join(payloads) + "]", encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass  # the console's event list is a convenience; the events themselves are delivered

    def _checks(self) -> list[tuple[tuple[str, ...], float]]:
        # `edgegw check` leaves its last result beside the outbox; the exposition carries it.
        try:
            body = json.loads(self._check_file.read_text(encoding="utf-8"))
            return [((str(c["id"]),), CHECK_CODES.get(str(c["status"]), 2.0)) for c in body.get("checks", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return []

    def families(self) -> list[Family]:
        """Scrape-time families (no identifiers in any label)."""
        with self._lock:
            snap = dict(self._snapshot)
            published = dict(self.published_by_kind)
        counters: dict[str, int] = snap.get("counters", {})
        stats = self.stats
        out = [
            gauge("edgegw_mqtt_connected", "1 while connected to the district broker", (),
                  [((), 1.0 if stats is not None and stats.connected else 0.0)]),
            counter("edgegw_events_published_total", "Events acknowledged by the broker, by kind", ("kind",),
                    [((k,), n) for k, n in published.items()]),
            counter("edgegw_outbox_dropped_total", "Events dropped by the outbox quota", (),
                    [((), sum(v for k, v in counters.items() if k.startswith("dropped_quota.")))]),
            counter("edgegw_outbox_expired_total", "Events that expired in the outbox", (),
                    [((), sum(v for k, v in counters.items() if k.startswith("expired.")))]),
        ]
        if "depth" in snap:
            out.append(gauge("edgegw_outbox_depth", "Events waiting in the outbox", (), [((), snap["depth"])]))
            out.append(gauge("edgegw_outbox_oldest_age_seconds", "Age of the oldest waiting event (0 when empty)", (),
                             [((), snap["oldest"] or 0.0)]))
        checks = self._checks()
        if checks:
            out.append(gauge("edgegw_check_status", "Last `edgegw check` result: 0 ok, 1 warn, 2 fail, -1 skip",
                             ("check",), checks))
        return out

    def liveness(self) -> tuple[bool, str]:
        """The drain loop turned within the last 30 s (it beats at least every backoff step)."""
        age = time.monotonic() - self.beat
        return (age < 90.0, f"drain loop last turned {age:.0f} s ago")

    def readiness(self) -> tuple[bool, str]:
        """Ready once the outbox is open and the loop runs; a broker outage is not unreadiness."""
        ok, text = self.liveness()
        connected = self.stats is not None and self.stats.connected
        return ok, text + ("; broker connected" if connected else "; broker not connected (events wait in the outbox)")
