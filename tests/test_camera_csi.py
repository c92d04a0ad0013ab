"""The CSI (libcamera/picamera2) camera driver against the picamera2 fake: no camera module is attached
here, so `drivers.camera.picamera2_fake` stands in for picamera2 (see its docstring for what it covers)."""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from drivers.camera import picamera2_fake as fake
from drivers.camera.base import CameraDriver
from drivers.camera.config import CameraConfig, CsiCameraConfig
from drivers.camera.csi import CsiCamera, sensor_time_to_wall
from drivers.camera.registry import create_driver
from drivers.camera.supervisor import CameraState, CameraSupervisor
from edge.configbase import BackoffConfig
from edge.errors import DriverError
from edge.framequeue import FrameQueue


def _camera(module: Any, **cfg: Any) -> CsiCamera:
    return CsiCamera(CsiCameraConfig(id="gate-csi", **cfg), loader=lambda: module)


def test_config_selects_the_csi_driver_and_checks_its_fields() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(CameraConfig)
    cfg = adapter.validate_python({"kind": "csi", "id": "gate", "width": 640, "height": 480, "fps": 10})
    assert isinstance(cfg, CsiCameraConfig)
    driver = create_driver(cfg)
    assert isinstance(driver, CsiCamera) and isinstance(driver, CameraDriver)
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "csi", "id": "gate", "fps": 0})
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "csi", "id": "gate", "lens": "wide"})


def test_frames_are_bgr_stamped_at_sensor_readout_and_every_buffer_goes_back() -> None:
    module = fake.module()
    cam = _camera(module, width=320, height=240, fps=30.0, buffer_count=2)
    before = time.time()
    cam.open()
    frames = [cam.read() for _ in range(5)]  # more frames than buffers: each request was released
    after = time.time()
    (device,) = module.Picamera2.instances
    assert device.outstanding == 0 and device.delivered == 5
    assert device.config["main"] == {"size": (320, 240), "format": "RGB888"}
    assert device.config["controls"]["FrameDurationLimits"] == (33_333, 33_333)
    for i, frame in enumerate(frames):
        assert frame is not None and frame.index == i and frame.source_id == "gate-csi"
        expected = fake.gradient_scene(i, 320, 240)
        assert np.array_equal(frame.image, expected)  # B, G, R as the scene: no channel swap
        assert not frame.image.flags.writeable
        # Moving the sensor clock onto the wall clock reads both clocks once per frame: allow for
        # the moment between those two reads on a loaded (or emulated) machine.
        assert before - 0.05 <= frame.ts <= after + 0.05
    # The sensor paces itself (33 ms), on its own clock: the wall-clock stamps carry the jitter of
    # reading two clocks per frame, which under emulation exceeds the 13 ms margin a check on them had.
    # A late readout shortens the gap to the next one (the sensor keeps its own frame grid), so the
    # bound is cumulative: frame i is read no earlier than i - 1 frame times after frame 0.
    assert len(device.readouts) == 5
    assert all(r - device.readouts[0] >= (i - 1) * 33_333_000 for i, r in enumerate(device.readouts))
    ts = [f.ts for f in frames if f is not None]
    assert all(b > a for a, b in itertools.pairwise(ts))  # and the frames' stamps keep their order
    assert cam.status.width == 320 and cam.status.target == "csi:0 (imx708)"
    cam.close()
    assert device.closed
    cam.close()  # idempotent


def test_flips_and_four_channel_buffers() -> None:
    module = fake.module()
    cam = _camera(module, width=64, height=64, fps=60.0, hflip=True, vflip=True)
    cam.open()
    frame = cam.read()
    assert frame is not None
    assert np.array_equal(frame.image, fake.gradient_scene(0, 64, 64)[::-1, ::-1])
    cam.close()
    # A camera module's XRGB8888 buffer (B, G, R, 255) becomes the same BGR frame.
    request = fake.CompletedRequest(module.Picamera2.instances[0], np.dstack(
        [fake.gradient_scene(0, 8, 4), np.full((4, 8), 255, np.uint8)]), {})
    from drivers.camera.imageops import as_bgr

    assert np.array_equal(as_bgr(request.make_array("main")), fake.gradient_scene(0, 8, 4))


def test_missing_picamera2_missing_camera_and_busy_camera_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # as on a machine without python3-picamera2
    with pytest.raises(DriverError, match="apt install python3-picamera2"):
        CsiCamera(CsiCameraConfig(id="c")).open()
    module = fake.module()
    with pytest.raises(DriverError, match=r"no CSI camera 1 .*sees 1"):
        _camera(module, camera_num=1).open()
    first = _camera(module)
    first.open()
    with pytest.raises(DriverError, match="busy"):
        _camera(module).open()  # libcamera hands a camera to one owner at a time
    first.close()
    second = _camera(module)
    second.open()  # released by close: the next owner gets it
    second.close()


def test_a_starved_or_unplugged_camera_fails_the_read_and_the_supervisor_reconnects() -> None:
    module = fake.module()
    cam = _camera(module, width=64, height=64, fps=60.0, capture_timeout_s=0.2)
    cam.open()
    module.Picamera2.instances[0].unplug()
    with pytest.raises(DriverError, match="no frame from the CSI camera"):
        cam.read()
    cam.close()
    # Through the supervisor: the failure is counted, the camera reopened, frames flow again.
    cam = _camera(module, width=64, height=64, fps=60.0, capture_timeout_s=0.2)
    queue = FrameQueue(4)
    supervisor = CameraSupervisor()
    supervisor.add(cam, queue, BackoffConfig(initial_s=0.05, max_s=0.1))
    with supervisor:
        assert queue.get(timeout=5) is not None
        unplugged = module.Picamera2.instances[-1]
        unplugged.unplug()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
                module.Picamera2.instances[-1] is not unplugged and module.Picamera2.instances[-1].delivered > 0):
            time.sleep(0.05)
        status = supervisor.status("gate-csi")
        assert status.reconnects >= 1 and "no frame from the CSI camera" in (status.last_error or "")
        assert unplugged.closed  # the failed camera was released before the new one was acquired
        assert module.Picamera2.instances[-1].delivered > 0  # frames again, from a reopened camera
        assert status.state is CameraState.CONNECTED
    assert all(d.closed for d in module.Picamera2.instances)


def test_sensor_clock_maps_onto_the_wall_clock() -> None:
    assert sensor_time_to_wall(5_000_000_000, wall=1_768_000_000.0, mono_ns=7_500_000_000) == 1_767_999_997.5
