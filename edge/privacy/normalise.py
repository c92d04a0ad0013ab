"""Canonical forms of identifiers, so one plate, card or MAC always gets one pseudonym."""

from __future__ import annotations

import re
import unicodedata

from edge.errors import PrivacyError
from edge.types import IdKind

# Separators people and devices put inside identifiers: the plate's middle dot, dashes, colons.
_PLATE_SEPARATORS = re.compile(r"[\s·•・.\-_]")
_HEX_SEPARATORS = re.compile(r"[\s:.\-_]")
_HEX = re.compile(r"^[0-9A-F]+$")


def normalise(kind: IdKind, value: str) -> str:
    """Return the canonical form of `value`; PrivacyError if it cannot be an identifier of `kind`.

    The error message never repeats the value.
    """
    if kind is IdKind.PLATE:
        text = _PLATE_SEPARATORS.sub("", unicodedata.normalize("NFKC", value)).upper()
        if not 6 <= len(text) <= 10:
            raise PrivacyError(f"a plate must have 6 to 10 characters, got {len(text)}")
        return text
    if kind is IdKind.MAC:
        hexdigits = _HEX_SEPARATORS.sub("", value).upper()
        if len(hexdigits) != 12 or not _HEX.match(hexdigits):
            raise PrivacyError("a MAC must be 12 hex digits")
        low = hexdigits.lower()
        return ":".join(low[i : i + 2] for i in range(0, 12, 2))
    if kind is IdKind.CARD:
        hexdigits = _HEX_SEPARATORS.sub("", value).upper()
        hexdigits = hexdigits.removeprefix("0X")
        if not hexdigits or len(hexdigits) > 40 or not _HEX.match(hexdigits):
            raise PrivacyError("a card number must be 1 to 40 hex digits (uppercase hex of the UID)")
        return hexdigits
    text = value.strip()
    if not text:
        raise PrivacyError("a resident id must not be empty")
    return text
