"""Camera drivers (file, RTSP, USB/V4L2, CSI/libcamera, fake), their configs, registry and supervisor."""

from drivers.camera.base import CameraDriver, DriverStatus
from drivers.camera.capture import RtspCamera, UsbCamera
from drivers.camera.config import (
    CameraConfig,
    CsiCameraConfig,
    FakeCameraConfig,
    FileCameraConfig,
    ResizeConfig,
    RtspCameraConfig,
    UsbCameraConfig,
)
from drivers.camera.csi import CsiCamera
from drivers.camera.fake import FakeCamera
from drivers.camera.file import FileCamera
from drivers.camera.redact import redact_text, redact_url
from drivers.camera.registry import DRIVERS, create_driver
from drivers.camera.supervisor import CameraState, CameraStatus, CameraSupervisor, CameraThread, supervise

__all__ = [
    "DRIVERS",
    "CameraConfig",
    "CameraDriver",
    "CameraState",
    "CameraStatus",
    "CameraSupervisor",
    "CameraThread",
    "CsiCamera",
    "CsiCameraConfig",
    "DriverStatus",
    "FakeCamera",
    "FakeCameraConfig",
    "FileCamera",
    "FileCameraConfig",
    "ResizeConfig",
    "RtspCamera",
    "RtspCameraConfig",
    "UsbCamera",
    "UsbCameraConfig",
    "create_driver",
    "redact_text",
    "redact_url",
    "supervise",
]
