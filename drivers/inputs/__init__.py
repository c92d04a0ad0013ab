"""Wired digital inputs: alarm columns (报警柱), door contacts and tamper loops.

Sources (an RS-485 Modbus RTU I/O module, Raspberry Pi GPIO, a fake for tests) share one small
protocol, `DigitalInputSource`; the `InputPoller` debounces their levels, applies each input's
contact type and meaning, and yields `alarm` observations that are raised once and cleared once.
"""

from drivers.inputs.base import DigitalInputSource, InputScan
from drivers.inputs.config import GpioInputsConfig, InputModuleConfig, InputPointConfig, ModbusInputsConfig
from drivers.inputs.fake import FakeInputSource
from drivers.inputs.interpret import InputInterpreter
from drivers.inputs.poller import InputPoller
from drivers.inputs.registry import open_source

__all__ = [
    "DigitalInputSource",
    "FakeInputSource",
    "GpioInputsConfig",
    "InputInterpreter",
    "InputModuleConfig",
    "InputPointConfig",
    "InputPoller",
    "InputScan",
    "ModbusInputsConfig",
    "open_source",
]
