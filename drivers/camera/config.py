"""Camera configuration: one model per driver, selected by its `kind` field (a discriminated union)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from edge.configbase import BackoffConfig, StrictModel

SourceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""A camera id: it appears in topics and events, so it is kept to a safe character set."""


class ResizeConfig(StrictModel):
    """Resize every frame to `width` x `height`: `fit` keeps the aspect ratio and pads with black."""

    width: int = Field(ge=16, le=8192)
    height: int = Field(ge=16, le=8192)
    mode: Literal["fit", "stretch"] = "fit"


class _CameraBase(StrictModel):
    id: SourceId
    backoff: BackoffConfig = BackoffConfig()
    queue_size: int = Field(default=2, ge=1, le=64)
    """Frames buffered between this camera and the pipeline; the oldest is dropped when full."""


class FileCameraConfig(_CameraBase):
    """A video file, a folder of images, or a glob of images, played as a camera."""

    kind: Literal["file"] = "file"
    path: str
    """A video file (anything OpenCV reads, GIF included), an image, a folder of images, or a glob."""
    pace: Literal["realtime", "lossless", "fast"] = "realtime"
    """`realtime` releases frames at `fps` and drops what the pipeline cannot take, as a live camera
    would (frames stamped with the wall clock at release); `lossless` releases every frame, never
    faster than `fps` and slower when the pipeline is slower (stamped on the clip's timeline, so the
    result does not depend on the machine's speed); `fast` releases every frame as quickly as the
    pipeline takes it (stamped on the clip's timeline, placed so it never runs ahead of the wall clock)."""
    fps: float | None = Field(default=None, gt=0.0, le=240.0)
    """Frame rate: for images the clip's rate (default 10); for video overrides the file's own."""
    hold_frames: int = Field(default=1, ge=1, le=10_000)
    """For images: how many consecutive frames each photo stays on screen."""
    loop: bool = False
    """Start again at the end instead of finishing."""
    recursive: bool = False
    """For folders: include images in sub-folders (for globs, `**` is always recursive)."""
    resize: ResizeConfig | None = None


class RtspCameraConfig(_CameraBase):
    """An RTSP (or HTTP/RTMP) network camera read through OpenCV's FFmpeg backend."""

    kind: Literal["rtsp"] = "rtsp"
    url: str
    """Stream address without credentials, e.g. rtsp://10.0.0.5:554/stream1."""
    credentials_file: Path | None = None
    """A file holding `user:password` on its first line (e.g. a systemd credential)."""
    open_timeout_s: float = Field(default=10.0, gt=0.0)
    read_timeout_s: float = Field(default=10.0, gt=0.0)

    @field_validator("url")
    @classmethod
    def _no_inline_credentials(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme.lower() not in {"rtsp", "rtsps", "rtmp", "http", "https"}:
            raise ValueError("url must start with rtsp://, rtsps://, rtmp://, http:// or https://")
        if "@" in parts.netloc:
            # Secrets come from files, never from the config itself; a config file gets copied
            # into bug reports and logs.
            raise ValueError("put the camera's user and password in credentials_file, not in the url")
        if not parts.hostname:
            raise ValueError("url has no host")
        return url


class UsbCameraConfig(_CameraBase):
    """A local V4L2 camera (USB or CSI through V4L2) read through OpenCV."""

    kind: Literal["usb"] = "usb"
    device: int | str = 0
    """A V4L2 device index or a path such as /dev/video0 or /dev/v4l/by-id/..."""
    width: int | None = Field(default=None, ge=16, le=8192)
    height: int | None = Field(default=None, ge=16, le=8192)
    fps: float | None = Field(default=None, gt=0.0, le=240.0)
    fourcc: str | None = Field(default=None, pattern=r"^[A-Za-z0-9 ]{4}$")
    """Pixel format to ask for, e.g. MJPG (most USB cameras reach full rate only with MJPG)."""

    @field_validator("device")
    @classmethod
    def _device_path(cls, device: int | str) -> int | str:
        if isinstance(device, int):
            if device < 0:
                raise ValueError("device index must be >= 0")
            return device
        if not device.startswith("/dev/"):
            raise ValueError("device must be an index or a path under /dev/")
        return device


class CsiCameraConfig(_CameraBase):
    """A Raspberry Pi camera module on the CSI connector, read through libcamera (picamera2)."""

    kind: Literal["csi"] = "csi"
    camera_num: int = Field(default=0, ge=0, le=7)
    """Which camera: the index in `Picamera2.global_camera_info()` (0 on a Pi with one camera)."""
    width: int = Field(default=1280, ge=64, le=4608)
    height: int = Field(default=720, ge=64, le=3496)
    fps: float = Field(default=15.0, gt=0.0, le=120.0)
    hflip: bool = False
    vflip: bool = False
    """Both flips: the module is mounted upside down."""
    buffer_count: int = Field(default=4, ge=2, le=16)
    """libcamera buffers; each held request pins one, so the driver returns them at once."""
    capture_timeout_s: float = Field(default=5.0, gt=0.0)


class FakeCameraConfig(_CameraBase):
    """Synthetic frames (rectangles moving across a grey field) for tests and dry runs."""

    kind: Literal["fake"] = "fake"
    width: int = Field(default=320, ge=16, le=8192)
    height: int = Field(default=240, ge=16, le=8192)
    fps: float = Field(default=10.0, gt=0.0, le=1000.0)
    pace: Literal["realtime", "fast"] = "fast"
    frames: int | None = Field(default=None, ge=0)
    """Frames before the source is finished (None: endless)."""
    objects: int = Field(default=1, ge=0, le=16)
    """How many rectangles move across the picture."""
    speed_px: float = 4.0
    """Horizontal speed of the rectangles in pixels per frame (0: a static scene)."""
    fail_opens: int = Field(default=0, ge=0)
    """The first N calls to open fail, as an unreachable camera would."""
    fail_after_frames: int | None = Field(default=None, ge=0)
    """Each connection fails after this many frames, as a dropped stream would."""


CameraConfig = Annotated[
    FileCameraConfig | RtspCameraConfig | UsbCameraConfig | CsiCameraConfig | FakeCameraConfig,
    Field(discriminator="kind"),
]
"""Any camera's config, told apart by `kind`."""
