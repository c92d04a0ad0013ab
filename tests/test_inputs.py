"""Wired inputs: debounce, contact types, meanings, wire breaks, offline; config; the GPIO source."""

from __future__ import annotations

import threading
import types
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from drivers.inputs.base import InputScan
from drivers.inputs.config import GpioInputsConfig, InputModuleConfig, ModbusInputsConfig
from drivers.inputs.fake import FakeInputSource
from drivers.inputs.gpio import GpioSource
from drivers.inputs.interpret import InputInterpreter
from drivers.inputs.poller import InputPoller
from edge.errors import DriverError
from edge.events import to_wire, validate
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import EventKind, Observation, Origin


def _module(**kw: Any) -> ModbusInputsConfig:
    base: dict[str, Any] = {"id": "io1", "port": "/dev/null", "inputs": [
        {"id": "sos1", "channel": 0, "meaning": "alarm_column", "debounce_s": 0.05},
        {"id": "door1", "channel": 1, "meaning": "door_contact", "contact": "nc", "debounce_s": 0.05},
        {"id": "lid", "channel": 2, "meaning": "tamper", "contact": "nc", "debounce_s": 0.0}]}
    base.update(kw)
    return ModbusInputsConfig.model_validate(base)


def _scan(ts: float, closed: dict[int, bool], broken: dict[int, bool] | None = None) -> InputScan:
    return InputScan(ts, closed, broken or {})


IDLE = {0: False, 1: True, 2: True}  # button released, door shut (NC loop closed), lid on


def _wire(obs: Observation) -> dict[str, Any]:
    event = PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin("d1", "c1", "g1")).to_event(obs)
    wire = to_wire(event, 1, 0)
    validate(wire)  # the extended alarm schema accepts every alarm the interpreter makes
    return wire


def test_press_is_raised_once_and_cleared_once_with_its_duration() -> None:
    it = InputInterpreter(_module())
    assert it.feed(_scan(0.0, IDLE)) == []
    out: list[Observation] = []
    for i in range(1, 40):  # pressed from t=1.0 to t=2.0, sampled every 50 ms
        t = 0.95 + i * 0.05
        out += it.feed(_scan(t, {**IDLE, 0: 1.0 <= t < 2.0}))
    assert [o.attrs["state"] for o in out] == ["raised", "cleared"]
    raised, cleared = out
    assert raised.kind is EventKind.ALARM and raised.source_id == "io1"
    assert raised.attrs["code"] == "alarm_column" and raised.attrs["input"] == "sos1"
    assert raised.attrs["severity"] == "critical"
    assert raised.ts == pytest.approx(1.0)  # the press time, not the debounce's confirmation
    assert cleared.attrs["duration_s"] == pytest.approx(1.0, abs=0.06)
    for o in out:
        wire = _wire(o)
        assert "subject" not in wire  # nothing identifying in a wired-input alarm


def test_bounce_shorter_than_the_debounce_is_ignored() -> None:
    it = InputInterpreter(_module())
    it.feed(_scan(0.0, IDLE))
    out = it.feed(_scan(0.10, {**IDLE, 0: True})) + it.feed(_scan(0.12, {**IDLE, 0: False}))
    out += it.feed(_scan(0.14, {**IDLE, 0: True})) + it.feed(_scan(0.16, IDLE)) + it.feed(_scan(0.5, IDLE))
    assert out == []
    assert it.states()["sos1"]["active"] is False


def test_normally_closed_door_alarms_when_the_loop_opens() -> None:
    it = InputInterpreter(_module())
    it.feed(_scan(0.0, IDLE))
    out = it.feed(_scan(1.0, {**IDLE, 1: False})) + it.feed(_scan(1.1, {**IDLE, 1: False}))
    assert [(o.attrs["code"], o.attrs["state"], o.attrs["severity"]) for o in out] == [
        ("door_contact", "raised", "warning")]
    out = it.feed(_scan(5.0, IDLE)) + it.feed(_scan(5.1, IDLE))
    assert [(o.attrs["code"], o.attrs["state"]) for o in out] == [("door_contact", "cleared")]
    assert out[0].attrs["duration_s"] == pytest.approx(4.0)


def test_a_cut_wire_is_its_own_alarm_and_holds_the_input_state() -> None:
    it = InputInterpreter(_module())
    it.feed(_scan(0.0, IDLE, {2: False}))
    out = it.feed(_scan(1.0, {**IDLE, 2: False}, {2: True}))
    assert [(o.attrs["code"], o.attrs["input"], o.attrs["state"]) for o in out] == [("wire_break", "lid", "raised")]
    _wire(out[0])
    # While cut, the loop's level means nothing: no tamper raise on top of the wire-break alarm.
    assert it.feed(_scan(2.0, {**IDLE, 2: False}, {2: True})) == []
    out = it.feed(_scan(3.0, IDLE, {2: False}))
    assert [(o.attrs["code"], o.attrs["state"]) for o in out] == [("wire_break", "cleared")]
    assert it.states()["lid"] == {"active": False, "wire_break": False}


def test_module_offline_after_the_configured_time_and_back() -> None:
    it = InputInterpreter(_module(offline_after_s=2.0))
    it.feed(_scan(0.0, IDLE))
    assert it.failed(1.0) == []
    out = it.failed(2.5)
    assert [(o.attrs["code"], o.attrs["state"]) for o in out] == [("io_offline", "raised")]
    assert it.failed(3.0) == []  # raised once, however long it lasts
    out = it.feed(_scan(10.0, IDLE))
    assert [(o.attrs["code"], o.attrs["state"]) for o in out] == [("io_offline", "cleared")]
    assert out[0].attrs["duration_s"] == pytest.approx(10.0)
    _wire(out[0])


