"""How useful a face sample is for recognition: size, sharpness and frontalness, each in [0, 1].

Used to pick the best few frames of a track to embed. The scores are monotone heuristics, not
calibrated probabilities; only their order matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.types import Detection

# Faces narrower than MIN_PX are nearly useless to SFace; from GOOD_PX on, size stops mattering.
MIN_PX = 20.0
GOOD_PX = 80.0
# Variance of the Laplacian on the 112x112 grey crop at which sharpness scores 0.5.
SHARPNESS_HALF = 60.0
# Share of the combined score per component (weights of a weighted geometric mean).
WEIGHTS = (0.3, 0.3, 0.4)


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """Component scores and their combination, all in [0, 1]; higher is better."""

    score: float
    size: float
    sharpness: float
    frontalness: float


def size_score(det: Detection) -> float:
    """0 below MIN_PX of face width/height (the smaller), 1 from GOOD_PX, linear between."""
    side = min(det.box.width, det.box.height)
    return float(np.clip((side - MIN_PX) / (GOOD_PX - MIN_PX), 0.0, 1.0))


def laplacian_variance(aligned: NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of the grey aligned crop (higher is sharper)."""
    grey = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY) if aligned.ndim == 3 else aligned
    # CV_16S holds every 3x3 Laplacian of uint8 exactly (|v| <= 1020) and is cheaper than CV_64F:
    # the same variance, bit for bit, on every detection of every frame.
    _, std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))
    return float(std[0, 0]) ** 2


def sharpness_score(aligned: NDArray[np.uint8]) -> float:
    """Laplacian variance v mapped to v / (v + SHARPNESS_HALF)."""
    v = laplacian_variance(aligned)
    return v / (v + SHARPNESS_HALF)


def frontalness_score(keypoints: NDArray[Any]) -> float:
    """1 for a frontal face, falling with yaw (nose and mouth off the eyes' midline) and pitch.

    Measured in the eyes' own frame, so in-plane rotation (roll) does not count: alignment undoes it.
    Plain float arithmetic on the ten coordinates (the same float64 operations as the vector form):
    this runs for every detection of every frame, where numpy's per-call cost on 2-vectors was
    most of its time.
    """
    k = np.asarray(keypoints, np.float64).reshape(5, 2).tolist()
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = k
    ax, ay = rx - lx, ry - ly
    eye_dist = math.hypot(ax, ay)
    if eye_dist < 1e-6:
        return 0.0
    ux, uy = ax / eye_dist, ay / eye_dist
    vx, vy = -uy, ux
    ex, ey = (lx + rx) / 2, (ly + ry) / 2
    mx, my = (mlx + mrx) / 2, (mly + mry) / 2
    # Yaw: the nose tip's sideways offset from the eyes' midpoint, in half eye distances.
    yaw = abs((nx - ex) * ux + (ny - ey) * uy) / (eye_dist / 2)
    # Pitch: where the nose sits between the eye line and the mouth line (template: ~0.49).
    mouth_depth = (mx - ex) * vx + (my - ey) * vy
    if mouth_depth <= 1e-6:
        return 0.0
    pitch = abs(((nx - ex) * vx + (ny - ey) * vy) / mouth_depth - 0.49) / 0.3
    return min(max(1.0 - yaw, 0.0), 1.0) * min(max(1.0 - pitch, 0.0), 1.0)


def _combine(size: float, sharp: float, frontal: float) -> float:
    # Plain floats: this runs for every detection of every frame; numpy on 3 numbers costs more.
    combined = 1.0
    for part, weight in zip((size, sharp, frontal), WEIGHTS, strict=True):
        combined *= min(max(part, 0.0), 1.0) ** weight
    return combined


def assess(det: Detection, aligned: NDArray[np.uint8]) -> FaceQuality:
    """Score one detected face given its aligned crop."""
    size = size_score(det)
    sharp = sharpness_score(aligned)
    frontal = frontalness_score(det.keypoints)
    return FaceQuality(score=_combine(size, sharp, frontal), size=size, sharpness=sharp, frontalness=frontal)


def score_bound(det: Detection) -> float:
    """An upper bound of `assess(det, crop).score` for any crop, from the detection alone.

    Size and frontalness come from the box and landmarks; sharpness is taken at its ceiling, 1
    (v / (v + SHARPNESS_HALF) stays below it). The same products in the same order as `assess`,
    and IEEE rounding is monotone, so the bound holds bit for bit: a tracker can skip aligning a
    face whose bound cannot beat the samples it already keeps.
    """
    return _combine(size_score(det), 1.0, frontalness_score(det.keypoints))
