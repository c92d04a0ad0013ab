"""The camera supervisor: reconnects with backoff, counts, stops cleanly, reports status."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from drivers.camera.base import DriverStatus
from drivers.camera.config import FakeCameraConfig
from drivers.camera.fake import FakeCamera
from drivers.camera.supervisor import CameraState, CameraSupervisor
from edge.configbase import BackoffConfig
from edge.errors import ConfigError, DriverError
from edge.framequeue import FrameQueue
from edge.types import Frame

FAST = BackoffConfig(initial_s=0.01, max_s=0.05, factor=2.0)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_fails_n_times_then_works_and_status_shows_the_reconnects() -> None:
    supervisor = CameraSupervisor()
    queue = supervisor.add_camera(FakeCameraConfig(id="cam", fail_opens=3, frames=30, backoff=FAST, queue_size=64))
    with supervisor:
        frames = list(queue)
        assert supervisor.wait(5.0)
    status = supervisor.status("cam")
    assert status.reconnects == 3
    assert status.last_error is not None and "open failure 3" in status.last_error
    assert status.state is CameraState.FINISHED
    assert status.frames_read == 30 == len(frames)
    assert [f.index for f in frames] == list(range(30))


def test_a_dropped_stream_reconnects_and_loses_no_frame_index() -> None:
    supervisor = CameraSupervisor()
    queue = supervisor.add_camera(
        FakeCameraConfig(id="cam", fail_after_frames=7, frames=30, backoff=FAST, queue_size=64)
    )
    with supervisor:
        frames = list(queue)
    status = supervisor.status("cam")
    assert status.reconnects == 4  # lost after frames 7, 14, 21 and 28
    assert "stream loss" in (status.last_error or "")
    assert [f.index for f in frames] == list(range(30))


class _TimedFlakyDriver:
    """Fails `fails` opens, recording when each open happened, then delivers `frames` frames."""

    def __init__(self, fails: int, frames: int) -> None:
        self.open_times: list[float] = []
        self.closes = 0
        self._fake = FakeCamera(FakeCameraConfig(id="flaky", frames=frames))
        self._fails = fails

    source_id = "flaky"
    pace_fps = None
    lossless = False

    @property
    def status(self) -> DriverStatus:
        return self._fake.status

    def open(self) -> None:
        self.open_times.append(time.monotonic())
        if len(self.open_times) <= self._fails:
            raise DriverError("device unplugged")
        self._fake.open()

    def read(self) -> Frame | None:
        return self._fake.read()

    def close(self) -> None:
        self.closes += 1
        self._fake.close()


def test_retry_delays_grow_exponentially() -> None:
    driver = _TimedFlakyDriver(fails=4, frames=5)
    supervisor = CameraSupervisor()
    queue = FrameQueue(16)
    supervisor.add(driver, queue, BackoffConfig(initial_s=0.01, max_s=10.0, factor=4.0))
    with supervisor:
        assert supervisor.wait(5.0)
    gaps = [b - a for a, b in zip(driver.open_times, driver.open_times[1:], strict=False)]
    assert len(gaps) == 4
    # Nominal delays 0.01, 0.04, 0.16, 0.64 s, each jittered into [d/2, d].
    for gap, nominal in zip(gaps, [0.01, 0.04, 0.16, 0.64], strict=True):
        assert nominal / 2 * 0.9 <= gap <= nominal + 0.2
    assert gaps[3] > gaps[1] > gaps[0]
    assert supervisor.status("flaky").state is CameraState.FINISHED
    assert len(queue) == 5


def test_backoff_is_capped() -> None:
    driver = _TimedFlakyDriver(fails=6, frames=1)
    supervisor = CameraSupervisor()
    supervisor.add(driver, FrameQueue(4), BackoffConfig(initial_s=0.01, max_s=0.04, factor=4.0))
    with supervisor:
        assert supervisor.wait(5.0)
    gaps = [b - a for a, b in zip(driver.open_times, driver.open_times[1:], strict=False)]
    assert max(gaps) < 0.04 + 0.1


def test_stop_interrupts_a_long_backoff_wait() -> None:
    supervisor = CameraSupervisor()
    queue = supervisor.add_camera(
        FakeCameraConfig(id="cam", fail_opens=1000, backoff=BackoffConfig(initial_s=30.0, max_s=60.0))
    )
    supervisor.start()
    assert wait_for(lambda: supervisor.status("cam").state is CameraState.RECONNECTING)
    start = time.monotonic()
    assert supervisor.stop(timeout=2.0)
    assert time.monotonic() - start < 1.0
    assert supervisor.status("cam").state is CameraState.STOPPED
    assert queue.closed


def test_clean_stop_of_an_endless_camera_reports_fps() -> None:
    supervisor = CameraSupervisor()
    queue = supervisor.add_camera(FakeCameraConfig(id="cam", fps=50.0, pace="realtime", queue_size=2))
    supervisor.start()
    consumed = 0

    def consume() -> None:
        nonlocal consumed
        for _ in queue:
            consumed += 1

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.6)
    status = supervisor.status("cam")
    assert status.state is CameraState.CONNECTED
    assert 35.0 <= status.fps <= 65.0
    assert supervisor.stop(timeout=2.0)
    consumer.join(2.0)
    assert not consumer.is_alive()  # the closed queue ended the consumer
    final = supervisor.status("cam")
    assert final.state is CameraState.STOPPED
    assert final.frames_read >= consumed > 0
    assert final.last_frame_ts is not None


def test_a_slow_consumer_makes_the_camera_drop_frames_not_stall() -> None:
    supervisor = CameraSupervisor()
    queue = supervisor.add_camera(FakeCameraConfig(id="cam", frames=300, queue_size=1, width=64, height=48))
    got = []
    with supervisor:
        for frame in queue:
            got.append(frame.index)
            time.sleep(0.005)
    status = supervisor.status("cam")
    assert status.state is CameraState.FINISHED
    assert status.frames_read == 300
    assert status.frames_dropped > 0
    assert status.frames_dropped + len(got) == 300
    assert got == sorted(got) and got[-1] == 299


def test_unexpected_driver_exception_is_caught_and_retried() -> None:
    class Buggy(_TimedFlakyDriver):
        def open(self) -> None:
            self.open_times.append(time.monotonic())
            if len(self.open_times) == 1:
                raise ZeroDivisionError("division by zero")
            self._fake.open()

    driver = Buggy(fails=0, frames=3)
    supervisor = CameraSupervisor()
    supervisor.add(driver, FrameQueue(8), FAST)
    with supervisor:
        assert supervisor.wait(5.0)
    status = supervisor.status("flaky")
    assert status.state is CameraState.FINISHED
    assert status.reconnects == 1
    assert status.last_error == "ZeroDivisionError: division by zero"


def test_camera_ids_must_be_unique() -> None:
    supervisor = CameraSupervisor()
    supervisor.add_camera(FakeCameraConfig(id="cam"))
    with pytest.raises(ConfigError, match="twice"):
        supervisor.add_camera(FakeCameraConfig(id="cam"))
