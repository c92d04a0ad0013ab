"""Real pyserial on pseudo-terminals: bytes on the master side become Readings, Observations and
pseudonymous Events; unplug/replug is a pty that goes away and a new one behind the same path."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers.serial.config import SerialSensorConfig
from drivers.serial.rdm6300 import encode as rdm_frame
from drivers.serial.transport import ReadingQueue, SerialSensor
from edge.configbase import BackoffConfig
from edge.events import to_wire, validate
from edge.pipeline.config import DeviceConfig
from edge.pipeline.devices import DeviceObserver
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import EventKind, IdKind, Observation, Origin, Reading

FAST_BACKOFF = BackoffConfig(initial_s=0.05, max_s=0.2, factor=2.0)


class Pty:
    """A pseudo-terminal: the test writes on the master, the sensor opens the slave path."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):  # already closed by the test (unplug)
                os.close(fd)


@pytest.fixture
def ptys() -> Iterator[Callable[[], Pty]]:
    made: list[Pty] = []

    def make() -> Pty:
        made.append(Pty())
        return made[-1]

    yield make
    for pty in made:
        pty.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def config(port: str, fmt: str, sensor_id: str = "door1", **kw: object) -> SerialSensorConfig:
    return SerialSensorConfig.model_validate(
        {"id": sensor_id, "port": port, "format": fmt, "backoff": FAST_BACKOFF, "read_timeout_s": 0.05, **kw}
    )


def test_bytes_on_the_master_become_readings(ptys: Callable[[], Pty]) -> None:
    pty = ptys()
    readings = ReadingQueue(16)
    clock = iter(range(1000, 2000))
    sensor = SerialSensor(config(pty.path, "rdm6300", parity="none"), readings, clock=lambda: float(next(clock)))
    with sensor:
        assert sensor.wait_connected(5)
        # Split mid-frame, with noise and a corrupt frame in between.
        frame = rdm_frame(bytes.fromhex("0A1B2C3D4E"))
        pty.write(b"\x00\xff" + frame[:5])
        time.sleep(0.05)
        pty.write(frame[5:] + b"\x020A1B2C3D4E00\x03" + rdm_frame(bytes.fromhex("62E3086CED")))
        first, second = readings.get(5), readings.get(5)
        assert first is not None and second is not None
        wait_for(lambda: sensor.status().rejected_total == 1)
        status = sensor.status()
    assert [r.identifier.value for r in (first, second)] == ["0A1B2C3D4E", "62E3086CED"]
    assert all(
        r.source_id == "door1" and r.format == "rdm6300" and r.identifier.kind is IdKind.CARD for r in (first, second)
    )
    assert first.ts >= 1000 and second.ts > first.ts - 1  # stamped by the injected clock
    assert status.connected and status.connects == 1 and status.last_error is None
    assert status.frames_ok == 2 and dict(status.frames_rejected) == {"checksum": 1}
    assert status.bytes_read == 2 + 14 + 14 + 14
    assert status.discarded_bytes == 2
    assert not sensor.status().connected  # stopped


def test_unplug_and_replug_reconnects_with_backoff(ptys: Callable[[], Pty], tmp_path: Path) -> None:
    link = tmp_path / "ttyREADER"  # a stable name, like /dev/serial/by-id/...
    first = ptys()
    link.symlink_to(first.path)
    readings = ReadingQueue(16)
    sensor = SerialSensor(config(str(link), "mifare"), readings)
    with sensor:
        assert sensor.wait_connected(5)
        first.write(b"04A32B1C\r\n")
        got = readings.get(5)
        assert got is not None and got.identifier.value == "04A32B1C"
        # Half a line, then the adapter is pulled out.
        first.write(b"04A3")
        wait_for(lambda: sensor.status().bytes_read == 14)
        first.close()
        link.unlink()
        wait_for(lambda: not sensor.status().connected)
        status = sensor.status()
        assert status.last_error is not None
        time.sleep(0.3)  # a few failed opens while the device is absent
        assert "open failed" in (sensor.status().last_error or "")
        # Plugged back in: a new tty behind the same name.
        second = ptys()
        link.symlink_to(second.path)
        assert sensor.wait_connected(5, connects=2)
        second.write(b"2B1C\r\n")  # the tail of the cut line must not complete it
        second.write(b"04:11:22:33:44:55:66\r\n")
        got = readings.get(5)
        assert got is not None and got.identifier.value == "04112233445566"
        wait_for(lambda: sensor.status().rejected_total == 2)
        status = sensor.status()
    assert status.connects == 2
    assert status.frames_ok == 2
    assert dict(status.frames_rejected) == {"truncated": 1, "length": 1}
    assert readings.get(0.1) is None


