"""13.56 MHz (ISO 14443A / Mifare) readers that print the card UID as a hex line.

Accepted lines (ASCII, CR/LF/CRLF line ends), case-insensitive:

- bare hex: ``04A32B1C``, ``0x04A32B1C`` (8, 14 or 20 hex digits: 4-, 7- or 10-byte UIDs);
- byte groups separated by spaces, ':' or '-', each optionally ``0x``-prefixed, one or two
  digits: ``04 A3 2B 1C``, ``04:a3:2b:1c``, ``0x04 0xA3 0x2B 0x1C``;
- either of the above after a label and a colon, as the common Arduino sketches print them:
  ``Card UID: 04 A3 2B 1C`` (MFRC522 DumpInfo), ``UID Value: 0x04 0xA3 0x2B 0x1C`` (Adafruit PN532
  readMifare), ``In hex:  04 A3 2B 1C`` (MFRC522 ReadNUID). The label must contain the word UID,
  NUID, ID or hex and not "dec": the decimal line the same sketches print is not a UID in hex.

The identifier is the UID bytes in printed order as uppercase hex. Readers that print the UID as a
decimal number are not accepted: switch them to hex output. An all-zero UID is rejected.
"""

from __future__ import annotations

import re
from typing import ClassVar

from drivers.serial.base import DecodedFrame, FrameRejected, LineDecoder, ascii_text
from drivers.serial.ident import card_hex
from edge.types import IdKind, RawIdentifier

UID_LENGTHS = (4, 7, 10)
_BARE = re.compile(r"(?:0[xX])?([0-9A-Fa-f]+)")
_GROUPS = re.compile(r"(?:0[xX])?[0-9A-Fa-f]{1,2}(?:[ :-]+(?:0[xX])?[0-9A-Fa-f]{1,2})*")
_SPLIT = re.compile(r"[ :-]+")
_LABEL = re.compile(r"([A-Za-z][A-Za-z ]{0,31}):\s*(.*)")
# Only labels that announce a hex UID: sketches also print the UID in decimal ("In dec: 4 16 43 28"),
# which would otherwise parse as hex groups and invent a card.
_UID_LABEL = re.compile(r"(?i)\b(?:n?uid|hex|id)\b")
_DECIMAL_LABEL = re.compile(r"(?i)\bdec")


def _parse_uid(text: str) -> bytes | None:
    if match := _BARE.fullmatch(text):
        digits = match.group(1)
        if len(digits) % 2:
            return None
        return bytes.fromhex(digits)
    if _GROUPS.fullmatch(text):
        return bytes(int(group.removeprefix("0x").removeprefix("0X"), 16) for group in _SPLIT.split(text))
    return None


class MifareDecoder(LineDecoder):
    """Decoder for readers printing ISO 14443A UIDs as hex lines."""

    format: ClassVar[str] = "mifare"

    def _decode_line(self, line: bytes) -> DecodedFrame | None:
        text = ascii_text(line)
        uid = _parse_uid(text)
        if uid is None and (match := _LABEL.fullmatch(text)):
            label = match.group(1)
            if _UID_LABEL.search(label) and not _DECIMAL_LABEL.search(label):
                uid = _parse_uid(match.group(2).strip())
        if uid is None:
            raise FrameRejected("unrecognised")
        if len(uid) not in UID_LENGTHS:
            raise FrameRejected("length")
        if not any(uid):
            raise FrameRejected("bad_uid")
        return DecodedFrame(
            format=self.format,
            identifier=RawIdentifier(IdKind.CARD, card_hex(uid)),
            details={"uid_bytes": len(uid)},
        )
