"""Raspberry Pi camera modules on the CSI connector, through libcamera's Python binding picamera2.

picamera2 comes from Raspberry Pi OS (`apt install python3-picamera2`), not from PyPI, and is
imported only when a `csi` camera opens; the rest of edgegw never needs it. Frames are asked for as
libcamera's RGB888, which is laid out B, G, R in memory: OpenCV's BGR, with no conversion. Each
frame is stamped with the wall time at which the sensor read it out (libcamera's SensorTimestamp,
on CLOCK_MONOTONIC, moved onto the wall clock), not when the pipeline got to it.

Tests use `drivers.camera.picamera2_fake`, which behaves as picamera2 does where these drivers
depend on it (see there); no test here has seen real camera hardware.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from drivers.camera.base import DriverStatus
from drivers.camera.config import CsiCameraConfig
from drivers.camera.imageops import as_bgr, frozen
from edge.errors import DriverError
from edge.types import Frame

log = logging.getLogger(__name__)

_INSTALL_HINT = ("picamera2 is not installed: on Raspberry Pi OS `sudo apt install python3-picamera2` and create "
                 "the virtualenv with --system-site-packages (see docs/platforms.md)")


def _import_picamera2() -> Any:
    """The picamera2 module; raises DriverError with the install step when it is missing."""
    try:
        return importlib.import_module("picamera2")
    except ImportError as exc:
        raise DriverError(_INSTALL_HINT) from exc


def _transform(module: Any, hflip: bool, vflip: bool) -> Any:
    # libcamera's Transform lives in the `libcamera` binding; picamera2 re-exports nothing for it.
    # The fake provides one of the same shape.
    factory = getattr(module, "Transform", None)
    if factory is None:
        factory = importlib.import_module("libcamera").Transform
    return factory(hflip=int(hflip), vflip=int(vflip))


def sensor_time_to_wall(sensor_ns: int, *, wall: float | None = None, mono_ns: int | None = None) -> float:
    """A CLOCK_MONOTONIC timestamp (ns, as libcamera reports it) on the wall clock (s since 1970)."""
    now_wall = time.time() if wall is None else wall
    now_mono = time.monotonic_ns() if mono_ns is None else mono_ns
    return now_wall - (now_mono - sensor_ns) / 1e9


class CsiCamera:
    """A libcamera camera: configure, start, take one request per frame and hand its buffer back."""

    def __init__(self, config: CsiCameraConfig, *, loader: Callable[[], Any] = _import_picamera2) -> None:
        self._config = config
        self._loader = loader
        self._camera: Any = None
        self._index = 0
        self._size: tuple[int, int] | None = None
        self._model: str | None = None

    @property
    def source_id(self) -> str:
        """The camera id frames carry."""
        return self._config.id

    @property
    def lossless(self) -> bool:
        """Never: a live camera (latest frame wins)."""
        return False

    @property
    def pace_fps(self) -> float | None:
        """None: the sensor paces itself (FrameDurationLimits)."""
        return None

    @property
    def status(self) -> DriverStatus:
        """The driver's view of the module."""
        w, h = self._size if self._size else (None, None)
        model = f" ({self._model})" if self._model else ""
        return DriverStatus(kind="csi", target=f"csi:{self._config.camera_num}{model}", opened=self._camera is not None,
                            frames_read=self._index, width=w, height=h, nominal_fps=self._config.fps)

    def open(self) -> None:
        """Find the module, configure its main stream (size, BGR, frame rate, flips) and start it."""
        self.close()
        module = self._loader()
        cfg = self._config
        try:
            cameras = list(module.Picamera2.global_camera_info())
        except Exception as exc:  # libcamera's errors are untyped
            raise DriverError(f"camera {self.source_id}: libcamera cannot list cameras: {exc}") from exc
        if cfg.camera_num >= len(cameras):
            raise DriverError(f"camera {self.source_id}: no CSI camera {cfg.camera_num} (libcamera sees "
                              f"{len(cameras)}; check the ribbon cable and `rpicam-hello --list-cameras`)")
        self._model = str(cameras[cfg.camera_num].get("Model", "")) or None
        frame_us = round(1e6 / cfg.fps)
        camera: Any = None
        try:
            camera = module.Picamera2(cfg.camera_num)
            video = camera.create_video_configuration(
                main={"size": (cfg.width, cfg.height), "format": "RGB888"},
                controls={"FrameDurationLimits": (frame_us, frame_us)},
                transform=_transform(module, cfg.hflip, cfg.vflip),
                buffer_count=cfg.buffer_count,
            )
            camera.configure(video)
            camera.start()
        except Exception as exc:
            if camera is not None:
                _quietly_close(camera)
            raise DriverError(f"camera {self.source_id}: cannot start CSI camera {cfg.camera_num}: {exc}") from exc
        self._camera = camera

    def read(self) -> Frame | None:
        """The next frame from the sensor; raises DriverError when the camera fails."""
        camera = self._camera
        if camera is None:
            raise DriverError(f"camera {self.source_id}: read before open")
        try:
            # picamera2's way to bound the wait: a job, then wait(job, timeout).
            job = camera.capture_request(wait=False)
            request = camera.wait(job, timeout=self._config.capture_timeout_s)
        except Exception as exc:
            raise DriverError(f"camera {self.source_id}: no frame from the CSI camera: {exc}") from exc
        try:
            array = request.make_array("main")
            metadata = request.get_metadata()
        except Exception as exc:
            raise DriverError(f"camera {self.source_id}: bad frame from the CSI camera: {exc}") from exc
        finally:
            # A held request pins one of libcamera's few buffers; the camera stalls once all are held.
            request.release()
        image = frozen(as_bgr(np.array(array, dtype=np.uint8, copy=True)))
        sensor_ns = metadata.get("SensorTimestamp")
        ts = sensor_time_to_wall(int(sensor_ns)) if isinstance(sensor_ns, int) else time.time()
        self._size = (int(image.shape[1]), int(image.shape[0]))
        frame = Frame(self.source_id, self._index, ts, image)
        self._index += 1
        return frame

    def close(self) -> None:
        """Stop and release the camera; idempotent."""
        camera, self._camera = self._camera, None
        if camera is not None:
            _quietly_close(camera)


def _quietly_close(camera: Any) -> None:
    for step in ("stop", "close"):
        try:
            getattr(camera, step)()
        except Exception as exc:  # a camera that failed may refuse to stop; closing must still go on
            log.debug("CSI camera %s failed: %s", step, exc)
