"""Plate colour and layout from the pixels of the rectified plate (no model).

The background colour dominates a plate: the characters cover well under half of it. Hue votes of
the chromatic pixels, weighted by saturation, pick blue, yellow or green; text polarity (light on dark
for blue and black plates) weighs on the vote, and a plate with too little chroma is white or black.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.compat import StrEnum


class PlateColour(StrEnum):
    """Background colour of a plate."""

    BLUE = "blue"  # small cars
    YELLOW = "yellow"  # large vehicles, coaches (学)
    GREEN = "green"  # new-energy (gradient green for small, yellow-green for large)
    WHITE = "white"  # police, military, armed police
    BLACK = "black"  # foreign-owned, consulate (领), Hong Kong/Macau (港 澳)
    UNKNOWN = "unknown"


class PlateLayout(StrEnum):
    """Number of text rows."""

    SINGLE = "single"
    DOUBLE = "double"


@dataclass(frozen=True, slots=True)
class ColourEstimate:
    """The colour and the share of chromatic weight that voted for it (1.0 for white/black)."""

    colour: PlateColour
    support: float
    gradient: bool = False  # green only: the new-energy gradient (pale top, saturated bottom) is there


# OpenCV hue is 0-179. Blue plates photograph from cyan-blue (~95) to violet-blue (~130).
_HUE_BINS = ((PlateColour.YELLOW, 8, 35), (PlateColour.GREEN, 35, 92), (PlateColour.BLUE, 92, 135))
_MIN_SATURATION = 20
_MIN_VALUE = 40
# Below this 75th-percentile saturation a plate has no background colour (white or black).
_ACHROMATIC_P75 = 32
_POLARITY_WEIGHT = 3.0


def classify_colour(plate_bgr: NDArray[np.uint8]) -> ColourEstimate:
    """Estimate the background colour of a rectified plate (BGR)."""
    if plate_bgr.ndim != 3 or plate_bgr.shape[2] != 3 or plate_bgr.size == 0:
        return ColourEstimate(PlateColour.UNKNOWN, 0.0)
    hsv = cv2.cvtColor(plate_bgr, cv2.COLOR_BGR2HSV).reshape(-1, 3)
    hue = hsv[:, 0].astype(np.int32)
    sat = hsv[:, 1].astype(np.float32)
    val = hsv[:, 2].astype(np.float32)
    lit = val >= _MIN_VALUE
    if not lit.any():
        return ColourEstimate(PlateColour.BLACK, 1.0)
    light_text = _light_text(plate_bgr)
    if float(np.percentile(sat[lit], 75)) < _ACHROMATIC_P75:
        return ColourEstimate(PlateColour.BLACK if light_text else PlateColour.WHITE, 1.0)
    weight = np.where(lit & (sat >= _MIN_SATURATION), sat, 0.0)
    total = float(weight.sum())
    if total <= 0.0:
        return ColourEstimate(PlateColour.UNKNOWN, 0.0)
    votes = {c: float(weight[(hue >= lo) & (hue < hi)].sum()) for c, lo, hi in _HUE_BINS}
    # Blue plates carry light characters on a dark background; yellow and green carry dark ones.
    # Night shots of blue plates often turn teal, so text polarity weighs on the hue vote.
    for c in votes:
        if (c is PlateColour.BLUE) == light_text:
            votes[c] *= _POLARITY_WEIGHT
    total = sum(votes.values())
    if total <= 0.0:
        return ColourEstimate(PlateColour.UNKNOWN, 0.0)
    best = max(votes, key=lambda c: votes[c])
    gradient = best is PlateColour.GREEN and new_energy_gradient(
        np.asarray(hsv[:, 1], np.uint8).reshape(plate_bgr.shape[:2]))
    return ColourEstimate(best, votes[best] / total, gradient)


# Small new-energy plates fade from near-white at the top to green at the bottom: on CCPD's green
# plates the lower rows are 2.5-6x as saturated as the upper ones; blue plates that photograph teal
# (and read as green by hue) are flat (0.9-1.1x).
_GRADIENT_RATIO = 1.6


def new_energy_gradient(saturation: NDArray[np.uint8]) -> bool:
    """Whether a plate's saturation (HxW) rises from top to bottom like a new-energy plate's."""
    h, w = saturation.shape[:2]
    if h < 8 or w < 8:
        return False
    cols = slice(w // 16, w - w // 16)
    top = float(saturation[h // 10 : max(h // 10 + 1, h * 35 // 100), cols].mean())
    bottom = float(saturation[h * 65 // 100 : max(h * 65 // 100 + 1, h * 9 // 10), cols].mean())
    return bottom >= _GRADIENT_RATIO * max(top, 1.0)


def _light_text(plate_bgr: NDArray[np.uint8]) -> bool:
    """Whether the characters are lighter than the background (Otsu split; text is the minority)."""
    h, w = plate_bgr.shape[:2]
    # The middle rows are mostly characters and background; frames and rivets sit at the edges.
    core = plate_bgr[h // 4 : max(h // 4 + 1, 3 * h // 4), w // 12 : max(w // 12 + 1, 11 * w // 12)]
    grey = cv2.cvtColor(core, cv2.COLOR_BGR2GRAY)
    _, mask = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright_share = float(np.count_nonzero(mask)) / mask.size
    return bright_share < 0.5
