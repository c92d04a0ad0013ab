"""Small image helpers shared by the camera drivers."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from drivers.camera.config import ResizeConfig


def as_bgr(image: NDArray[Any]) -> NDArray[np.uint8]:
    """A contiguous HxWx3 uint8 BGR image from what OpenCV decoded (grey or BGRA included)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image, dtype=np.uint8)


def frozen(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Mark a frame's pixels read-only: frames are values, and a held photo is shared by many frames."""
    image.flags.writeable = False
    return image


def resize(image: NDArray[np.uint8], config: ResizeConfig) -> NDArray[np.uint8]:
    """Resize to the configured size; `fit` keeps the aspect ratio and centres on black."""
    h, w = image.shape[:2]
    if (w, h) == (config.width, config.height):
        return image
    if config.mode == "stretch":
        interp = cv2.INTER_AREA if config.width < w else cv2.INTER_LINEAR
        return np.asarray(cv2.resize(image, (config.width, config.height), interpolation=interp), np.uint8)
    scale = min(config.width / w, config.height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    scaled = cv2.resize(image, (nw, nh), interpolation=interp)
    canvas = np.zeros((config.height, config.width, 3), dtype=np.uint8)
    y0, x0 = (config.height - nh) // 2, (config.width - nw) // 2
    canvas[y0 : y0 + nh, x0 : x0 + nw] = scaled
    return canvas
