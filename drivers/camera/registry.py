"""The explicit table of camera kinds: config `kind` → driver class. Nothing is discovered."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from drivers.camera.base import CameraDriver
from drivers.camera.capture import RtspCamera, UsbCamera
from drivers.camera.config import CameraConfig
from drivers.camera.csi import CsiCamera
from drivers.camera.fake import FakeCamera
from drivers.camera.file import FileCamera
from edge.errors import ConfigError

# Each constructor takes the config model of its own kind; `create_driver` pairs them by `kind`.
DRIVERS: Final[Mapping[str, Callable[[Any], CameraDriver]]] = MappingProxyType(
    {
        "file": FileCamera,
        "rtsp": RtspCamera,
        "usb": UsbCamera,
        "csi": CsiCamera,
        "fake": FakeCamera,
    }
)


def create_driver(config: CameraConfig) -> CameraDriver:
    """Build the driver for a camera config."""
    try:
        factory = DRIVERS[config.kind]
    except KeyError:
        raise ConfigError(f"camera {config.id}: unknown camera kind {config.kind!r}") from None
    return factory(config)
