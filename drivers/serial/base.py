"""Decoder building blocks: decoded frames, reject counters and a bounded line splitter.

Decoders are pure: bytes in, `DecodedFrame`s out. They never raise from `feed`; a frame that fails
a check is counted under a short reason and skipped, and the decoder resynchronises on the next
frame. Every buffer is bounded, so a stream without delimiters cannot grow memory.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Protocol, runtime_checkable

from edge.types import RawIdentifier, Reading, Scalar

_log = logging.getLogger(__name__)

_EOL = re.compile(rb"[\r\n]")


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """One accepted frame: a canonical identifier plus what the sensor said about it (raw)."""

    format: str
    identifier: RawIdentifier
    rssi: int | None = None
    channel: int | None = None
    device_ts: float | None = None
    address_random: bool = False
    # Format-specific facts for installers (e.g. Wiegand facility code); may be raw, so they stay
    # in the local CLI and never reach a Reading.
    details: Mapping[str, Scalar] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def to_reading(self, source_id: str, ts: float) -> Reading:
        """The Reading for this frame, stamped with the receiving sensor and host time."""
        return Reading(
            source_id=source_id,
            ts=ts,
            format=self.format,
            identifier=self.identifier,
            rssi=self.rssi,
            channel=self.channel,
            address_random=self.address_random,
        )


@dataclass(frozen=True, slots=True)
class DecodeStats:
    """A snapshot of a decoder's counters."""

    accepted: int
    rejected: Mapping[str, int]
    discarded_bytes: int

    @property
    def rejected_total(self) -> int:
        """Rejected frames over all reasons."""
        return sum(self.rejected.values())


@runtime_checkable
class SerialDecoder(Protocol):
    """Bytes in, frames out; garbage counted, never raised."""

    @property
    def format(self) -> str:
        """The format name, as in the registry."""
        ...

    def feed(self, data: bytes) -> list[DecodedFrame]:
        """Consume a chunk and return the frames it completed."""
        ...

    def reset(self) -> None:
        """Drop a partial frame (counted as truncated), e.g. after the port reconnects."""
        ...

    def stats(self) -> DecodeStats:
        """Counters so far."""
        ...

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (bounded)."""
        ...


class FrameRejected(Exception):  # noqa: N818 -- internal control flow, never escapes a decoder
    """Raised inside a decoder to reject the current frame under `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameCounters:
    """Accepted/rejected/discarded counters shared by the decoders."""

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.discarded_bytes = 0

    def reject(self, reason: str) -> None:
        """Count one rejected frame."""
        self.rejected[reason] += 1

    def snapshot(self) -> DecodeStats:
        """A frozen copy of the counters."""
        return DecodeStats(self.accepted, MappingProxyType(dict(self.rejected)), self.discarded_bytes)


def internal_error(counters: FrameCounters, fmt: str, exc: Exception) -> None:
    """Count and log a decoder bug without its message, which could quote raw input."""
    counters.reject("internal_error")
    _log.error("decoder %s: internal error (%s); frame dropped", fmt, type(exc).__name__)


class LineDecoder(ABC):
    """A decoder for line-oriented formats: CR, LF or CRLF end a line; blank lines are skipped."""

    format: ClassVar[str]
    max_line: ClassVar[int] = 128

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overlong = False
        self._counters = FrameCounters()

    @property
    def buffered(self) -> int:
        """Bytes held for the incomplete current line (at most `max_line`)."""
        return len(self._buf)

    def stats(self) -> DecodeStats:
        """Counters so far."""
        return self._counters.snapshot()

    def reset(self) -> None:
        """Drop the incomplete current line, counting it as truncated if it held anything."""
        if self._buf or self._overlong:
            self._counters.reject("truncated")
            self._counters.discarded_bytes += len(self._buf)
        self._buf.clear()
        self._overlong = False
        self._reset_state()

    def feed(self, data: bytes) -> list[DecodedFrame]:
        """Consume a chunk and return the frames of the lines it completed."""
        out: list[DecodedFrame] = []
        try:
            start = 0
            for match in _EOL.finditer(data):
                self._end_line(data[start : match.start()], out)
                start = match.end()
            self._append(data[start:])
        except Exception as exc:  # the contract is that feed never raises; a bug is counted instead
            internal_error(self._counters, self.format, exc)
            self._buf.clear()
            self._overlong = False
        return out

    def _append(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._overlong:
            self._counters.discarded_bytes += len(chunk)
        elif len(self._buf) + len(chunk) > self.max_line:
            # Drop what we have and skip to the next end of line: memory stays bounded.
            self._counters.discarded_bytes += len(self._buf) + len(chunk)
            self._buf.clear()
            self._overlong = True
        else:
            self._buf += chunk

    def _end_line(self, tail: bytes, out: list[DecodedFrame]) -> None:
        if self._overlong or len(self._buf) + len(tail) > self.max_line:
            self._counters.discarded_bytes += len(self._buf) + len(tail)
            self._counters.reject("overlong")
            self._buf.clear()
            self._overlong = False
            return
        line = (bytes(self._buf) + tail).strip(b" \t")
        self._buf.clear()
        if not line:
            return
        try:
            frame = self._decode_line(line)
        except FrameRejected as rej:
            self._counters.reject(rej.reason)
            return
        if frame is not None:
            self._counters.accepted += 1
            out.append(frame)

    def _reset_state(self) -> None:  # noqa: B027 -- optional hook, empty by default
        """Hook for decoders that keep state across lines."""

    @abstractmethod
    def _decode_line(self, line: bytes) -> DecodedFrame | None:
        """Decode one non-blank line; None for lines to skip silently (headers, comments)."""


def ascii_text(line: bytes) -> str:
    """The line as ASCII text, or a rejection under `encoding`."""
    try:
        return line.decode("ascii")
    except UnicodeDecodeError:
        raise FrameRejected("encoding") from None
