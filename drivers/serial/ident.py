"""Canonical forms of identifiers: card numbers as uppercase hex, MACs as lowercase aa:bb:cc:dd:ee:ff.

The same card or phone must give the same string whatever the reader printed, because the privacy
module derives the keyed pseudonym from this string.
"""

from __future__ import annotations

import re

from drivers.serial.base import FrameRejected

_MAC_SEPARATED = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")
_MAC_BARE = re.compile(r"[0-9A-Fa-f]{12}")


def card_hex(uid: bytes) -> str:
    """A card UID as uppercase hex of its bytes, most significant (first transmitted) byte first."""
    return uid.hex().upper()


def canonical_mac(text: str) -> str:
    """A transmitter MAC in canonical form, or a rejection (`bad_mac`, `multicast_mac`).

    Accepts six hex octets separated by ':' or '-' (one kind throughout) or twelve bare hex digits,
    in any case. A group (multicast) address cannot transmit, and all-zero is a firmware placeholder.
    """
    text = text.strip()
    if _MAC_SEPARATED.fullmatch(text):
        digits = text.replace(":", "").replace("-", "")
    elif _MAC_BARE.fullmatch(text):
        digits = text
    else:
        raise FrameRejected("bad_mac")
    digits = digits.lower()
    if digits == "0" * 12:
        raise FrameRejected("bad_mac")
    if int(digits[:2], 16) & 0x01:
        raise FrameRejected("multicast_mac")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
