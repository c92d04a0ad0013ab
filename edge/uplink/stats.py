"""Counters and state the uplink reports in its status (shared by the session, window and loop)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class UplinkStats:
    """Counters and state the uplink reports in its status."""

    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    attempts: int = 0
    published: int = 0
    acked: int = 0
    rejected: int = 0
    last_error: str | None = None
    connected_since: float | None = None
    protocol: str = ""
    retry_in_s: float | None = None
    resends_held: int = 0
    """End-to-end mode: overdue events whose resend is held (no watermark moved past them)."""
    resend_hold_since: float | None = None
    """Since when resends have been held (None: none is)."""
    extra: dict[str, Any] = field(default_factory=dict)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    """Commit → PUBACK seconds of the latest acknowledged events."""

    def latency_ms(self) -> dict[str, float] | None:
        """p50/p99 of commit → PUBACK over the latest acknowledgements, in milliseconds."""
        if not self.latencies:
            return None
        xs = sorted(self.latencies)
        return {"p50": round(xs[len(xs) // 2] * 1000, 1), "p99": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))] *
                                                                      1000, 1), "n": len(xs)}
