"""The Modbus RTU input source and poller against pymodbus' own server over a real pty pair."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from drivers.inputs.config import ModbusInputsConfig
from drivers.inputs.modbus import ModbusRtuSource
from drivers.inputs.poller import InputPoller
from edge.errors import DriverError
from edge.types import Observation
from tests._modbus_sim import ModuleSim
from tests._ptypair import PtyPair


@pytest.fixture
def bus() -> Iterator[tuple[PtyPair, ModuleSim]]:
    pair = PtyPair()
    sim = ModuleSim(pair.b).start()
    yield pair, sim
    sim.stop()
    pair.close()


def _cfg(port: str, **kw: Any) -> ModbusInputsConfig:
    base: dict[str, Any] = {
        "id": "io1", "port": port, "baud": 115200, "unit": 1, "timeout_s": 0.3, "poll_interval_s": 0.02,
        "offline_after_s": 0.5, "backoff": {"initial_s": 0.05, "max_s": 0.1},
        "wire_break_table": "coils", "wire_break_address": 0,
        "inputs": [{"id": "sos1", "channel": 0, "meaning": "alarm_column"},
                   {"id": "door1", "channel": 3, "meaning": "door_contact", "contact": "nc"}]}
    base.update(kw)
    return ModbusInputsConfig.model_validate(base)


class _Collector:
    def __init__(self) -> None:
        self.got: list[Observation] = []
        self._cv = threading.Condition()

    def __call__(self, obs: Any) -> None:
        with self._cv:
            self.got.extend(obs)
            self._cv.notify_all()

    def wait(self, pred: Callable[[list[tuple[str, str, str]]], bool], timeout: float = 15) -> None:
        with self._cv:
            ok = self._cv.wait_for(lambda: pred(self.codes()), timeout)
        assert ok, f"not seen; got {self.codes()}"

    def codes(self) -> list[tuple[str, str, str]]:
        return [(str(o.attrs["code"]), str(o.attrs.get("input", "")), str(o.attrs["state"])) for o in self.got]


def test_scan_reads_contacts_and_wire_break_bits(bus: tuple[PtyPair, ModuleSim]) -> None:
    pair, sim = bus
    sim.closed[0], sim.closed[3], sim.broken[3] = True, True, True
    src = ModbusRtuSource(_cfg(pair.a))
    try:
        scan = src.scan((0, 3))
    finally:
        src.close()
    assert scan.closed == {0: True, 3: True}
    assert scan.wire_break == {0: False, 3: True}


def test_exception_response_is_a_driver_error(bus: tuple[PtyPair, ModuleSim]) -> None:
    pair, sim = bus
    sim.refuse = True
    src = ModbusRtuSource(_cfg(pair.a))
    with pytest.raises(DriverError, match="refused"):
        src.scan((0, 3))
    src.close()


def test_poller_end_to_end_press_door_cut_cable_and_recovery(bus: tuple[PtyPair, ModuleSim]) -> None:
    pair, sim = bus
    sim.closed[3] = True  # door shut: its NC loop is closed
    sink = _Collector()
    stop = threading.Event()
    poller = InputPoller(_cfg(pair.a), sink, stop)
    poller.start()
    try:
        time.sleep(0.3)
        assert sink.codes() == []  # a quiet bus raises nothing
        sim.closed[0] = True  # SOS pressed
        sink.wait(lambda c: ("alarm_column", "sos1", "raised") in c)
        sim.closed[0] = False
        sink.wait(lambda c: ("alarm_column", "sos1", "cleared") in c)
        sim.closed[3] = False  # door forced open
        sink.wait(lambda c: ("door_contact", "door1", "raised") in c)
        sim.broken[3] = True  # and its loop cut
        sink.wait(lambda c: ("wire_break", "door1", "raised") in c)
        pair.cut = True  # the RS-485 cable pulled: requests time out
        sink.wait(lambda c: ("io_offline", "", "raised") in c)
        pair.cut = False
        sink.wait(lambda c: ("io_offline", "", "cleared") in c)
    finally:
        stop.set()
        poller.join(5)
    assert poller.failures >= 1
    raised = [c for c in sink.codes() if c[2] == "raised"]
    assert len(raised) == len(set(raised))  # every condition raised once
    assert poller.status()["inputs"] == {"sos1": {"active": False, "wire_break": False},
                                         "door1": {"active": True, "wire_break": True}}


def test_two_modules_on_one_bus_share_the_port() -> None:
    pair = PtyPair()
    sim = ModuleSim(pair.b, unit=1, more_units=(2,)).start()
    sink = _Collector()
    stop = threading.Event()
    a = InputPoller(_cfg(pair.a, id="io-a", unit=1, wire_break_table=None, wire_break_address=None), sink, stop)
    b = InputPoller(_cfg(pair.a, id="io-b", unit=2, wire_break_table=None, wire_break_address=None), sink, stop)
    sim.units[1].closed[3] = sim.units[2].closed[3] = True  # both doors shut
    a.start()
    b.start()
    try:
        sim.units[2].closed[0] = True  # the button on the second module
        sink.wait(lambda c: ("alarm_column", "sos1", "raised") in c)
        sim.units[1].closed[3] = False  # the door on the first
        sink.wait(lambda c: ("door_contact", "door1", "raised") in c)
    finally:
        stop.set()
        a.join(5)
        b.join(5)
        sim.stop()
        pair.close()
    by_module = {(o.source_id, str(o.attrs["code"])) for o in sink.got}
    assert by_module == {("io-b", "alarm_column"), ("io-a", "door_contact")}
    # Polled in turn on one port: no garbled frames, so neither module ever failed.
    assert a.failures == 0 and b.failures == 0
    assert sim.units[1].reads > 5 and sim.units[2].reads > 5


def test_modules_on_one_bus_must_agree_on_the_line() -> None:
    from edge.errors import ConfigError

    src = ModbusRtuSource(_cfg("/dev/ttyFAKE0", id="a"))
    try:
        with pytest.raises(ConfigError, match="same line settings"):
            ModbusRtuSource(_cfg("/dev/ttyFAKE0", id="b", baud=9600))
    finally:
        src.close()