def test_config_is_strict() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(InputModuleConfig)
    assert isinstance(adapter.validate_python({"kind": "gpio", "id": "pi", "inputs": [
        {"id": "b", "channel": 17, "meaning": "alarm_column"}]}), GpioInputsConfig)
    with pytest.raises(ValidationError, match="same channel"):
        _module(inputs=[{"id": "a", "channel": 0, "meaning": "tamper"}, {"id": "b", "channel": 0, "meaning": "tamper"}])
    with pytest.raises(ValidationError, match="go together"):
        _module(wire_break_table="coils")
    with pytest.raises(ValidationError):
        _module(inputs=[{"id": "a", "channel": 0, "meaning": "smoke"}])
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "modbus_tcp", "id": "x", "inputs": []})


def test_poller_with_the_fake_source_commits_a_press_and_survives_failures() -> None:
    cfg = _module(poll_interval_s=0.01, offline_after_s=0.1, backoff={"initial_s": 0.01, "max_s": 0.02})
    fake = FakeInputSource()
    for ch, closed in IDLE.items():
        fake.set(ch, closed)
    got: list[Observation] = []
    seen = threading.Condition()

    def sink(obs: Any) -> None:
        with seen:
            got.extend(obs)
            seen.notify_all()

    stop = threading.Event()
    poller = InputPoller(cfg, sink, stop, source=fake)
    poller.start()
    try:
        fake.set(0, True)
        with seen:
            assert seen.wait_for(lambda: any(o.attrs.get("code") == "alarm_column" for o in got), 10)
        fake.fail = True
        with seen:
            assert seen.wait_for(lambda: any(o.attrs.get("code") == "io_offline" for o in got), 10)
        fake.fail = False
        with seen:
            assert seen.wait_for(lambda: any(o.attrs.get("state") == "cleared" and o.attrs["code"] == "io_offline"
                                             for o in got), 10)
    finally:
        stop.set()
        poller.join(5)
    assert poller.failures >= 1 and poller.status()["offline"] is False
    assert [o.attrs["state"] for o in got if o.attrs["code"] == "alarm_column"] == ["raised"]


class _FakeRequest:
    def __init__(self, levels: dict[int, int]) -> None:
        self.levels = levels
        self.released = False

    def get_values(self, lines: list[int]) -> list[Any]:
        return [types.SimpleNamespace(value=self.levels[ch]) for ch in lines]

    def release(self) -> None:
        self.released = True


def _fake_gpiod(levels: dict[int, int], requests: list[Any]) -> Any:
    """The slice of the gpiod >= 2 API the source uses (request_lines, LineSettings, line enums)."""
    enum = types.SimpleNamespace
    line = types.SimpleNamespace(Bias=enum(PULL_UP="pu", PULL_DOWN="pd", DISABLED="off"),
                                 Direction=enum(INPUT="in"))

    def request_lines(chip: str, consumer: str, config: dict[Any, Any]) -> _FakeRequest:
        (offsets, settings), = config.items()
        requests.append((chip, consumer, offsets, settings))
        return _FakeRequest(levels)

    return types.SimpleNamespace(line=line, LineSettings=lambda **kw: kw, request_lines=request_lines)


def test_gpio_source_maps_levels_through_closed_level() -> None:
    cfg = GpioInputsConfig(id="pi", inputs=[{"id": "sos", "channel": 17, "meaning": "alarm_column"},  # type: ignore[list-item]
                                            {"id": "door", "channel": 27, "meaning": "door_contact", "contact": "nc"}])
    requests: list[Any] = []
    src = GpioSource(cfg, gpiod_module=_fake_gpiod({17: 0, 27: 1}, requests))
    scan = src.scan((17, 27))
    # Pull-up, contact to ground: a low line is a closed contact.
    assert scan.closed == {17: True, 27: False}
    assert requests == [("/dev/gpiochip0", "edgegw-pi", (17, 27), {"direction": "in", "bias": "pu"})]
    it = InputInterpreter(cfg)
    out = it.feed(scan) + it.feed(InputScan(scan.ts + 0.1, scan.closed, {}))  # held past the debounce
    assert {o.attrs["code"] for o in out} == {"alarm_column", "door_contact"}
    src.close()


def test_gpio_source_without_gpiod_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gpiod", None)  # what a gateway without the package sees
    src = GpioSource(GpioInputsConfig(id="pi", inputs=[{"id": "b", "channel": 4, "meaning": "tamper"}]))  # type: ignore[list-item]
    with pytest.raises(DriverError, match="gpiod"):
        src.scan((4,))


def test_gpio_source_drives_the_real_gpiod_bindings_to_the_kernel() -> None:
    """The real libgpiod bindings (no fake): our settings and request are accepted by the library and
    reach the kernel, which answers for a chip this machine does not have; a wrong call would raise
    TypeError or AttributeError instead of the DriverError that names the chip."""
    cfg = GpioInputsConfig(id="pi", chip="/dev/null", inputs=[{"id": "b", "channel": 4, "meaning": "tamper"}])  # type: ignore[list-item]
    with pytest.raises(DriverError, match="cannot request lines on /dev/null"):
        GpioSource(cfg).scan((4,))
    missing = GpioInputsConfig(id="pi", chip="/dev/gpiochip-none", inputs=[{"id": "b", "channel": 4,  # type: ignore[list-item]
                                                                           "meaning": "tamper"}])
    with pytest.raises(DriverError, match="No such file"):
        GpioSource(missing).scan((4,))
