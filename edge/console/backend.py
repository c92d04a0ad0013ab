"""What the console needs from the gateway, as a protocol: the composition root (edge.app.console) implements it.

The console wing reaches nothing of capture or the uplink: it reads the status they record, edits the
config through the root validator, writes the audit log and talks to capture over edge.preview.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from edge.preview import LiveChannel


@dataclass(frozen=True, slots=True)
class CameraInfo:
    """A configured camera as the console shows it."""

    id: str
    kind: str  # "face", "plate" or "none"
    source: str  # the driver kind (rtsp, usb, file, fake)
    gate_line: tuple[tuple[float, float], tuple[float, float]] | None
    zones: tuple[dict[str, Any], ...] = ()
    """The camera's zones as configured (id, rule, polygon in fractions, the rule's parameters)."""
    masks: tuple[dict[str, Any], ...] = ()
    """The camera's detection masks as configured (id, polygon in fractions, note)."""


class ConfigRejectedError(Exception):
    """The validator refused an edit; the message is the validator's own and is shown to the installer."""


class ConfigUnwritableError(ConfigRejectedError):
    """The edit is valid but the config file cannot be written (permissions, a read-only root)."""


class ConsoleBackend(Protocol):
    """The gateway as the console sees it."""

    live: LiveChannel

    def status(self) -> dict[str, Any]:
        """The status body the uplink publishes (cameras, ports, backlog, alarms), read locally."""
        ...

    def cameras(self) -> list[CameraInfo]:
        """The configured cameras (re-read from the config file)."""
        ...

    def serial_ports(self) -> list[dict[str, str]]:
        """The configured serial sensors: id, format, port."""
        ...

    def models(self) -> list[dict[str, str]]:
        """Model names with their pinned versions and whether they verified."""
        ...

    def save_gate_line(self, camera_id: str, a: tuple[float, float], b: tuple[float, float], actor: str) -> str:
        """Validate and write the gate line; returns the new config's sha256; ConfigRejectedError if invalid."""
        ...

    def save_shapes(self, camera_id: str, zones: list[dict[str, Any]], masks: list[dict[str, Any]],
                    actor: str) -> str:
        """Replace the camera's zones and masks (polygons in fractions); the new config's sha256, or
        ConfigRejectedError with the validator's message."""
        ...

    def audit(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """Append an audit record."""
        ...

    def last_checks(self) -> dict[str, Any] | None:
        """The last `edgegw check` result, if any."""
        ...

    def run_checks(self) -> dict[str, Any]:
        """Run the checks that do not need the devices capture holds; returns the result."""
        ...

    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last events as published (pseudonyms only), newest first."""
        ...
