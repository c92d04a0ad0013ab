"""The protocol every wired-input source implements, and the scan it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class InputScan:
    """One read of a module's inputs.

    `closed[ch]` is True when the contact on channel `ch` is closed (current flows), whatever the
    input means; `wire_break[ch]` is True when the module's line supervision reports the loop cut
    (only for modules that report it; otherwise the mapping is empty).
    """

    ts: float
    closed: dict[int, bool]
    wire_break: dict[int, bool]


class DigitalInputSource(Protocol):
    """A module with digital inputs, read by polling. Implementations raise DriverError on failure."""

    def scan(self, channels: tuple[int, ...]) -> InputScan:
        """Read `channels` now (blocking at most the source's timeout)."""
        ...

    def close(self) -> None:
        """Release the port or the lines for good (the poller calls it once, when it stops)."""
        ...
