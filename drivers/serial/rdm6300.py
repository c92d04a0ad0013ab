"""RDM6300 / EM4100 125 kHz readers: STX, 10 hex data chars, 2 hex checksum chars, ETX.

Frame (9600 8N1, ASCII): 0x02 | D0..D9 | C0 C1 | 0x03, where D0..D9 are the 5 data bytes of the
EM4100 tag (version/customer byte, then the 32-bit serial) in hex and C0C1 is the XOR of those 5
bytes. ID Innovations ID-12/ID-20 readers send the same frame with CR LF before ETX; that is
accepted too. The identifier is the 5 data bytes as 10 uppercase hex characters.
"""

from __future__ import annotations

from typing import ClassVar

from drivers.serial.base import DecodedFrame, DecodeStats, FrameCounters, internal_error
from drivers.serial.ident import card_hex
from edge.types import IdKind, RawIdentifier

STX = 0x02
ETX = 0x03
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_BODY = 12  # 10 data + 2 checksum characters
_MAX_BODY = _BODY + 2  # optional CR LF (ID-12/ID-20)


def checksum(data: bytes) -> int:
    """XOR of the data bytes, as the reader computes it."""
    value = 0
    for byte in data:
        value ^= byte
    return value


def encode(tag: bytes, *, crlf: bool = False) -> bytes:
    """The frame a reader sends for a 5-byte tag (used by tests and for documentation)."""
    body = tag.hex().upper() + f"{checksum(tag):02X}"
    return bytes([STX]) + body.encode("ascii") + (b"\r\n" if crlf else b"") + bytes([ETX])


class Rdm6300Decoder:
    """Decoder for STX/ETX-framed EM4100 readers (RDM6300, RDM630, ID-12/ID-20)."""

    format: ClassVar[str] = "rdm6300"

    def __init__(self) -> None:
        self._counters = FrameCounters()
        self._buf = bytearray()
        self._in_frame = False

    @property
    def buffered(self) -> int:
        """Bytes held for the frame in progress (at most 14)."""
        return len(self._buf)

    def stats(self) -> DecodeStats:
        """Counters so far."""
        return self._counters.snapshot()

    def reset(self) -> None:
        """Drop a frame in progress, counting it as truncated."""
        if self._in_frame:
            self._counters.reject("truncated")
        self._abandon()

    def feed(self, data: bytes) -> list[DecodedFrame]:
        """Consume a chunk and return the frames it completed."""
        out: list[DecodedFrame] = []
        try:
            self._feed(data, out)
        except Exception as exc:  # the contract is that feed never raises; a bug is counted instead
            internal_error(self._counters, self.format, exc)
            self._abandon()
        return out

    def _abandon(self) -> None:
        self._buf.clear()
        self._in_frame = False

    def _feed(self, data: bytes, out: list[DecodedFrame]) -> None:
        i, n = 0, len(data)
        while i < n:
            if not self._in_frame:
                # Hunt for the next STX; everything before it is line noise.
                j = data.find(STX, i)
                if j < 0:
                    self._counters.discarded_bytes += n - i
                    return
                self._counters.discarded_bytes += j - i
                self._in_frame = True
                i = j + 1
                continue
            byte = data[i]
            i += 1
            if byte == STX:
                # A new frame starts before the old one ended: the old one lost its tail.
                self._counters.reject("truncated")
                self._buf.clear()
            elif byte == ETX:
                self._finish(out)
            elif len(self._buf) >= _MAX_BODY:
                self._counters.reject("overlong")
                self._counters.discarded_bytes += len(self._buf) + 1
                self._abandon()
            elif byte in _HEX or (byte in (0x0D, 0x0A) and len(self._buf) >= _BODY):
                self._buf.append(byte)
            else:
                self._counters.reject("bad_char")
                self._counters.discarded_bytes += len(self._buf) + 1
                self._abandon()

    def _finish(self, out: list[DecodedFrame]) -> None:
        body = bytes(self._buf)
        self._abandon()
        if len(body) == _MAX_BODY and body.endswith(b"\r\n"):
            body = body[:_BODY]
        if len(body) != _BODY or not _HEX.issuperset(body):
            self._counters.reject("truncated" if len(body) < _BODY else "bad_char")
            return
        raw = bytes.fromhex(body.decode("ascii"))
        tag, check = raw[:5], raw[5]
        if checksum(tag) != check:
            self._counters.reject("checksum")
            return
        self._counters.accepted += 1
        out.append(
            DecodedFrame(
                format=self.format,
                identifier=RawIdentifier(IdKind.CARD, card_hex(tag)),
                # What EM4100 cards print on their face: the 32-bit serial in decimal, 10 digits.
                details={"decimal": f"{int.from_bytes(tag[1:], 'big'):010d}"},
            )
        )
