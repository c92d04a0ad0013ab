"""Python 3.10 support: the few 3.11 names edgegw uses, from the standard library where it has them.

JetPack 6 (Jetson Orin) ships Python 3.10, and the rest of the fleet runs 3.11–3.13; this module
is the only place that knows the difference. Import `StrEnum`, `UTC` and `tomllib` from here.
"""

from __future__ import annotations

import sys
from datetime import timezone
from enum import Enum

__all__ = ["UTC", "StrEnum", "tomllib"]

UTC = timezone.utc
"""`datetime.UTC` (3.11) is this same object."""


class _StrEnum(str, Enum):
    """`enum.StrEnum` of 3.11 for 3.10: members are strings, and `str()`/`format()` give the value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[str]) -> str:
        return name.lower()


if sys.version_info >= (3, 11):
    from enum import StrEnum

    import tomllib
else:  # Python 3.10 (JetPack 6); the 3.10 type check (make typecheck-py310) covers this branch
    import tomli as tomllib

    StrEnum = _StrEnum
