"""Wiegand 26 and 34 frames as forwarded, bit for bit, by a Wiegand-to-serial converter.

Accepted line formats (ASCII, CR/LF/CRLF line ends):

- the output of the WiegandNG library's `WiegandRawTest` sketch on an Arduino wired to the
  reader's D0/D1 lines (github.com/jpliew/Wiegand-NG-Multi-Bit-Wiegand-Library-for-Arduino,
  9600 baud): a line ``Bits=26`` followed by a line ``RAW Binary=10110...`` holding every bit as
  received, parity included;
- a bare line of the received bits, ``10110...`` (26 or 34 characters of 0/1), as printed by
  converters in raw/debug mode.

Both parity bits are checked: the first bit is even parity over the first half of the frame (the
parity bit and the first 12 or 16 data bits) and the last bit odd parity over the second half.
The identifier is the 24 or 32 data bits as 6 or 8 uppercase hex characters.
"""

from __future__ import annotations

import re
from typing import ClassVar

from drivers.serial.base import DecodedFrame, FrameRejected, LineDecoder
from drivers.serial.ident import card_hex
from edge.types import IdKind, RawIdentifier

SUPPORTED_BITS = (26, 34)
_BITS_LINE = re.compile(r"Bits\s*=\s*(\d{1,4})")
_RAW_LINE = re.compile(r"RAW Binary\s*=\s*([01]+)")
_BARE_LINE = re.compile(r"[01]+")


def encode_bits(data: int, nbits: int) -> str:
    """The frame for `data` (24 or 32 bits) with both parity bits, as a 0/1 string."""
    body = format(data, f"0{nbits - 2}b")
    if len(body) != nbits - 2:
        raise ValueError(f"data does not fit in {nbits - 2} bits")
    half = (nbits - 2) // 2
    lead = body[:half].count("1") % 2  # makes the first half even
    trail = 1 - body[half:].count("1") % 2  # makes the second half odd
    return f"{lead}{body}{trail}"


def parity_ok(bits: str) -> bool:
    """True if the leading even and trailing odd parity bits both hold."""
    half = len(bits) // 2
    return bits[:half].count("1") % 2 == 0 and bits[half:].count("1") % 2 == 1


class WiegandDecoder(LineDecoder):
    """Decoder for raw Wiegand 26/34 bit lines (WiegandNG raw output or bare bit strings)."""

    format: ClassVar[str] = "wiegand"

    def __init__(self) -> None:
        super().__init__()
        self._pending_bits: int | None = None

    def _reset_state(self) -> None:
        self._drop_pending()

    def _drop_pending(self) -> None:
        # A "Bits=" header whose RAW line never came.
        if self._pending_bits is not None:
            self._counters.reject("truncated")
            self._pending_bits = None

    def _decode_line(self, line: bytes) -> DecodedFrame | None:
        if not line.isascii():
            self._drop_pending()
            raise FrameRejected("encoding")
        text = line.decode("ascii")
        if match := _BITS_LINE.fullmatch(text):
            self._drop_pending()
            self._pending_bits = int(match.group(1))
            return None
        if match := _RAW_LINE.fullmatch(text):
            expected, self._pending_bits = self._pending_bits, None
            bits = match.group(1)
            if expected is not None and expected != len(bits):
                raise FrameRejected("length_mismatch")
        elif _BARE_LINE.fullmatch(text):
            self._drop_pending()
            bits = text
        else:
            self._drop_pending()
            raise FrameRejected("unrecognised")
        return self._decode_bits(bits)

    def _decode_bits(self, bits: str) -> DecodedFrame:
        nbits = len(bits)
        if nbits not in SUPPORTED_BITS:
            raise FrameRejected("unsupported_length")
        if not parity_ok(bits):
            raise FrameRejected("parity")
        data = int(bits[1:-1], 2)
        nbytes = (nbits - 2) // 8
        details: dict[str, str | int] = {"bits": nbits}
        if nbits == 26:
            # H10301: 8-bit facility code, 16-bit card number (what the card face shows).
            details["facility"] = data >> 16
            details["number"] = data & 0xFFFF
        return DecodedFrame(
            format=self.format,
            identifier=RawIdentifier(IdKind.CARD, card_hex(data.to_bytes(nbytes, "big"))),
            details=details,
        )