def test_missing_port_then_device_appears(ptys: Callable[[], Pty], tmp_path: Path) -> None:
    link = tmp_path / "ttyLATE"
    readings = ReadingQueue(4)
    with SerialSensor(config(str(link), "mifare"), readings) as sensor:
        wait_for(lambda: sensor.status().last_error is not None)
        assert not sensor.status().connected
        pty = ptys()
        link.symlink_to(pty.path)
        assert sensor.wait_connected(5)
        pty.write(b"DEADBEEF\n")
        got = readings.get(5)
    assert got is not None and got.identifier.value == "DEADBEEF"


def test_port_is_opened_exclusively(ptys: Callable[[], Pty]) -> None:
    pty = ptys()
    with SerialSensor(config(pty.path, "mifare", "a"), ReadingQueue(4)) as first:
        assert first.wait_connected(5)
        with SerialSensor(config(pty.path, "mifare", "b"), ReadingQueue(4)) as second:
            wait_for(lambda: second.status().last_error is not None)
            assert not second.status().connected
            assert first.status().connected


def test_queue_is_bounded_and_counts_drops(ptys: Callable[[], Pty]) -> None:
    pty = ptys()
    readings = ReadingQueue(3)
    with SerialSensor(config(pty.path, "mifare"), readings) as sensor:
        assert sensor.wait_connected(5)
        pty.write(b"".join(f"{i + 1:08X}\n".encode() for i in range(10)))
        wait_for(lambda: sensor.status().frames_ok == 10)
    assert [r.identifier.value for r in readings.drain()] == ["00000001", "00000002", "00000003"]
    assert readings.dropped == 7


def test_failing_sink_does_not_stop_the_port(ptys: Callable[[], Pty], caplog: pytest.LogCaptureFixture) -> None:
    pty = ptys()
    got: list[Reading] = []

    def sink(reading: Reading) -> None:
        if not got:
            got.append(reading)
            raise RuntimeError(f"consumer bug with {reading.identifier.value}")
        got.append(reading)

    with SerialSensor(config(pty.path, "mifare"), sink) as sensor:
        assert sensor.wait_connected(5)
        pty.write(b"11223344\n55667788\n")
        wait_for(lambda: len(got) == 2)
        assert sensor.status().sink_errors == 1
    assert "11223344" not in caplog.text


