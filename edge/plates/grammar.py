"""The Chinese licence-plate grammar (GA 36): character classes, per-position templates, validation.

A plate is a sequence of positions, each allowing one class of characters. Decoding is constrained
to these templates, so a read that cannot be a plate is never produced.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.compat import StrEnum

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
"""The 31 provincial abbreviations that open a civil plate."""

# I and O are never used on plates (they read as 1 and 0).
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
DIGITS = "0123456789"
ALNUM = LETTERS + DIGITS
SUFFIXES = "学警挂领使港澳"
"""Special last characters: coach, police, trailer, consulate, embassy, Hong Kong, Macau."""
EMBASSY = "使"
NEW_ENERGY_CLASS = "DF"
"""D: battery electric, F: other new-energy (GA 36-2018)."""

PLATE_CHARS = "".join(sorted(set(PROVINCES + ALNUM + SUFFIXES)))
"""Every character that can appear on a plate; recognisers are restricted to these classes."""


class PlateFormat(StrEnum):
    """The grammatical form of a plate text."""

    STANDARD = "standard"  # province, letter, 5 alphanumerics (blue, yellow, black, white)
    SPECIAL = "special"  # province, letter, 4 alphanumerics, a special suffix (学 警 挂 领 港 澳 使)
    NEW_ENERGY_SMALL = "new_energy_small"  # province, letter, D/F, alnum, 4 digits
    NEW_ENERGY_LARGE = "new_energy_large"  # province, letter, 5 digits, D/F
    EMBASSY = "embassy"  # 使 and 6 digits


@dataclass(frozen=True, slots=True)
class Template:
    """One plate form as the allowed characters at each position."""

    form: PlateFormat
    positions: tuple[str, ...]

    @property
    def length(self) -> int:
        """Number of characters of a plate of this form."""
        return len(self.positions)

    def matches(self, text: str) -> bool:
        """Whether `text` fits this template exactly."""
        return len(text) == self.length and all(c in allowed for c, allowed in zip(text, self.positions, strict=True))


TEMPLATES: tuple[Template, ...] = (
    Template(PlateFormat.STANDARD, (PROVINCES, LETTERS, ALNUM, ALNUM, ALNUM, ALNUM, ALNUM)),
    Template(PlateFormat.SPECIAL, (PROVINCES, LETTERS, ALNUM, ALNUM, ALNUM, ALNUM, SUFFIXES)),
    Template(
        PlateFormat.NEW_ENERGY_SMALL,
        (PROVINCES, LETTERS, NEW_ENERGY_CLASS, ALNUM, DIGITS, DIGITS, DIGITS, DIGITS),
    ),
    Template(
        PlateFormat.NEW_ENERGY_LARGE,
        (PROVINCES, LETTERS, DIGITS, DIGITS, DIGITS, DIGITS, DIGITS, NEW_ENERGY_CLASS),
    ),
    Template(PlateFormat.EMBASSY, (EMBASSY, DIGITS, DIGITS, DIGITS, DIGITS, DIGITS, DIGITS)),
)
"""All plate forms that decoding may produce."""


def plate_format(text: str) -> PlateFormat | None:
    """The form `text` has, or None when it cannot be a Chinese plate."""
    for template in TEMPLATES:
        if template.matches(text):
            return template.form
    return None


def is_valid_plate(text: str) -> bool:
    """Whether `text` is a grammatically possible plate."""
    return plate_format(text) is not None


def normalise_plate(text: str) -> str:
    """Canonical form of a plate text: upper case, no spaces, separators or middle dots."""
    return "".join(c for c in text.upper() if c not in " \t-·.•_")


def is_new_energy(text: str) -> bool:
    """Whether `text` is a green new-energy plate (8 characters with the D/F rule)."""
    return plate_format(text) in (PlateFormat.NEW_ENERGY_SMALL, PlateFormat.NEW_ENERGY_LARGE)
