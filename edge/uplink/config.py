"""Config of the uplink: the district broker (MQTT, TLS) and how the outbox is drained."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge.configbase import BackoffConfig, StrictModel

RESEND_MAX_FACTOR = 8
"""End-to-end resends: the wait doubles per attempt up to this many times `ack_timeout_s`."""


class TlsConfig(StrictModel):
    """TLS and mutual TLS for the broker connection."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class MqttConfig(StrictModel):
    """The district broker."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None
    username: str | None = None
    password_file: str | None = None
    keepalive_s: int = Field(default=30, ge=5)
    topic_prefix: str = Field(default="edgegw", pattern=r"^[A-Za-z0-9_/-]{1,64}$")
    tls: TlsConfig | None = None
    will_delay_s: int = Field(default=30, ge=0)


class UplinkConfig(StrictModel):
    """How the uplink drains the outbox."""

    window: int = Field(default=64, ge=1, le=65535)
    backoff: BackoffConfig = BackoffConfig(initial_s=1.0, max_s=60.0)
    status_interval_s: float = Field(default=30.0, gt=0)
    backlog_rate: float | None = Field(default=None, gt=0)
    """Events/s for the backlog after an outage (live events go first); None = no limit, strict order."""
    alarms_first: bool = True
    """Alarms (SOS presses, watch-list hits, obstruction) go out ahead of both lanes, whatever is
    queued before them; False keeps strict commit order for them too."""
    ack_mode: Literal["puback", "end_to_end"] = "puback"
    ack_timeout_s: float = Field(default=120.0, gt=0)
    """End-to-end mode: an event the platform's watermark has not covered this long after its send
    goes out again (each further resend waits twice as long, up to RESEND_MAX_FACTOR times)."""
    resend_hold_max_s: float | None = Field(default=None, ge=0)
    """End-to-end mode: while no watermark covers anything sent as late as an overdue event (the
    platform is away, not the messages), its resend is held, for at most this long after its send.
    None = 8 x ack_timeout_s (the longest wait of the doubling); 0 = no hold."""

    @model_validator(mode="after")
    def _hold_not_shorter_than_timeout(self) -> UplinkConfig:
        hold = self.resend_hold_max_s
        if hold is not None and 0 < hold < self.ack_timeout_s:
            raise ValueError(f"uplink.resend_hold_max_s ({hold:g}) must be 0 (no hold) or at least "
                             f"uplink.ack_timeout_s ({self.ack_timeout_s:g}): a shorter hold holds nothing")
        return self

    @property
    def resend_hold_s(self) -> float:
        """The hold in force, in seconds (0 = none)."""
        return RESEND_MAX_FACTOR * self.ack_timeout_s if self.resend_hold_max_s is None else self.resend_hold_max_s


