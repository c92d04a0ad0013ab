"""Config models for serial sensors (card readers, MAC sniffers)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from drivers.serial.registry import FORMATS
from edge.configbase import BackoffConfig, StrictModel

Parity = Literal["none", "even", "odd", "mark", "space"]


class SerialSensorConfig(StrictModel):
    """One sensor on one serial port (or a pyserial URL such as rfc2217://host:port)."""

    kind: Literal["serial"] = "serial"
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    port: str = Field(min_length=1, max_length=4096)
    format: str
    # None: the format's usual speed (9600 for card readers, 115200 for sniffers).
    baud: int | None = Field(default=None, gt=0, le=4_000_000)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Parity = "none"
    stopbits: float = 1
    # Which way the reader faces at the gate, for passage fusion; None for sniffers.
    side: Literal["in", "out"] | None = None
    # How long one read may block, i.e. how quickly the reader notices a stop request.
    read_timeout_s: float = Field(default=0.2, gt=0, le=5)
    backoff: BackoffConfig = BackoffConfig(initial_s=1.0, max_s=30.0)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"unknown serial format {value!r}; known: {', '.join(FORMATS)}")
        return value

    @field_validator("stopbits")
    @classmethod
    def _known_stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return value

    @property
    def effective_baud(self) -> int:
        """The configured speed, or the format's usual one."""
        return self.baud if self.baud is not None else FORMATS[self.format].default_baud
