"""A synthetic camera: rectangles moving across a grey field, with scripted failures for tests."""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from drivers.camera.base import DriverStatus
from drivers.camera.config import FakeCameraConfig
from drivers.camera.imageops import frozen
from edge.errors import DriverError
from edge.types import Box, Frame

# Far from the grey field in luminance too, so a grey motion gate sees them as a camera would.
_COLOURS = ((235, 235, 235), (20, 20, 20), (0, 230, 230), (230, 230, 0))


class FakeCamera:
    """Deterministic frames: frame `i` always shows the same picture, whatever failed before."""

    def __init__(self, config: FakeCameraConfig) -> None:
        self._config = config
        self._opens = 0
        self._opened = False
        self._index = 0
        self._read_this_connection = 0
        self._t0: float | None = None

    @property
    def source_id(self) -> str:
        """The camera id frames carry."""
        return self._config.id

    @property
    def lossless(self) -> bool:
        """Never: this source behaves like a live device (latest frame wins)."""
        return False

    @property
    def pace_fps(self) -> float | None:
        """The configured rate when paced in real time, else None."""
        return self._config.fps if self._config.pace == "realtime" else None

    @property
    def status(self) -> DriverStatus:
        """The driver's view of its synthetic device."""
        return DriverStatus(
            kind="fake",
            target="fake",
            opened=self._opened,
            frames_read=self._index,
            width=self._config.width,
            height=self._config.height,
            nominal_fps=self._config.fps,
        )

    @property
    def opens(self) -> int:
        """Calls to `open`, failed ones included."""
        return self._opens

    def open(self) -> None:
        """Open; the first `fail_opens` calls fail."""
        self._opens += 1
        if self._opens <= self._config.fail_opens:
            raise DriverError(f"camera {self.source_id}: scripted open failure {self._opens}")
        if self._t0 is None:
            self._t0 = time.time()
        self._opened = True
        self._read_this_connection = 0

    def read(self) -> Frame | None:
        """The next synthetic frame; None after `frames` frames."""
        if not self._opened:
            raise DriverError(f"camera {self.source_id}: read before open")
        cfg = self._config
        if cfg.frames is not None and self._index >= cfg.frames:
            return None
        if cfg.fail_after_frames is not None and self._read_this_connection >= cfg.fail_after_frames:
            self._opened = False
            raise DriverError(f"camera {self.source_id}: scripted stream loss")
        assert self._t0 is not None
        frame = Frame(self.source_id, self._index, self._t0 + self._index / cfg.fps, frozen(self.render(self._index)))
        self._index += 1
        self._read_this_connection += 1
        return frame

    def close(self) -> None:
        """Close; idempotent."""
        self._opened = False

    def boxes_at(self, index: int) -> list[Box]:
        """Where the rectangles are in frame `index` (ground truth for tracker tests)."""
        cfg = self._config
        side = max(8, min(cfg.width, cfg.height) // 6)
        span = cfg.width + side
        boxes = []
        for k in range(cfg.objects):
            # Objects start spread across the picture (the first at the left edge), each in its
            # own horizontal lane; one that leaves on the right comes back in from the left.
            x = (side + k * span / cfg.objects + index * cfg.speed_px) % span - side
            lane = (k + 1) * cfg.height / (cfg.objects + 1)
            y = lane - side / 2
            boxes.append(Box(float(x), float(y), float(x + side), float(y + side)))
        return boxes

    def render(self, index: int) -> NDArray[np.uint8]:
        """The picture of frame `index`."""
        cfg = self._config
        image = np.full((cfg.height, cfg.width, 3), 96, dtype=np.uint8)
        for k, box in enumerate(self.boxes_at(index)):
            x1, y1 = max(0, int(box.x1)), max(0, int(box.y1))
            x2, y2 = min(cfg.width, int(box.x2)), min(cfg.height, int(box.y2))
            if x2 > x1 and y2 > y1:
                image[y1:y2, x1:x2] = _COLOURS[k % len(_COLOURS)]
        return image
