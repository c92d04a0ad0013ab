"""A stand-in for picamera2 (libcamera's Python binding) where no Raspberry Pi camera is attached.

It behaves as picamera2 does in what `drivers.camera.csi` relies on, and is strict where picamera2
punishes mistakes: a camera is acquired by one owner at a time; it must be configured before it
starts and stopped before it is configured again; the sensor paces frames at FrameDurationLimits;
each completed request pins one of `buffer_count` buffers until released, and a camera whose
buffers are all held delivers nothing (the wait times out); a released request cannot be read nor
released again. RGB888 arrays are laid out B, G, R (libcamera's naming is little-endian),
XRGB8888 as B, G, R, 255; SensorTimestamp is CLOCK_MONOTONIC in nanoseconds. `unplug()` makes the
next wait fail as a pulled ribbon cable does.

Not covered (the driver does not use them): previews, encoders, still/raw streams, controls after
start, autofocus, YUV formats. No test has compared it with real hardware.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

Scene = Callable[[int, int, int], NDArray[np.uint8]]
"""(frame index, width, height) → the BGR picture the sensor sees."""

_FORMATS = {"RGB888": 3, "BGR888": 3, "XRGB8888": 4, "XBGR8888": 4}


def gradient_scene(index: int, width: int, height: int) -> NDArray[np.uint8]:
    """The default scene: distinct blue, green and red ramps, shifted by the frame index."""
    x = np.arange(width, dtype=np.uint32)[None, :]
    y = np.arange(height, dtype=np.uint32)[:, None]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = ((x + index) % 256).astype(np.uint8)  # blue varies along x
    image[..., 1] = (y % 256).astype(np.uint8)  # green along y
    image[..., 2] = 200  # red constant
    return image


class Transform:
    """libcamera.Transform: flips applied by the ISP."""

    def __init__(self, hflip: int = 0, vflip: int = 0) -> None:
        self.hflip, self.vflip = bool(hflip), bool(vflip)


class CompletedRequest:
    """One completed capture: its buffer stays pinned until `release`."""

    def __init__(self, owner: Picamera2, image: NDArray[np.uint8], metadata: dict[str, Any]) -> None:
        self._owner = owner
        self._image: NDArray[np.uint8] | None = image
        self._metadata = metadata

    def make_array(self, name: str) -> NDArray[np.uint8]:
        """The stream's pixels as a numpy array (a view of the buffer, as in picamera2)."""
        if self._image is None:
            raise RuntimeError("CompletedRequest: buffer used after release")
        if name != "main":
            raise KeyError(name)
        return self._image

    def get_metadata(self) -> dict[str, Any]:
        """The frame's metadata (SensorTimestamp, FrameDuration, ExposureTime, ...)."""
        return dict(self._metadata)

    def release(self) -> None:
        """Hand the buffer back to libcamera."""
        if self._image is None:
            raise RuntimeError("CompletedRequest: released twice")
        self._image = None
        self._owner._returned()


