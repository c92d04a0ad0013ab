"""A scriptable input source for tests and the demo (the protocol's shipped fake)."""

from __future__ import annotations

import threading
import time

from drivers.inputs.base import InputScan
from edge.errors import DriverError


class FakeInputSource:
    """Levels and wire breaks set by the test; `fail` makes scans raise like a dead module."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed: dict[int, bool] = {}
        self._broken: dict[int, bool] = {}
        self.fail = False
        self.scans = 0

    def set(self, channel: int, closed: bool) -> None:
        """Close (True) or open (False) the contact on `channel`."""
        with self._lock:
            self._closed[channel] = closed

    def cut(self, channel: int, broken: bool = True) -> None:
        """Report (or stop reporting) a wire break on `channel`."""
        with self._lock:
            self._broken[channel] = broken

    def scan(self, channels: tuple[int, ...]) -> InputScan:
        """The levels as last set (open by default)."""
        with self._lock:
            self.scans += 1
            if self.fail:
                raise DriverError("fake input module does not answer")
            return InputScan(time.time(), {ch: self._closed.get(ch, False) for ch in channels},
                             {ch: self._broken[ch] for ch in channels if ch in self._broken})

    def close(self) -> None:
        """Nothing to release."""
