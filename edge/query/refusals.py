"""Refusal floods, aggregated: a caller's first refusals in a window are audited one by one, the rest counted.

Every audit record is fsync'd (and anchored), so a client hammering a door with bad requests could
turn each one into a synchronous disk write and bloat the chain. Per principal, the first
`burst` refusals of each `window_s` are recorded in full (with their details); after that they are
only counted, and one `refusals` record per principal says how many were refused, for which
reasons, between which times. The count is written when the next refusal after the window arrives,
or on `flush()` (the query daemon calls it periodically and on shutdown), so nothing goes unaudited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from edge.audit import AuditAction, AuditLog, JsonValue
from edge.events import iso_ms

DEFAULT_BURST = 5
DEFAULT_WINDOW_S = 60.0


@dataclass
class _Window:
    actor: str
    start: float
    recorded: int = 0
    suppressed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    last: float = 0.0


class RefusalFlood:
    """Decides which refusals get their own audit record; counts and later summarises the rest (thread-safe)."""

    def __init__(self, audit: AuditLog, *, burst: int = DEFAULT_BURST, window_s: float = DEFAULT_WINDOW_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._audit = audit
        self._burst = burst
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def refused(self, actor: str, principal: str, reason: str, details: Mapping[str, JsonValue]) -> int | None:
        """Audit one refusal: its record's seq, or None when it was only counted (a flood)."""
        now = self._clock()
        with self._lock:
            win = self._windows.get(principal)
            if win is not None and now - win.start >= self._window_s:
                self._summarise(principal, win)
                win = None
            if win is None:
                win = self._windows[principal] = _Window(actor, now)
            if win.recorded < self._burst:
                win.recorded += 1
                return self._audit.append(actor, AuditAction.QUERY_REFUSED, details).seq
            win.suppressed += 1
            win.reasons[reason] = win.reasons.get(reason, 0) + 1
            win.last = now
            return None

    def flush(self) -> None:
        """Write the summary of every window whose refusals were counted but not yet audited."""
        with self._lock:
            for principal, win in list(self._windows.items()):
                self._summarise(principal, win)
            self._windows.clear()

    def _summarise(self, principal: str, win: _Window) -> None:
        if win.suppressed:
            reasons: dict[str, JsonValue] = dict(sorted(win.reasons.items()))
            self._audit.append(win.actor, AuditAction.REFUSALS, {
                "principal": principal, "count": win.suppressed, "reasons": reasons,
                "from": iso_ms(win.start), "to": iso_ms(win.last)})
        self._windows.pop(principal, None)
