"""Camera configs (a discriminated union by kind), the driver registry, and the USB driver's errors."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from drivers.camera.base import CameraDriver
from drivers.camera.capture import RtspCamera, UsbCamera
from drivers.camera.config import CameraConfig, FakeCameraConfig, UsbCameraConfig
from drivers.camera.fake import FakeCamera
from drivers.camera.file import FileCamera
from drivers.camera.registry import DRIVERS, create_driver
from edge.errors import DriverError

ADAPTER: TypeAdapter[CameraConfig] = TypeAdapter(CameraConfig)


def _kinds() -> set[str]:
    union = typing.get_args(CameraConfig)[0]
    models: tuple[type[BaseModel], ...] = typing.get_args(union)
    return {m.model_fields["kind"].default for m in models}


def test_registry_covers_every_config_kind() -> None:
    assert set(DRIVERS) == _kinds() == {"file", "rtsp", "usb", "csi", "fake"}


@pytest.mark.parametrize(
    ("raw", "cls"),
    [
        ({"kind": "file", "id": "a", "path": "clip.mp4"}, FileCamera),
        ({"kind": "rtsp", "id": "b", "url": "rtsp://10.0.0.5/s1"}, RtspCamera),
        ({"kind": "usb", "id": "c", "device": "/dev/video0", "fourcc": "MJPG"}, UsbCamera),
        ({"kind": "fake", "id": "d"}, FakeCamera),
    ],
)
def test_kind_selects_the_model_and_the_driver(raw: dict[str, object], cls: type) -> None:
    config = ADAPTER.validate_python(raw)
    assert config.kind == raw["kind"]
    driver = create_driver(config)
    assert isinstance(driver, cls)
    assert isinstance(driver, CameraDriver)  # satisfies the protocol
    assert driver.source_id == raw["id"]
    assert driver.status.opened is False


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"kind": "webcam", "id": "a"}, "kind"),
        ({"kind": "file", "id": "a", "path": "x.mp4", "speed": 2}, "speed"),  # unknown key
        ({"kind": "file", "id": "a", "path": "x.mp4", "pace": "slow"}, "pace"),
        ({"kind": "file", "id": "bad id!", "path": "x.mp4"}, "id"),
        ({"kind": "file", "id": "a", "path": "x", "hold_frames": 0}, "hold_frames"),
        ({"kind": "usb", "id": "a", "device": "video0"}, "/dev/"),
        ({"kind": "usb", "id": "a", "device": -1}, "index"),
        ({"kind": "usb", "id": "a", "fourcc": "MJPEG"}, "fourcc"),
        ({"kind": "rtsp", "id": "a", "url": "rtsp://u:p@h/s"}, "credentials_file"),
    ],
)
def test_bad_configs_are_rejected_naming_the_key(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        ADAPTER.validate_python(raw)
    assert needle in str(info.value)


def test_configs_are_frozen() -> None:
    config = FakeCameraConfig(id="a")
    with pytest.raises(ValidationError):
        config.fps = 5.0  # type: ignore[misc]


def test_usb_camera_that_is_not_there_fails_to_open(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="no device"):
        UsbCamera(UsbCameraConfig(id="door", device="/dev/video-edgegw-test-missing")).open()
    # An index with no device behind it: OpenCV cannot open it.
    with pytest.raises(DriverError, match="cannot open /dev/video63"):
        UsbCamera(UsbCameraConfig(id="door", device=63)).open()


def test_fake_camera_is_deterministic_and_scripts_failures() -> None:
    cam = FakeCamera(FakeCameraConfig(id="f", objects=2, fail_opens=1, frames=3))
    with pytest.raises(DriverError):
        cam.open()
    cam.open()
    frames = [cam.read() for _ in range(4)]
    assert frames[3] is None
    again = FakeCamera(FakeCameraConfig(id="f", objects=2))
    for frame in frames[:3]:
        assert frame is not None
        assert (frame.image == again.render(frame.index)).all()
        for box in cam.boxes_at(frame.index):
            x1, y1 = int(box.x1) + 2, int(box.y1) + 2
            if 0 <= x1 < 320:
                assert (frame.image[y1, x1] != 96).any()  # the rectangle is drawn where it is said to be
    assert cam.opens == 2
