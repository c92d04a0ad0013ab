"""Applies a camera's detection masks to its frames: masked pixels become black before anything sees them.

The camera worker calls `apply` first, so the motion gate, the detectors, the zones, the aiming gauge
and the console's preview all see the masked frame. The pixel mask is made once per image size; the
polygons can be replaced while the worker runs (the console's editor), under a lock.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.types import Frame

Polygon = tuple[tuple[float, float], ...]


def polygon_pixels(polygons: Sequence[Polygon], height: int, width: int) -> NDArray[np.uint8]:
    """1 inside any of the polygons (fractions of the image), 0 elsewhere."""
    mask = np.zeros((height, width), np.uint8)
    pts = [np.array([[round(x * (width - 1)), round(y * (height - 1))] for x, y in p], np.int32) for p in polygons]
    if pts:
        cv2.fillPoly(mask, pts, 1)
    return mask


class FrameMasker:
    """One camera's masks (a worker's `prepare` step)."""

    def __init__(self, polygons: Sequence[Polygon] = ()) -> None:
        self._lock = threading.Lock()
        self._polygons: tuple[Polygon, ...] = tuple(polygons)
        self._cache: tuple[tuple[int, int], NDArray[np.bool_], tuple[slice, slice]] | None = None

    @property
    def polygons(self) -> tuple[Polygon, ...]:
        """The polygons in force."""
        return self._polygons

    def set_polygons(self, polygons: Sequence[Polygon]) -> bool:
        """Replace the masks; returns whether they changed."""
        new = tuple(tuple((float(x), float(y)) for x, y in p) for p in polygons)
        with self._lock:
            if new == self._polygons:
                return False
            self._polygons, self._cache = new, None
        return True

    def apply(self, frame: Frame) -> Frame:
        """Black out the masked pixels of `frame` in place (the worker owns the frame) and return it."""
        if not self._polygons:
            return frame
        h, w = frame.shape
        with self._lock:
            if self._cache is None or self._cache[0] != (h, w):
                pixels = polygon_pixels(self._polygons, h, w)
                ys, xs = np.nonzero(pixels)
                # Only the masks' bounding box is touched: a small mask costs a small copy.
                box = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1)) \
                    if len(ys) else (slice(0, 0), slice(0, 0))
                self._cache = ((h, w), pixels[box].astype(bool), box)
            _, inside, box = self._cache
        if not frame.image.flags.writeable:  # a driver's shared, read-only buffer: mask a copy
            frame = dataclasses.replace(frame, image=frame.image.copy())
        region = frame.image[box]
        region[inside] = 0
        return frame