class Picamera2:
    """The subset of picamera2.Picamera2 the CSI driver uses (see the module docstring)."""

    cameras: Sequence[dict[str, Any]] = ({"Model": "imx708", "Location": 2, "Rotation": 180,
                                          "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0},)
    scene: Scene = staticmethod(gradient_scene)
    _acquired: ClassVar[set[int]] = set()
    _lock: ClassVar[threading.Lock] = threading.Lock()
    instances: ClassVar[list[Picamera2]] = []

    @classmethod
    def global_camera_info(cls) -> list[dict[str, Any]]:
        """The cameras libcamera found."""
        return [dict(c) for c in cls.cameras]

    def __init__(self, camera_num: int = 0) -> None:
        if camera_num >= len(self.cameras):
            raise IndexError("list index out of range")
        cls = type(self)
        with cls._lock:
            if camera_num in cls._acquired:
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
            cls._acquired.add(camera_num)
        self.camera_num = camera_num
        self.config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        self.outstanding = 0
        self.delivered = 0
        self.readouts: list[int] = []  # SensorTimestamp of each frame delivered, for pacing checks
        self._unplugged = False
        self._next_due_ns = 0
        cls.instances.append(self)

    def create_video_configuration(self, main: dict[str, Any] | None = None, controls: dict[str, Any] | None = None,
                                   transform: Transform | None = None, buffer_count: int = 6,
                                   **_other: Any) -> dict[str, Any]:
        """A video configuration; sizes are aligned as libcamera aligns them (even width and height)."""
        main = dict(main or {})
        width, height = main.get("size", (640, 480))
        main["size"] = (int(width) // 2 * 2, int(height) // 2 * 2)
        main.setdefault("format", "XBGR8888")
        if main["format"] not in _FORMATS:
            raise ValueError(f"unsupported format {main['format']}")
        return {"main": main, "controls": dict(controls or {}), "transform": transform or Transform(),
                "buffer_count": int(buffer_count)}

    def configure(self, config: dict[str, Any]) -> None:
        """Apply a configuration; only while stopped."""
        self._check_open()
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        self.config = config

    def start(self) -> None:
        """Start streaming."""
        self._check_open()
        if self.config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True
        self._next_due_ns = time.monotonic_ns()

    def capture_request(self, wait: bool | None = None) -> Any:
        """With wait=False a job for `wait(job, timeout)`, else the next completed request."""
        job = ("capture_request", self)
        return job if wait is False else self.wait(job)

    def wait(self, job: Any, timeout: float | None = None) -> CompletedRequest:
        """The result of a job; raises TimeoutError when no frame completes in time."""
        self._check_open()
        if not self.started:
            raise RuntimeError("Camera is not started")
        assert self.config is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._unplugged:
            raise RuntimeError("Device timeout detected, attempting a restart!!!")
        if self.outstanding >= self.config["buffer_count"]:
            # Every buffer is pinned by an unreleased request: the pipeline is starved.
            time.sleep(max(0.0, deadline - time.monotonic()) if deadline is not None else 3600.0)
            raise FutureTimeoutError()
        frame_us = self._frame_us()
        now_ns = time.monotonic_ns()
        if self._next_due_ns > now_ns:
            wait_s = (self._next_due_ns - now_ns) / 1e9
            if deadline is not None and time.monotonic() + wait_s > deadline:
                time.sleep(max(0.0, deadline - time.monotonic()))
                raise FutureTimeoutError()
            time.sleep(wait_s)
        readout_ns = time.monotonic_ns()
        self._next_due_ns = max(self._next_due_ns + frame_us * 1000, readout_ns)
        self.outstanding += 1
        self.delivered += 1
        self.readouts.append(readout_ns)
        return CompletedRequest(self, self._render(), {
            "SensorTimestamp": readout_ns, "FrameDuration": frame_us, "ExposureTime": min(frame_us, 10_000)})

    def stop(self) -> None:
        """Stop streaming."""
        self.started = False

    def close(self) -> None:
        """Release the camera for other owners."""
        if not self.closed:
            self.closed = True
            self.started = False
            cls = type(self)
            with cls._lock:
                cls._acquired.discard(self.camera_num)

    def unplug(self) -> None:
        """Make the next wait fail, as a camera whose cable came loose does."""
        self._unplugged = True

    def _returned(self) -> None:
        self.outstanding -= 1

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("Camera is closed")

    def _frame_us(self) -> int:
        assert self.config is not None
        limits = self.config["controls"].get("FrameDurationLimits", (33_333, 33_333))
        return int(limits[0])

    def _render(self) -> NDArray[np.uint8]:
        assert self.config is not None
        main = self.config["main"]
        width, height = main["size"]
        bgr = self.scene(self.delivered - 1, width, height)
        transform: Transform = self.config["transform"]
        if transform.hflip:
            bgr = bgr[:, ::-1]
        if transform.vflip:
            bgr = bgr[::-1]
        fmt = main["format"]
        if fmt in ("BGR888", "XBGR8888"):  # libcamera's BGR888 is R, G, B in memory
            bgr = bgr[..., ::-1]
        if _FORMATS[fmt] == 4:
            return np.ascontiguousarray(np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]))
        return np.ascontiguousarray(bgr)


def module(cameras: Sequence[dict[str, Any]] | None = None, scene: Scene | None = None) -> types.ModuleType:
    """A fresh fake `picamera2` module (its own camera registry), for `CsiCamera(loader=...)`."""
    attrs: dict[str, Any] = {"_acquired": set(), "instances": []}
    if cameras is not None:
        attrs["cameras"] = tuple(cameras)
    if scene is not None:
        attrs["scene"] = staticmethod(scene)
    cls = type("Picamera2", (Picamera2,), attrs)
    mod = types.ModuleType("picamera2")
    mod.Picamera2 = cls  # type: ignore[attr-defined]
    mod.Transform = Transform  # type: ignore[attr-defined]
    return mod
