"""RS-485 Modbus RTU digital-input modules, read with pymodbus' synchronous client.

One request per poll reads every configured channel of a module (function 2, discrete inputs, or 1,
coils), plus one for the wire-break bits where the module reports them. A module that does not
answer within `timeout_s` raises DriverError; the poller backs off and counts, and raises
`io_offline` if it lasts.

Several modules usually share one bus (one port, each with its own `unit` address). They then share
one `ModbusBus`: one client, one lock, so their pollers take turns on the line instead of opening the
port twice and garbling each other's frames. A dead module holds the bus for its timeout, which
delays the others' next poll by that much.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

from drivers.inputs.base import InputScan
from drivers.inputs.config import ModbusInputsConfig
from edge.errors import ConfigError, DriverError


class ModbusBus:
    """One serial port shared by the modules on it (thread-safe; reference-counted)."""

    _buses: ClassVar[dict[str, ModbusBus]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, cfg: ModbusInputsConfig, client: Any | None = None) -> None:
        self.port = cfg.port
        self.line = (cfg.baud, cfg.parity, cfg.stopbits)
        if client is None:
            from pymodbus.client import ModbusSerialClient
            from pymodbus.framer import FramerType

            # retries=0: the poller owns retrying, with backoff and the offline alarm; pymodbus'
            # own retries would only hide a dead module for 3 x timeout.
            client = ModbusSerialClient(cfg.port, framer=FramerType.RTU, baudrate=cfg.baud, parity=cfg.parity,
                                        stopbits=cfg.stopbits, bytesize=8, timeout=cfg.timeout_s, retries=0)
        self.client = client
        self.lock = threading.Lock()
        self.connected = False
        self.users = 0

    @classmethod
    def shared(cls, cfg: ModbusInputsConfig) -> ModbusBus:
        """The bus for `cfg.port`, created on first use; every module on it must use the same line settings."""
        with cls._registry_lock:
            bus = cls._buses.get(cfg.port)
            if bus is None:
                bus = cls._buses[cfg.port] = cls(cfg)
            elif bus.line != (cfg.baud, cfg.parity, cfg.stopbits):
                raise ConfigError(f"input module {cfg.id}: {cfg.port} is already used at baud/parity/stopbits "
                                  f"{bus.line}; every module on one bus needs the same line settings")
            bus.users += 1
            return bus

    def connect(self, module_id: str) -> None:
        """Open the port if it is not open (call with `lock` held)."""
        if self.connected:
            return
        try:
            ok = self.client.connect()
        except Exception as exc:  # pymodbus and pyserial raise a variety here
            raise DriverError(f"modbus module {module_id}: cannot open {self.port}: {exc}") from exc
        if not ok:
            raise DriverError(f"modbus module {module_id}: cannot open {self.port}")
        self.connected = True

    def reset(self) -> None:
        """Close the port so the next request reopens it (call with `lock` held)."""
        if self.connected:
            self.connected = False
            self.client.close()

    def release(self) -> None:
        """One module is done with the bus; the last one closes the port."""
        with self._registry_lock:
            self.users -= 1
            last = self.users <= 0
            if last and self._buses.get(self.port) is self:
                del self._buses[self.port]
        if last:
            with self.lock:
                self.reset()


class ModbusRtuSource:
    """A `DigitalInputSource` on one Modbus RTU module (its `unit` on its bus)."""

    def __init__(self, cfg: ModbusInputsConfig, bus: ModbusBus | None = None) -> None:
        self._cfg = cfg
        self._bus = bus if bus is not None else ModbusBus.shared(cfg)
        self._released = False

    def _bits(self, table: str, address: int, count: int) -> list[bool]:
        from pymodbus.exceptions import ModbusException

        client = self._bus.client
        read = client.read_discrete_inputs if table == "discrete_inputs" else client.read_coils
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
        lo, hi = min(channels), max(channels)
        with self._bus.lock:
            self._bus.connect(self._cfg.id)
            try:
                bits = self._bits(self._cfg.table, self._cfg.address + lo, hi - lo + 1)
                broken: dict[int, bool] = {}
                if self._cfg.wire_break_table is not None and self._cfg.wire_break_address is not None:
                    wb = self._bits(self._cfg.wire_break_table, self._cfg.wire_break_address + lo, hi - lo + 1)
                    broken = {ch: wb[ch - lo] for ch in channels}
            except DriverError:
                self._bus.reset()  # a fresh connection next time: the line may hold half a frame
                raise
        return InputScan(time.time(), {ch: bits[ch - lo] for ch in channels}, broken)

    def close(self) -> None:
        """Let go of the bus (the port closes when its last module lets go)."""
        if not self._released:
            self._released = True
            self._bus.release()
