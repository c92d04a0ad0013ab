"""Rectification: perspective warp of a plate from its 4 corners, inner text band, double-row stitch.

Pure OpenCV/numpy. Corners are ordered top-left, top-right, bottom-right, bottom-left.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

# A Chinese single-row plate is 440x140 mm, a double-row plate 440x220 mm.
SINGLE_ROW_ASPECT = 440.0 / 140.0
DOUBLE_ROW_ASPECT = 440.0 / 220.0
# Below this apparent aspect a plate may be double-row. Yaw squeezes single-row plates too
# (CCPD has them down to 1.9), so this only says "try the double-row reading as well".
AMBIGUOUS_ASPECT = 2.6


@dataclass(frozen=True, slots=True)
class Band:
    """Fractions of the plate trimmed from each side to keep the inner text band."""

    top: float = 0.0
    bottom: float = 0.0
    left: float = 0.0
    right: float = 0.0


FULL = Band()
# Measured on CCPD: about 8 px top/bottom and 4 px sides of a 440x140 warp drop the frame and rivets.
INNER = Band(top=8 / 140, bottom=8 / 140, left=4 / 440, right=4 / 440)
# A test-time variant for small plates, whose detected corners can be a few pixels inside the plate.
WIDE = Band(top=2 / 140, bottom=2 / 140, left=-6 / 440, right=-6 / 440)


def corner_sides(corners: NDArray[np.float32]) -> tuple[float, float]:
    """Mean width and height of the quadrilateral (TL, TR, BR, BL)."""
    c = np.asarray(corners, dtype=np.float64).reshape(4, 2)
    width = (np.linalg.norm(c[1] - c[0]) + np.linalg.norm(c[2] - c[3])) / 2.0
    height = (np.linalg.norm(c[3] - c[0]) + np.linalg.norm(c[2] - c[1])) / 2.0
    return float(width), float(height)


def may_be_double_row(corners: NDArray[np.float32]) -> bool:
    """Whether the quadrilateral is squat enough to be a double-row plate."""
    width, height = corner_sides(corners)
    return height > 0 and width / height < AMBIGUOUS_ASPECT


def warp_band(
    image: NDArray[np.uint8], corners: NDArray[np.float32], out_w: int, out_h: int, band: Band = FULL
) -> NDArray[np.uint8]:
    """Warp the `band` of the plate with these corners to an out_w x out_h image in one resampling."""
    keep_w = max(1e-3, 1.0 - band.left - band.right)
    keep_h = max(1e-3, 1.0 - band.top - band.bottom)
    full_w, full_h = out_w / keep_w, out_h / keep_h
    x0, y0 = -band.left * full_w, -band.top * full_h
    dst = np.array([[x0, y0], [x0 + full_w, y0], [x0 + full_w, y0 + full_h], [x0, y0 + full_h]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(np.asarray(corners, dtype=np.float32).reshape(4, 2), dst)
    warped = cv2.warpPerspective(image, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(warped, np.uint8)


def stitch_double_row(plate: NDArray[np.uint8], split: float = 5 / 12, overlap: float = 1 / 12) -> NDArray[np.uint8]:
    """Turn a rectified double-row plate into one text line: upper row beside the lower row.

    The upper row (province and letter) takes the top `split` of the plate, the lower row the rest;
    both overlap by `overlap` so a split in the wrong place does not cut characters. The upper row
    is scaled to the lower row's height and put on its left.
    """
    h, w = plate.shape[:2]
    top_end = max(1, round(h * (split + overlap)))
    low_start = min(h - 1, round(h * (split - overlap)))
    upper = plate[:top_end]
    lower = plate[low_start:]
    # The upper row's two characters sit in the middle half of the plate's width.
    upper = upper[:, round(w * 0.2) : round(w * 0.8)]
    lh = lower.shape[0]
    uw = max(1, round(upper.shape[1] * lh / max(upper.shape[0], 1)))
    upper = np.asarray(cv2.resize(upper, (uw, lh), interpolation=cv2.INTER_LINEAR), np.uint8)
    line: NDArray[np.uint8] = np.ascontiguousarray(np.concatenate([upper, lower], axis=1))
    return line
