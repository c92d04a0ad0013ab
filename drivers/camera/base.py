"""The camera driver protocol: open, read frames until exhausted or failed, close."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from edge.types import Frame


@dataclass(frozen=True, slots=True)
class DriverStatus:
    """What a driver knows about its device; `target` never holds credentials."""

    kind: str
    target: str
    opened: bool
    frames_read: int
    width: int | None = None
    height: int | None = None
    nominal_fps: float | None = None


@runtime_checkable
class CameraDriver(Protocol):
    """A camera. Reconnecting is not its job: the supervisor calls `open` again after a failure.

    `read` returns the next frame, None once a finite source is exhausted, and raises
    `edge.errors.DriverError` when the device fails. A driver is used from one thread at a time.
    """

    @property
    def source_id(self) -> str:
        """The camera id frames carry."""
        ...

    @property
    def pace_fps(self) -> float | None:
        """Release frames no faster than this (files played in real time); None: the device paces."""
        ...

    @property
    def lossless(self) -> bool:
        """True for recorded input played as fast as the pipeline takes it: wait for queue room
        rather than drop frames. Live devices are never lossless (a backlog would only add latency)."""
        ...

    @property
    def status(self) -> DriverStatus:
        """The driver's view of its device."""
        ...

    def open(self) -> None:
        """Open (or reopen) the device; raises DriverError."""
        ...

    def read(self) -> Frame | None:
        """The next frame; None when the source is exhausted; raises DriverError on failure."""
        ...

    def close(self) -> None:
        """Release the device; idempotent."""
        ...
