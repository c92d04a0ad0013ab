"""Wired digital inputs: alarm columns (报警柱), door contacts and tamper loops.

Sources (an RS-485 Modbus RTU I/O module, Raspberry Pi GPIO, a fake for tests) share one small
protocol, `base.DigitalInputSource`; `poller.InputPoller` debounces their levels, applies each
input's contact type and meaning (`interpret`), and yields `alarm` observations that are raised once
and cleared once. Import the modules themselves: this package re-exports nothing, so parsing the
config (`config`) never loads pymodbus or gpiod.
"""
