"""Play a video file, a folder of images or a glob of images as a camera.

A folder of photos becomes a clip in which each photo stays `hold_frames` frames; the demo builds
its sample input this way.

Frames are stamped on the gateway's one clock, the wall clock, so a face seen in a clip and a card
swiped on a live reader can fuse. `realtime` frames are stamped when the supervisor releases them
(as a live camera's are). `lossless` and `fast` frames keep the clip's own spacing (start + index /
fps), so tracking and motion timings do not depend on how fast the machine plays them; the start is
placed so that no stamp is ever ahead of the wall clock: `lossless` starts at the first frame (and
is never released early), `fast` is placed so the whole pass has already happened when it starts.
"""

from __future__ import annotations

import glob
import logging
import math
import time
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from drivers.camera.base import DriverStatus
from drivers.camera.config import FileCameraConfig
from drivers.camera.imageops import as_bgr, frozen, resize
from edge.errors import DriverError
from edge.types import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
_DEFAULT_IMAGE_FPS = 10.0
_DEFAULT_VIDEO_FPS = 25.0


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def list_images(path: str, *, recursive: bool = False) -> list[Path]:
    """The image files a folder, a glob or a single image path names, in sorted order."""
    if _is_glob(path):
        found = [Path(p) for p in glob.glob(path, recursive=True)]
    else:
        root = Path(path)
        found = list(root.rglob("*") if recursive else root.iterdir()) if root.is_dir() else [root]
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class FileCamera:
    """A camera that reads a video file or a sequence of images (see module docstring)."""

    def __init__(self, config: FileCameraConfig) -> None:
        self._config = config
        self._images: list[Path] | None = None
        self._capture: cv2.VideoCapture | None = None
        self._opened = False
        self._fps = config.fps or _DEFAULT_IMAGE_FPS
        self._t0: float | None = None
        self._index = 0  # frames emitted since creation, across loops and reopens
        self._pos = 0  # position in the current pass: image frame (with holds) or video frame
        self._held: NDArray[np.uint8] | None = None
        self._held_for = -1
        self._emitted_this_pass = 0
        self._size: tuple[int, int] | None = None

    @property
    def source_id(self) -> str:
        """The camera id frames carry."""
        return self._config.id

    @property
    def lossless(self) -> bool:
        """A file played `lossless` or `fast` waits for the pipeline instead of dropping frames."""
        return self._config.pace != "realtime"

    @property
    def pace_fps(self) -> float | None:
        """The clip's rate, except when playing as fast as possible (None)."""
        return None if self._config.pace == "fast" else self._fps

    @property
    def status(self) -> DriverStatus:
        """The driver's view of its source."""
        w, h = self._size if self._size else (None, None)
        return DriverStatus(
            kind="file",
            target=self._config.path,
            opened=self._opened,
            frames_read=self._index,
            width=w,
            height=h,
            nominal_fps=self._fps,
        )

    def open(self) -> None:
        """Find the images or open the video; a reopen resumes where the last connection stopped."""
        self.close()
        path = self._config.path
        if _is_glob(path) or Path(path).is_dir() or Path(path).suffix.lower() in IMAGE_SUFFIXES:
            images = list_images(path, recursive=self._config.recursive)
            if not images:
                raise DriverError(f"camera {self.source_id}: no images at {path}")
            self._images = images
            self._held, self._held_for = None, -1  # the listing may have changed since the last open
            self._fps = self._config.fps or _DEFAULT_IMAGE_FPS
        else:
            self._capture = self._open_video(path)
            if self._pos:
                self._capture.set(cv2.CAP_PROP_POS_FRAMES, float(self._pos))
        if self._t0 is None:
            self._t0 = self._pass_start(time.time(), None)
        self._opened = True

    def read(self) -> Frame | None:
        """The next frame, or None at the end of a non-looping source."""
        if not self._opened:
            raise DriverError(f"camera {self.source_id}: read before open")
        image = self._next_image() if self._images is not None else self._next_video_frame()
        if image is None:
            return None
        self._size = (int(image.shape[1]), int(image.shape[0]))
        assert self._t0 is not None
        ts = self._t0 + self._index / self._fps
        if self._config.pace == "fast":
            ts = min(ts, time.time())  # a loop played faster than real time is held to the wall clock
        frame = Frame(self.source_id, self._index, ts, image)
        self._index += 1
        self._emitted_this_pass += 1
        return frame

    def close(self) -> None:
        """Release the video file; idempotent."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._opened = False

    def _open_video(self, path: str) -> cv2.VideoCapture:
        if not Path(path).is_file():
            raise DriverError(f"camera {self.source_id}: no such file {path}")
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            capture.release()
            raise DriverError(f"camera {self.source_id}: cannot open video {path}")
        file_fps = capture.get(cv2.CAP_PROP_FPS)
        ok_fps = math.isfinite(file_fps) and 0.0 < file_fps <= 240.0
        self._fps = self._config.fps or (file_fps if ok_fps else _DEFAULT_VIDEO_FPS)
        return capture

    def _next_image(self) -> NDArray[np.uint8] | None:
        images = self._images
        assert images is not None
        hold = self._config.hold_frames
        while True:
            if self._pos >= len(images) * hold and not self._end_of_pass():
                return None
            i = self._pos // hold
            if i != self._held_for:
                self._held = self._load(images[i])
                self._held_for = i
            if self._held is None:
                # Unreadable image: skip all of its held frames.
                self._pos = (i + 1) * hold
                continue
            self._pos += 1
            return self._held

    def _next_video_frame(self) -> NDArray[np.uint8] | None:
        while True:
            capture = self._capture
            assert capture is not None
            ok, image = capture.read()
            if ok and image is not None:
                self._pos += 1
                return self._resized(as_bgr(image))
            if not self._end_of_pass():
                return None
            capture.release()
            self._capture = self._open_video(self._config.path)

    def _end_of_pass(self) -> bool:
        """At the end of the clip: rewind and return True when looping, else False."""
        if not self._config.loop:
            return False
        if self._emitted_this_pass == 0:
            raise DriverError(f"camera {self.source_id}: no readable frame in {self._config.path}")
        self._pos = 0
        self._emitted_this_pass = 0
        if self._config.pace == "fast" and self._t0 is not None:
            # Place the next pass, like the first, entirely in the past (and after the last one).
            last = self._t0 + (self._index - 1) / self._fps
            self._t0 = self._pass_start(time.time(), last + 1.0 / self._fps) - self._index / self._fps
        return True

    def _pass_start(self, now: float, not_before: float | None) -> float:
        """When the pass that starts now begins on the clip's timeline (see the module docstring)."""
        start = now
        if self._config.pace == "fast":
            n = self._pass_frames()
            start = now - (n - 1) / self._fps if n else now
        return start if not_before is None else max(start, not_before)

    def _pass_frames(self) -> int | None:
        """Frames in one pass of the source; None when the container does not say."""
        if self._images is not None:
            return len(self._images) * self._config.hold_frames
        if self._capture is not None:
            count = self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
            if math.isfinite(count) and count >= 1:
                return int(count)
        return None

    def _load(self, path: Path) -> NDArray[np.uint8] | None:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("camera %s: skipping unreadable image %s", self.source_id, path.name)
            return None
        # Resized once here, not per frame: a held photo is the same picture for all its frames.
        return self._resized(as_bgr(image))

    def _resized(self, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        return frozen(image if self._config.resize is None else resize(image, self._config.resize))
