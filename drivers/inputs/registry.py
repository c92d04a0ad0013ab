"""Explicit table from a module's `kind` to the source that reads it (no scanning for plugins)."""

from __future__ import annotations

from collections.abc import Callable

from drivers.inputs.base import DigitalInputSource
from drivers.inputs.config import GpioInputsConfig, ModbusInputsConfig


def _modbus(cfg: ModbusInputsConfig | GpioInputsConfig) -> DigitalInputSource:
    from drivers.inputs.modbus import ModbusRtuSource

    assert isinstance(cfg, ModbusInputsConfig)
    return ModbusRtuSource(cfg)


def _gpio(cfg: ModbusInputsConfig | GpioInputsConfig) -> DigitalInputSource:
    from drivers.inputs.gpio import GpioSource

    assert isinstance(cfg, GpioInputsConfig)
    return GpioSource(cfg)


SOURCES: dict[str, Callable[[ModbusInputsConfig | GpioInputsConfig], DigitalInputSource]] = {
    "modbus_rtu": _modbus,
    "gpio": _gpio,
}


def open_source(cfg: ModbusInputsConfig | GpioInputsConfig) -> DigitalInputSource:
    """The source for one configured module (opened lazily, on its first scan)."""
    return SOURCES[cfg.kind](cfg)
