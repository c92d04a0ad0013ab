"""Gate-camera test sets made from the shared CCPD scenes: letterboxed 720p and degraded, seeded.

A gate camera that is not zoomed in sees a plate 60-100 px wide in a 1280x720 frame, and sees it
through motion blur, heavy JPEG compression, low light with sensor noise, a cheap sensor's low
resolution and a tilted mount. Each degradation here is drawn per scene from a seeded generator,
so a set is the same on every run and several seeds show the spread (never tune to one seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from bench._common import FRAME_H, FRAME_W, letterbox


@dataclass(frozen=True, slots=True)
class Degradation:
    """What was done to one image (for the report), and the image."""

    steps: tuple[str, ...]
    image: NDArray[np.uint8] = field(repr=False)


def motion_blur(image: NDArray[np.uint8], length: int, angle_deg: float) -> NDArray[np.uint8]:
    """A linear motion blur of `length` px at `angle_deg`."""
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle_deg, 1.0)
    k = cv2.warpAffine(k, rot, (length, length))
    k /= max(float(k.sum()), 1e-6)
    return np.asarray(cv2.filter2D(image, -1, k), np.uint8)


def jpeg(image: NDArray[np.uint8], quality: int) -> NDArray[np.uint8]:
    """Encode and decode at a JPEG quality."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return image
    return np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR), np.uint8)


def low_light(image: NDArray[np.uint8], gain: float, gamma: float, noise: float,
              rng: np.random.Generator) -> NDArray[np.uint8]:
    """Darken (gain, then gamma > 1) and add Gaussian sensor noise of std `noise` grey levels."""
    x = (image.astype(np.float32) / 255.0) * gain
    x = np.power(np.clip(x, 0.0, 1.0), gamma) * 255.0
    x += rng.normal(0.0, noise, x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def down_up(image: NDArray[np.uint8], long_side: int) -> NDArray[np.uint8]:
    """Downscale to `long_side` px and back (a low-resolution sensor or stream)."""
    h, w = image.shape[:2]
    s = long_side / max(h, w)
    if s >= 1.0:
        return image
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), np.uint8)


def tilt(image: NDArray[np.uint8], angle_deg: float) -> NDArray[np.uint8]:
    """Rotate about the centre (a camera mounted off level)."""
    h, w = image.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, 1.0)
    return np.asarray(cv2.warpAffine(image, rot, (w, h), borderMode=cv2.BORDER_REPLICATE), np.uint8)


def degrade(image: NDArray[np.uint8], rng: np.random.Generator, *, mild: bool = False) -> Degradation:
    """A random mix of gate-camera degradations: each applied with probability 1/2 (at least one).

    Ranges: motion blur 5-11 px, JPEG quality 25-60, low light (gain 0.35-0.7, gamma 1.3-2.0, noise
    3-9 grey levels), down-scaling to a 320-480 px long side and back, tilt within ±8°. `mild`
    halves the blur, keeps JPEG at 40-70 and the long side at 480-640 (one frame of a moving car).
    """
    steps: list[str] = []
    x = image
    chosen = rng.random(5) < 0.5
    if not chosen.any():
        chosen[rng.integers(0, 5)] = True
    if chosen[4]:
        a = float(rng.uniform(-8, 8))
        x, _ = tilt(x, a), steps.append(f"tilt {a:+.1f}")
    if chosen[0]:
        n = int(rng.integers(3, 7)) if mild else int(rng.integers(5, 12))
        ang = float(rng.uniform(0, 180))
        x, _ = motion_blur(x, n, ang), steps.append(f"blur {n}px@{ang:.0f}")
    if chosen[3]:
        side = int(rng.integers(480, 641)) if mild else int(rng.integers(320, 481))
        x, _ = down_up(x, side), steps.append(f"down {side}")
    if chosen[2]:
        g, gm, nz = float(rng.uniform(0.35, 0.7)), float(rng.uniform(1.3, 2.0)), float(rng.uniform(3, 9))
        x, _ = low_light(x, g, gm, nz, rng), steps.append(f"dark x{g:.2f} g{gm:.1f} n{nz:.0f}")
    if chosen[1]:
        q = int(rng.integers(40, 71)) if mild else int(rng.integers(25, 61))
        x, _ = jpeg(x, q), steps.append(f"jpeg {q}")
    return Degradation(tuple(steps), x)


def degrade_crop(crop: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    """A tight plate crop degraded at twice its size and brought back: motion blur 3-6 px and low
    light (each with probability 0.6), then JPEG 25-60 (the calibration set of edge.plates.fusion)."""
    h, w = crop.shape[:2]
    x = np.asarray(cv2.resize(crop, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC), np.uint8)
    if rng.random() < 0.6:
        x = motion_blur(x, int(rng.integers(3, 7)), float(rng.uniform(0, 180)))
    if rng.random() < 0.6:
        x = low_light(x, float(rng.uniform(0.35, 0.7)), float(rng.uniform(1.3, 2.0)), float(rng.uniform(3, 9)), rng)
    x = jpeg(x, int(rng.integers(25, 61)))
    return np.asarray(cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA), np.uint8)


def letterboxed_720p(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The scene fitted into a 1280x720 frame (a camera that is not zoomed in)."""
    return letterbox(image, FRAME_W, FRAME_H)


def plate_width_in_720p(image_shape: tuple[int, ...], x1: float, x2: float) -> float:
    """How wide a labelled plate box is once the scene is letterboxed into 1280x720."""
    h, w = image_shape[:2]
    return (x2 - x1) * min(FRAME_W / w, FRAME_H / h)


def seeds(n: int, base: int = 15) -> list[int]:
    """`n` fixed seeds."""
    return [base * 1000 + i for i in range(n)]


def spread(values: list[int]) -> tuple[int, int, float]:
    """min, max and mean of per-seed counts."""
    return min(values), max(values), round(sum(values) / len(values), 2) if values else math.nan
