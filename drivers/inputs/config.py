"""Config models for wired-input modules (selected by `kind`), and for each input on them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from edge.configbase import BackoffConfig, StrictModel

Meaning = Literal["alarm_column", "door_contact", "tamper"]
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# An SOS press wakes someone up; an opened door or a tamper loop is for the duty officer.
DEFAULT_SEVERITY: dict[str, str] = {"alarm_column": "critical", "door_contact": "warning", "tamper": "critical"}


class InputPointConfig(StrictModel):
    """One wired input: which channel, what it means and how it is wired."""

    id: str = Field(pattern=_ID)
    channel: int = Field(ge=0, le=65535)
    """Input number on the module (Modbus: offset from the module's `address`; GPIO: the line offset)."""
    meaning: Meaning
    contact: Literal["no", "nc"] = "no"
    """Normally open (active when the contact closes, e.g. a push button) or normally closed
    (active when the loop opens: door contacts and tamper loops, so a cut wire also alarms)."""
    debounce_s: float = Field(default=0.05, ge=0.0, le=10.0)
    """A new level must hold this long before it counts (contact bounce, induced spikes)."""
    severity: Literal["info", "warning", "critical"] | None = None
    """None: by meaning (alarm_column and tamper critical, door_contact warning)."""

    @property
    def effective_severity(self) -> str:
        """The configured severity, or the meaning's default."""
        return self.severity or DEFAULT_SEVERITY[self.meaning]


class _ModuleBase(StrictModel):
    id: str = Field(pattern=_ID)
    inputs: list[InputPointConfig] = Field(min_length=1)
    poll_interval_s: float = Field(default=0.05, gt=0.0, le=10.0)
    """How often the inputs are read; with the debounce it bounds how late a press is seen."""
    offline_after_s: float = Field(default=3.0, gt=0.0)
    """An `io_offline` alarm is raised when no read has succeeded for this long (cleared on the next)."""
    backoff: BackoffConfig = BackoffConfig(initial_s=0.2, max_s=10.0)

    @model_validator(mode="after")
    def _distinct(self) -> _ModuleBase:
        ids = [p.id for p in self.inputs]
        channels = [p.channel for p in self.inputs]
        if len(set(ids)) != len(ids):
            raise ValueError("input ids must be unique on a module")
        if len(set(channels)) != len(channels):
            raise ValueError("two inputs on the same channel")
        return self


class ModbusInputsConfig(_ModuleBase):
    """An RS-485 Modbus RTU digital-input module (polled with function 2 or 1)."""

    kind: Literal["modbus_rtu"] = "modbus_rtu"
    port: str = Field(min_length=1, max_length=4096)
    baud: int = Field(default=9600, gt=0, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    unit: int = Field(default=1, ge=1, le=247)
    """The module's Modbus address on the bus."""
    table: Literal["discrete_inputs", "coils"] = "discrete_inputs"
    address: int = Field(default=0, ge=0, le=65535)
    """Address of channel 0 in `table`."""
    wire_break_table: Literal["discrete_inputs", "coils"] | None = None
    wire_break_address: int | None = Field(default=None, ge=0, le=65535)
    """Where a module with line supervision (end-of-line resistors) reports a cut loop, one bit per
    channel from this address; leave unset for modules that do not report it."""
    timeout_s: float = Field(default=0.3, gt=0.0, le=10.0)
    """How long one request waits for the module's answer."""

    @model_validator(mode="after")
    def _wire_break_both(self) -> ModbusInputsConfig:
        if (self.wire_break_table is None) != (self.wire_break_address is None):
            raise ValueError("wire_break_table and wire_break_address go together")
        return self


class GpioInputsConfig(_ModuleBase):
    """Inputs on a Raspberry Pi (or any Linux gpiochip) read through libgpiod."""

    kind: Literal["gpio"] = "gpio"
    chip: str = Field(default="/dev/gpiochip0", min_length=1)
    bias: Literal["pull_up", "pull_down", "disabled"] = "pull_up"
    closed_level: Literal["low", "high"] = "low"
    """The line level when the contact is closed: low for a contact to ground with the pull-up."""


InputModuleConfig = Annotated[ModbusInputsConfig | GpioInputsConfig, Field(discriminator="kind")]
"""One wired-input module; the root config holds a list of these (e.g. `[[inputs]]`)."""
