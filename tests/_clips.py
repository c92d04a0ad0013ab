"""Test clips assembled from real frames: a real scene, a real object left in it, light ramps.

The scenes are the real videos of ../shared/data/video (people walking to a table; cars driving
through a car park); the "left object" is a real photograph (a CCPD car scene, cropped) pasted
into the scene for a set time, as a stall, stacked goods or a parked car would stand there. Frames
are taken at 2 per second (what the obstruction model samples) and looped for long clips.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.types import Frame

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PEOPLE = "video/one-by-one-person-detection.mp4"
CARS = "video/car-detection.mp4"
OBJECT = ("plates/ccpd/hukai97/"
          "003748802682-91_84-220&469_341&511-328&514_224&510_224&471_328&475-10_2_5_22_31_31_27-103-12.jpg")

# Zones (fractions of the image) where people or cars pass but nothing stays: the floor left of
# the table in the people clip, a driving lane in the car park clip.
PEOPLE_ZONE = ((0.04, 0.66), (0.42, 0.66), (0.42, 0.97), (0.04, 0.97))
CARS_ZONE = ((0.30, 0.40), (0.62, 0.40), (0.62, 0.62), (0.30, 0.62))


@lru_cache(maxsize=4)
def scene_frames(rel: str, fps: float = 2.0, width: int = 320) -> tuple[NDArray[np.uint8], ...]:
    """The clip's frames at about `fps`, shrunk to `width` (the model works at 160 px)."""
    cap = cv2.VideoCapture(str(DATA / rel))
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    step = max(1, round(src_fps / fps))
    out: list[NDArray[np.uint8]] = []
    i = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if i % step == 0:
            h = round(img.shape[0] * width / img.shape[1])
            out.append(np.ascontiguousarray(cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)))
        i += 1
    cap.release()
    if not out:
        raise FileNotFoundError(f"no frames in {DATA / rel}")
    return tuple(out)


@lru_cache(maxsize=1)
def object_photo() -> NDArray[np.uint8]:
    """The real photo pasted as the left object (the car's front half of a CCPD scene)."""
    img = cv2.imread(str(DATA / OBJECT))
    if img is None:
        raise FileNotFoundError(DATA / OBJECT)
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[int(h * 0.25):int(h * 0.75), int(w * 0.1):int(w * 0.9)])


@dataclass(frozen=True)
class Clip:
    """A scene looped for `duration_s`, with an object in `obj_box` (fractions) during [obj_on, obj_off),
    a light gain that ramps down to `dim` from `ramp[0]` to `ramp[1]` and back up by `ramp[3]`, and
    optionally a camera knocked aside at `moved_at`."""

    scene: str
    duration_s: float
    obj_on: float | None = None
    obj_off: float | None = None
    obj_box: tuple[float, float, float, float] = (0.08, 0.70, 0.34, 0.95)
    dim: float = 1.0
    ramp: tuple[float, float, float, float] | None = None
    fps: float = 2.0
    moved_at: float | None = None
    """From this time on the camera points slightly elsewhere (12 % right, 8 % down): knocked."""

    def gain(self, t: float) -> float:
        """The light level at clip time `t` (1.0: as filmed)."""
        if self.ramp is None:
            return 1.0
        a, b, c, d = self.ramp
        if t < a or t >= d:
            return 1.0
        if t < b:
            return 1.0 + (self.dim - 1.0) * (t - a) / (b - a)
        if t < c:
            return self.dim
        return self.dim + (1.0 - self.dim) * (t - c) / (d - c)

    def frames(self, t0: float = 1.8e9) -> Iterator[Frame]:
        """The clip's frames, timestamped from `t0` (camera time in seconds)."""
        base = scene_frames(self.scene, self.fps)
        n = int(self.duration_s * self.fps)
        h, w = base[0].shape[:2]
        x1, y1, x2, y2 = (round(self.obj_box[0] * w), round(self.obj_box[1] * h),
                          round(self.obj_box[2] * w), round(self.obj_box[3] * h))
        patch = cv2.resize(object_photo(), (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
        for i in range(n):
            t = i / self.fps
            img = base[i % len(base)].copy()
            if self.obj_on is not None and self.obj_on <= t < (self.obj_off if self.obj_off is not None else 1e18):
                img[y1:y2, x1:x2] = patch
            if self.moved_at is not None and t >= self.moved_at:
                shift = np.float32([[1, 0, w * 0.12], [0, 1, h * 0.08]])
                img = cv2.warpAffine(img, shift, (w, h), borderMode=cv2.BORDER_REFLECT)
            g = self.gain(t)
            if g != 1.0:
                img = np.clip(img.astype(np.float32) * g, 0, 255).astype(np.uint8)
            yield Frame("cam1", i, t0 + t, img)


def letterboxed(photo: Path) -> NDArray[np.uint8]:
    """A photo scaled to fit a 640x480 frame, top-left, the rest black: a file camera's frame of it."""
    img = cv2.imread(str(photo))
    assert img is not None, photo
    scale = min(640 / img.shape[1], 480 / img.shape[0])
    img = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)))
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[: img.shape[0], : img.shape[1]] = img
    return canvas
