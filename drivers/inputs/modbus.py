"""RS-485 Modbus RTU digital-input modules, read with pymodbus' synchronous client.

One request per poll reads every configured channel (function 2, discrete inputs, or 1, coils), plus
one for the wire-break bits where the module reports them. A module that does not answer within
`timeout_s` raises DriverError; the poller backs off and counts, and raises `io_offline` if it lasts.
"""

from __future__ import annotations

import time
from typing import Any

from drivers.inputs.base import InputScan
from drivers.inputs.config import ModbusInputsConfig
from edge.errors import DriverError


class ModbusRtuSource:
    """A `DigitalInputSource` on one Modbus RTU module (one per module, even on a shared bus)."""

    def __init__(self, cfg: ModbusInputsConfig, client: Any | None = None) -> None:
        self._cfg = cfg
        if client is None:
            from pymodbus.client import ModbusSerialClient
            from pymodbus.framer import FramerType

            # retries=0: the poller owns retrying, with backoff and the offline alarm; pymodbus'
            # own retries would only hide a dead module for 3 x timeout.
            client = ModbusSerialClient(cfg.port, framer=FramerType.RTU, baudrate=cfg.baud, parity=cfg.parity,
                                        stopbits=cfg.stopbits, bytesize=8, timeout=cfg.timeout_s, retries=0)
        self._client = client
        self._connected = False

    def _connect(self) -> None:
        if self._connected:
            return
        try:
            ok = self._client.connect()
        except Exception as exc:  # pymodbus and pyserial raise a variety here
            raise DriverError(f"modbus module {self._cfg.id}: cannot open {self._cfg.port}: {exc}") from exc
        if not ok:
            raise DriverError(f"modbus module {self._cfg.id}: cannot open {self._cfg.port}")
        self._connected = True

    def _bits(self, table: str, address: int, count: int) -> list[bool]:
        from pymodbus.exceptions import ModbusException

        read = self._client.read_discrete_inputs if table == "discrete_inputs" else self._client.read_coils
        try:
            rr = read(address, count=count, device_id=self._cfg.unit)
        except ModbusException as exc:
            raise DriverError(f"modbus module {self._cfg.id} (unit {self._cfg.unit}): {exc}") from exc
        if rr.isError():
            raise DriverError(f"modbus module {self._cfg.id} (unit {self._cfg.unit}) refused the read of "
                              f"{table} {address}+{count}: {rr}")
        bits = [bool(b) for b in rr.bits[:count]]
        if len(bits) < count:
            raise DriverError(f"modbus module {self._cfg.id}: short answer ({len(bits)} of {count} bits)")
        return bits

    def scan(self, channels: tuple[int, ...]) -> InputScan:
        """Read the contacts (and wire-break bits) of `channels`."""
        self._connect()
        lo, hi = min(channels), max(channels)
        try:
            bits = self._bits(self._cfg.table, self._cfg.address + lo, hi - lo + 1)
            broken: dict[int, bool] = {}
            if self._cfg.wire_break_table is not None and self._cfg.wire_break_address is not None:
                wb = self._bits(self._cfg.wire_break_table, self._cfg.wire_break_address + lo, hi - lo + 1)
                broken = {ch: wb[ch - lo] for ch in channels}
        except DriverError:
            self.close()  # a fresh connection next time: the bus may hold a half-received frame
            raise
        return InputScan(time.time(), {ch: bits[ch - lo] for ch in channels}, broken)

    def close(self) -> None:
        """Close the serial port."""
        if self._connected:
            self._connected = False
            self._client.close()
