"""Config of the privacy boundary: where the epoch keys come from, the epoch policy, local plate prefixes."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge.compat import StrEnum
from edge.configbase import StrictModel


class EpochPolicy(StrEnum):
    """How long one pseudonym key lives."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class PrivacyConfig(StrictModel):
    """Pseudonym keys: the gateway's identity, its store of wrapped epoch keys, how long one epoch lives."""

    gateway_key_file: str = "gateway.key"
    """The gateway identity seed (0600 file, or a systemd credential name looked up in
    $CREDENTIALS_DIRECTORY): epoch keys are wrapped to it, and it signs the published audit head."""
    epoch_keys_path: Path = Path("epoch-keys.db")
    """The store of epoch keys delivered by the district (`edgegw keys import`), kept wrapped."""
    key_service_public_key: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """The district key service's Ed25519 public key (hex; not a secret): bundles it did not sign are
    refused (`python -m district.keyservice signing-public` prints it). Unset: unsigned bundles are
    accepted with a warning."""
    district_key_file: str | None = None
    """Development only: derive every epoch key from a district root key on this machine. A gateway in
    the field never holds it (a stolen gateway would expose the whole district); leave unset."""
    epoch: EpochPolicy = EpochPolicy.MONTH
    local_plate_prefixes: tuple[str, ...] = ()


