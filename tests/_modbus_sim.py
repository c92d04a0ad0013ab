"""An RS-485 digital-input module played by pymodbus' own server on one end of a real pty pair."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice


class UnitState:
    """One module on the line: its contacts, wire-break bits, and whether it refuses reads."""

    def __init__(self) -> None:
        self.closed = [False] * 16
        self.broken = [False] * 16
        self.refuse = False
        self.reads = 0


class ModuleSim:
    """RS-485 modules (one per unit address) with discrete inputs 0..15 (contacts) and coils 0..15
    (line-supervision wire-break bits).

    Tests set `closed[ch]` / `broken[ch]` (of the first unit, or `units[n]`); every read answers from
    them. `refuse` makes a module answer with an exception response (illegal data address), like a
    module configured wrongly.
    """

    def __init__(self, port: str, unit: int = 1, baud: int = 115200, *, more_units: tuple[int, ...] = ()) -> None:
        self.units = {u: UnitState() for u in (unit, *more_units)}
        self._first = self.units[unit]
        self._port, self._baud = port, baud
        self._loop = asyncio.new_event_loop()
        self._server: ModbusSerialServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modbus-sim", daemon=True)

    @property
    def closed(self) -> list[bool]:
        """The first unit's contacts."""
        return self._first.closed

    @property
    def broken(self) -> list[bool]:
        """The first unit's wire-break bits."""
        return self._first.broken

    @property
    def refuse(self) -> bool:
        """Whether the first unit refuses reads."""
        return self._first.refuse

    @refuse.setter
    def refuse(self, value: bool) -> None:
        self._first.refuse = value

    @staticmethod
    def _bitmap(bits: list[bool]) -> int:
        return sum(1 << i for i, b in enumerate(bits) if b)

    async def _action(self, state: UnitState, fc: int, start: int, address: int, count: int, regs: list[int],
                      set_values: Any) -> ExcCodes | None:
        # With separate blocks and bit addressing, bits come packed 16 to a register.
        state.reads += 1
        if state.refuse:
            return ExcCodes.ILLEGAL_ADDRESS
        if fc == 2:
            regs[0] = self._bitmap(state.closed)
        elif fc == 1:
            regs[0] = self._bitmap(state.broken)
        return None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            devices = []
            for unit, state in self.units.items():
                bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
                regs = [SimData(0, count=4, values=0, datatype=DataType.REGISTERS)]
                devices.append(SimDevice(unit, simdata=(list(bits), list(bits), list(regs), list(regs)),
                                         action=functools.partial(self._action, state)))
            self._server = ModbusSerialServer(devices, framer=FramerType.RTU, port=self._port, baudrate=self._baud)
            self._ready.set()
            await self._server.serve_forever()

        self._loop.run_until_complete(main())

    def start(self) -> ModuleSim:
        """Start serving; returns once the server owns the port."""
        self._thread.start()
        self._ready.wait(10)
        time.sleep(0.2)  # serve_forever opens the port just after construction
        return self

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        self._thread.join(10)
