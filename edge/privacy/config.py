"""Config of the privacy boundary: the district key, the epoch policy, local plate prefixes."""

from __future__ import annotations

from edge.compat import StrEnum
from edge.configbase import StrictModel


class EpochPolicy(StrEnum):
    """How long one pseudonym key lives."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class PrivacyConfig(StrictModel):
    """Pseudonym keys: the district key file (0600) and how long one epoch key lives."""

    district_key_file: str = "district.key"
    """Path to the key file, or a systemd credential name (looked up in $CREDENTIALS_DIRECTORY)."""
    epoch: EpochPolicy = EpochPolicy.MONTH
    local_plate_prefixes: tuple[str, ...] = ()


