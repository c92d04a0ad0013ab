"""Config of the console: where it listens, TLS, sessions, its state files."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, model_validator

from edge.configbase import StrictModel


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConsoleConfig(StrictModel):
    """`edgegw console`: loopback by default; a LAN address only with TLS."""

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    tls: bool = False
    """Serve HTTPS; a self-signed certificate is made on first start unless cert/key files are given."""
    cert_file: Path | None = None
    key_file: Path | None = None
    db: Path = Path("console/console.db")
    """Users, sessions and the login throttle (relative to gateway.data_dir)."""
    live_dir: Path = Path("live")
    """Where capture and the console exchange preview frames (relative to gateway.data_dir)."""
    session_ttl_s: float = Field(default=8 * 3600.0, gt=0)
    preview_fps: float = Field(default=4.0, ge=1.0, le=5.0)
    preview_max_height: int = Field(default=720, ge=360, le=720)

    @model_validator(mode="after")
    def _lan_needs_tls(self) -> ConsoleConfig:
        if not is_loopback(self.host) and not self.tls:
            raise ValueError(f"console.host {self.host!r} is not a loopback address: set console.tls = true "
                             "(the console never listens on the LAN without TLS)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("console.cert_file and console.key_file go together")
        return self
