"""Config of the metrics endpoints: one loopback port per daemon (Prometheus scrapes them locally)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator

from edge.configbase import StrictModel


class MetricsConfig(StrictModel):
    """Where each daemon serves `/metrics`, `/livez` and `/readyz`; a port of 0 turns that one off."""

    enabled: bool = True
    host: str = "127.0.0.1"
    """Loopback only: the exposition is unauthenticated, so it must not reach the LAN."""
    capture_port: int = Field(default=9811, ge=0, le=65535)
    uplink_port: int = Field(default=9812, ge=0, le=65535)
    console_port: int = Field(default=9813, ge=0, le=65535)

    @field_validator("host")
    @classmethod
    def _loopback(cls, v: str) -> str:
        if v == "localhost":
            return v
        try:
            ok = ipaddress.ip_address(v).is_loopback
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"metrics.host must be a loopback address (127.0.0.1, ::1), not {v!r}: "
                             "the exposition has no authentication")
        return v

    def port_for(self, daemon: str) -> int:
        """The port of `daemon` (capture, uplink, console); 0 when metrics are off."""
        if not self.enabled:
            return 0
        port: int = getattr(self, f"{daemon}_port")
        return port