def test_card_reader_and_sniffer_to_pseudonymous_events(
    ptys: Callable[[], Pty], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """End to end: two sensors on ptys → queue → observer → privacy boundary → valid events.

    Also the privacy check: with DEBUG logging through connects, rejects, a disconnect and a
    reconnect, no raw card number or MAC appears in the logs, in any spelling.
    """
    caplog.set_level(logging.DEBUG)
    door_link = tmp_path / "ttyDOOR"
    door, sniff = ptys(), ptys()
    door_link.symlink_to(door.path)
    now = [1_700_000_000.0]
    queue = ReadingQueue(256)
    card_cfg = config(str(door_link), "rdm6300", "door1", side="in")
    sniff_cfg = config(sniff.path, "sniffer-json", "sniff1")
    observer = DeviceObserver(DeviceConfig(window_s=30, aggregate_period_s=60), sides={"door1": "in"})
    key = os.urandom(32)
    boundary = PrivacyBoundary(Pseudonymiser(key), Origin("d1", "c1", "gw1"))
    card_id, public, randomised = "62E3086CED", "a4:5e:60:12:34:56", "da:a1:19:00:00:01"
    observations: list[Observation] = []

    def consume(until: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 5
        while not until():
            assert time.monotonic() < deadline, "readings did not arrive"
            reading = queue.get(0.05)
            if reading is not None:
                observations.extend(observer.observe(reading))

    clock = lambda: now[0]  # noqa: E731
    with (
        SerialSensor(card_cfg, queue, clock=clock) as card_sensor,
        SerialSensor(sniff_cfg, queue, clock=clock) as sniffer,
    ):
        assert card_sensor.wait_connected(5) and sniffer.wait_connected(5)
        door.write(b"\x02" + card_id.encode() + b"00\x03")  # bad checksum: rejected
        door.write(rdm_frame(bytes.fromhex(card_id)))
        for i, rssi in enumerate([-70, -60, -50]):
            sniff.write(json.dumps({"ts": i, "mac": public.upper(), "rssi": rssi, "ch": 6}).encode() + b"\r\n")
            sniff.write(json.dumps({"ts": i, "mac": randomised, "rssi": rssi, "ch": 1}).encode() + b"\r\n")
        sniff.write(b'{"mac": "A4:5E:60:12:34", "rssi": -5}\r\n')  # truncated MAC: rejected
        consume(lambda: sniffer.status().frames_ok == 6 and card_sensor.status().frames_ok == 1)
        consume(lambda: len(of(observations, EventKind.CARD_SWIPE)) == 1)
        # Unplug the card reader and plug it back while the sniffer carries on.
        door.close()
        door_link.unlink()
        wait_for(lambda: not card_sensor.status().connected)
        door2 = ptys()
        door_link.symlink_to(door2.path)
        assert card_sensor.wait_connected(5, connects=2)
        now[0] += 10
        door2.write(rdm_frame(bytes.fromhex(card_id)))
        consume(lambda: len(of(observations, EventKind.CARD_SWIPE)) == 2)
        assert sniffer.status().connects == 1
    observations.extend(observer.tick(now[0] + 60))

    events = [boundary.to_event(o) for o in observations]
    kinds = sorted(e.kind.value for e in events)
    assert kinds == ["card_swipe", "card_swipe", "device_aggregate", "device_seen"]
    pseudonymiser = Pseudonymiser(key)
    for event, obs in zip(events, observations, strict=True):
        wire = to_wire(event, seq=1, boot=0)
        validate(wire)
        text = json.dumps(wire)
        assert_no_raw(text, [card_id, public, randomised])
        if obs.subject is not None:
            assert event.subject is not None
            assert (event.subject.pseudonym, event.subject.key_id) == pseudonymiser.pseudonym_at(
                obs.subject.kind, obs.subject.value, obs.ts
            )
    [seen] = of(observations, EventKind.DEVICE_SEEN)
    assert seen.subject is not None and seen.subject.value == public
    assert (seen.attrs["sightings"], seen.attrs["rssi_min"], seen.attrs["rssi_max"]) == (3, -70, -50)
    [agg] = of(observations, EventKind.DEVICE_AGGREGATE)
    assert (agg.attrs["randomised"], agg.attrs["randomised_sightings"], agg.attrs["distinct"]) == (1, 3, 2)
    swipes = of(observations, EventKind.CARD_SWIPE)
    assert all(s.attrs["direction"] == "in" for s in swipes)
    # The same card gives the same pseudonym (same epoch, 10 s apart) across the replug.
    first_swipe, second_swipe = (e for e in events if e.kind is EventKind.CARD_SWIPE)
    assert first_swipe.subject == second_swipe.subject

    assert "reconnecting" in caplog.text and "connected to" in caplog.text
    assert_no_raw(caplog.text, [card_id, public, randomised])


def of(observations: list[Observation], kind: EventKind) -> list[Observation]:
    return [o for o in observations if o.kind is kind]


def assert_no_raw(text: str, raw_ids: list[str]) -> None:
    """No identifier in any spelling: case-insensitive, with or without separators."""
    flat = re.sub(r"[^0-9a-z]", "", text.lower())
    for raw in raw_ids:
        digits = re.sub(r"[^0-9a-z]", "", raw.lower())
        assert digits not in flat, "a raw identifier leaked"
        assert raw.lower() not in text.lower()


def test_sensor_threads_stop_promptly(ptys: Callable[[], Pty]) -> None:
    pty = ptys()
    sensor = SerialSensor(config(pty.path, "mifare", read_timeout_s=5), ReadingQueue(4))
    sensor.start()
    assert sensor.wait_connected(5)
    started = time.monotonic()
    sensor.stop()
    assert time.monotonic() - started < 2  # cancel_read wakes the blocked read
    assert not any(t.name == "serial-door1" for t in threading.enumerate())
