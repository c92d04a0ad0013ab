"""Live cameras through OpenCV's VideoCapture: RTSP/HTTP streams (FFmpeg) and V4L2 devices."""

from __future__ import annotations

import logging
import math
import os
import stat
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import cv2

from drivers.camera.base import DriverStatus
from drivers.camera.config import RtspCameraConfig, UsbCameraConfig
from drivers.camera.imageops import as_bgr, frozen
from drivers.camera.redact import redact_text, redact_url
from edge.errors import DriverError
from edge.types import Frame

log = logging.getLogger(__name__)


class _OpenCvCamera:
    """Shared read loop of the live cameras; subclasses open the capture."""

    _kind = ""

    def __init__(self, source_id: str) -> None:
        self._source_id = source_id
        self._capture: cv2.VideoCapture | None = None
        self._index = 0
        self._size: tuple[int, int] | None = None
        self._nominal_fps: float | None = None

    @property
    def source_id(self) -> str:
        """The camera id frames carry."""
        return self._source_id

    @property
    def lossless(self) -> bool:
        """Never: this source behaves like a live device (latest frame wins)."""
        return False

    @property
    def pace_fps(self) -> float | None:
        """None: a live device delivers frames at its own rate."""
        return None

    @property
    def status(self) -> DriverStatus:
        """The driver's view of its device; the target is redacted."""
        w, h = self._size if self._size else (None, None)
        return DriverStatus(
            kind=self._kind,
            target=self._target(),
            opened=self._capture is not None,
            frames_read=self._index,
            width=w,
            height=h,
            nominal_fps=self._nominal_fps,
        )

    def open(self) -> None:
        """Open the device; raises DriverError with a redacted message."""
        self.close()
        try:
            capture = self._open_capture()
        except cv2.error as exc:
            # `from None`: OpenCV's own exception may quote the URL, credentials included.
            detail = self._redact(str(exc))
            raise DriverError(f"camera {self._source_id}: cannot open {self._target()}: {detail}") from None
        if not capture.isOpened():
            capture.release()
            raise DriverError(f"camera {self._source_id}: cannot open {self._target()}")
        fps = capture.get(cv2.CAP_PROP_FPS)
        self._nominal_fps = fps if math.isfinite(fps) and 0.0 < fps <= 240.0 else None
        self._capture = capture

    def read(self) -> Frame | None:
        """The next frame; a live stream never ends, so a failed read raises DriverError."""
        capture = self._capture
        if capture is None:
            raise DriverError(f"camera {self._source_id}: read before open")
        try:
            ok, image = capture.read()
        except cv2.error as exc:
            raise DriverError(f"camera {self._source_id}: read failed: {self._redact(str(exc))}") from None
        if not ok or image is None:
            raise DriverError(f"camera {self._source_id}: no frame from {self._target()} (stream lost)")
        bgr = frozen(as_bgr(image))
        self._size = (int(bgr.shape[1]), int(bgr.shape[0]))
        frame = Frame(self._source_id, self._index, time.time(), bgr)
        self._index += 1
        return frame

    def close(self) -> None:
        """Release the device; idempotent."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _open_capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def _target(self) -> str:
        raise NotImplementedError

    def _redact(self, text: str) -> str:
        return redact_text(text)


def _read_private(path: Path) -> str:
    """The file's text, refusing one that group or others can access (the rule edge.keys applies to keys)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DriverError(f"camera credentials {path} is not a regular file")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise DriverError(f"camera credentials {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be "
                              f"readable by its owner only. Fix: chmod 600 {path}")
        return os.read(fd, 4096).decode("utf-8")
    finally:
        os.close(fd)


def read_credentials(path: Path) -> tuple[str, str]:
    """(user, password) from a file whose first line is `user:password`; raises DriverError."""
    try:
        first = _read_private(path).splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        # The message names the file and the error kind only, never the content.
        raise DriverError(f"cannot read camera credentials from {path}: {type(exc).__name__}") from None
    user, sep, password = first.partition(":")
    if not sep or not user:
        raise DriverError(f"camera credentials in {path} must be one line `user:password`")
    return user, password


class RtspCamera(_OpenCvCamera):
    """An RTSP (or HTTP/RTMP) camera; credentials come from a file and never reach a log."""

    _kind = "rtsp"

    def __init__(self, config: RtspCameraConfig) -> None:
        super().__init__(config.id)
        self._config = config
        self._secrets: tuple[str, ...] = ()

    def _open_capture(self) -> cv2.VideoCapture:
        url = self._config.url
        if self._config.credentials_file is not None:
            user, password = read_credentials(self._config.credentials_file)
            quser, qpass = quote(user, safe=""), quote(password, safe="")
            self._secrets = (user, password, quser, qpass)
            parts = urlsplit(url)
            url = urlunsplit(parts._replace(netloc=f"{quser}:{qpass}@{parts.netloc}"))
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(self._config.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(self._config.read_timeout_s * 1000),
        ]
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)

    def _target(self) -> str:
        return redact_url(self._config.url)

    def _redact(self, text: str) -> str:
        return redact_text(text, self._secrets)


class UsbCamera(_OpenCvCamera):
    """A V4L2 camera by index or /dev path, with the size, rate and pixel format asked for."""

    _kind = "usb"

    def __init__(self, config: UsbCameraConfig) -> None:
        super().__init__(config.id)
        self._config = config

    def _open_capture(self) -> cv2.VideoCapture:
        cfg = self._config
        if isinstance(cfg.device, str) and not Path(cfg.device).exists():
            raise DriverError(f"camera {self.source_id}: no device {cfg.device}")
        capture = cv2.VideoCapture(cfg.device, cv2.CAP_V4L2)
        if not capture.isOpened():
            return capture
        # The pixel format first: some drivers only offer the larger sizes in MJPG.
        if cfg.fourcc is not None:
            capture.set(cv2.CAP_PROP_FOURCC, float(cv2.VideoWriter.fourcc(*cfg.fourcc)))
        if cfg.width is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, float(cfg.width))
        if cfg.height is not None:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, float(cfg.height))
        if cfg.fps is not None:
            capture.set(cv2.CAP_PROP_FPS, float(cfg.fps))
        # One buffered frame: the pipeline wants the newest picture, not a backlog.
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1.0)
        got = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if cfg.width is not None and cfg.height is not None and got != (cfg.width, cfg.height):
            log.info("camera %s: asked for %dx%d, device gives %dx%d", self.source_id, cfg.width, cfg.height, *got)
        return capture

    def _target(self) -> str:
        device = self._config.device
        return f"/dev/video{device}" if isinstance(device, int) else device
