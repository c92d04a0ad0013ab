"""From contact levels to alarms: debounce, contact type, meaning, wire breaks, module offline.

Pure (no I/O, no clock of its own): scans go in with their timestamps, observations come out. Every
condition is raised once when it starts and cleared once when it ends, so the platform can open a
case on the first and close it on the second; nothing identifying is ever in the attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.inputs.base import InputScan
from drivers.inputs.config import GpioInputsConfig, InputPointConfig, ModbusInputsConfig
from edge.types import EventKind, Observation, Scalar

_MESSAGES = {
    "alarm_column": "alarm column pressed",
    "door_contact": "door open",
    "tamper": "tamper loop open",
}


@dataclass
class _Debounced:
    """A boolean that changes only after the new value has held for `hold_s`."""

    hold_s: float
    value: bool = False
    since: float | None = None
    """When `value` last changed (None: never)."""
    previous: float | None = None
    """When it changed the time before (a clear's duration runs from there)."""
    _candidate: bool = False
    _candidate_ts: float = 0.0

    def update(self, raw: bool, ts: float) -> bool:
        """Feed a sample; True when the debounced value changed (to `raw`)."""
        if raw == self.value:
            self._candidate = raw
            return False
        if raw != self._candidate:
            self._candidate, self._candidate_ts = raw, ts
        if ts - self._candidate_ts >= self.hold_s:
            self.value = raw
            self.previous = self.since
            # The change happened when the level first moved, not when the debounce confirmed it.
            self.since = self._candidate_ts
            return True
        return False


@dataclass
class _Point:
    cfg: InputPointConfig
    active: _Debounced
    broken: _Debounced


class InputInterpreter:
    """Turns one module's scans into `alarm` observations (not thread-safe: one per poller)."""

    def __init__(self, cfg: ModbusInputsConfig | GpioInputsConfig) -> None:
        self.module_id = cfg.id
        self._offline_after_s = cfg.offline_after_s
        self._points = [_Point(p, _Debounced(p.debounce_s), _Debounced(p.debounce_s)) for p in cfg.inputs]
        self.channels = tuple(p.channel for p in cfg.inputs)
        self._last_ok: float | None = None
        self._offline_since: float | None = None
        self.raised = 0

    def feed(self, scan: InputScan) -> list[Observation]:
        """A successful read: debounced transitions become raised/cleared alarms."""
        out = self._back_online(scan.ts)
        self._last_ok = scan.ts
        for p in self._points:
            if p.cfg.channel not in scan.closed:
                continue
            broken = scan.wire_break.get(p.cfg.channel, False)
            if p.broken.update(broken, scan.ts):
                out.append(self._alarm(p, "wire_break", p.broken, "input wire cut"))
            if p.broken.value:
                continue  # a cut loop's level means nothing: hold the input's state until it is mended
            closed = scan.closed[p.cfg.channel]
            active = closed if p.cfg.contact == "no" else not closed
            if p.active.update(active, scan.ts):
                out.append(self._alarm(p, p.cfg.meaning, p.active, _MESSAGES[p.cfg.meaning]))
        return out

    def failed(self, now: float) -> list[Observation]:
        """A read failed at `now`: once nothing has succeeded for `offline_after_s`, raise io_offline."""
        if self._last_ok is None:
            self._last_ok = now  # the clock starts with the first attempt, not at import time
        if self._offline_since is None and now - self._last_ok >= self._offline_after_s:
            self._offline_since = self._last_ok
            self.raised += 1
            return [Observation(EventKind.ALARM, self.module_id, now, attrs={
                "code": "io_offline", "message": "input module does not answer", "severity": "critical",
                "state": "raised", "duration_s": round(now - self._last_ok, 3)})]
        return []

    def _back_online(self, ts: float) -> list[Observation]:
        if self._offline_since is None:
            return []
        since, self._offline_since = self._offline_since, None
        return [Observation(EventKind.ALARM, self.module_id, ts, attrs={
            "code": "io_offline", "message": "input module answers again", "severity": "critical",
            "state": "cleared", "duration_s": round(max(0.0, ts - since), 3)})]

    def _alarm(self, p: _Point, code: str, state: _Debounced, message: str) -> Observation:
        ts = state.since if state.since is not None else 0.0
        attrs: dict[str, Scalar] = {"code": code, "severity": p.cfg.effective_severity, "input": p.cfg.id,
                                    "meaning": p.cfg.meaning}
        if state.value:
            self.raised += 1
            attrs |= {"state": "raised", "message": message}
        else:
            start = state.previous if state.previous is not None else ts
            attrs |= {"state": "cleared", "message": f"{message}: cleared", "duration_s": round(ts - start, 3)}
        return Observation(EventKind.ALARM, self.module_id, ts, attrs=attrs)

    def states(self) -> dict[str, dict[str, bool]]:
        """Each input's debounced state, for the status message."""
        return {p.cfg.id: {"active": p.active.value, "wire_break": p.broken.value} for p in self._points}

    @property
    def offline(self) -> bool:
        """Whether the io_offline alarm is raised."""
        return self._offline_since is not None
