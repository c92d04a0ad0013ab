"""Test-time variants of a rectified plate line, and their reads combined per character position.

A plate that a gate camera sees small, dark, blurred or compressed often reads right in one
rendering and wrong or unsure in another. Each variant is one more line in the same recogniser
batch (the same width, so one model call); the constrained decodes of all variants then vote per
character position, weighted by confidence, like the frames of a track do (edge.plates.vote).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.plates.ctc import Decoded
from edge.plates.grammar import plate_format
from edge.plates.positions import vote_positions

Line = NDArray[np.uint8]


def clahe(line: Line) -> Line:
    """Contrast-limited histogram equalisation of the lightness (low contrast, haze, glare)."""
    lab = cv2.cvtColor(line, cv2.COLOR_BGR2LAB)
    eq = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(2, 6)).apply(lab[:, :, 0])
    lab[:, :, 0] = eq
    return np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), np.uint8)


def auto_gamma(line: Line) -> Line:
    """Gamma that brings the mean grey level to mid-grey (dark night shots, over-exposed ones)."""
    mean = float(cv2.cvtColor(line, cv2.COLOR_BGR2GRAY).mean()) / 255.0
    if not 0.02 < mean < 0.98:
        return line
    gamma = float(np.clip(np.log(0.5) / np.log(mean), 0.4, 2.5))
    lut = np.clip(((np.arange(256) / 255.0) ** gamma) * 255.0, 0, 255).astype(np.uint8)
    return np.asarray(cv2.LUT(line, lut), np.uint8)


def sharpen(line: Line) -> Line:
    """Unsharp mask (blur from motion or a soft lens)."""
    blur = cv2.GaussianBlur(line, (0, 0), 1.2)
    return np.asarray(cv2.addWeighted(line, 1.6, blur, -0.6, 0), np.uint8)


PIXEL_VARIANTS: dict[str, Callable[[Line], Line]] = {"clahe": clahe, "gamma": auto_gamma, "sharpen": sharpen}
"""Variants computed from the rectified line's pixels; margin variants are re-warped by the reader."""


def warm_up(names: Sequence[str]) -> None:
    """Run the named pixel variants once on a tiny line, so their one-off set-up is paid at start-up:
    OpenCV builds its LAB conversion tables on the first BGR<->LAB call, measured 76-220 ms here, which
    would otherwise land on the first weak plate a gate reads (its decision that much later)."""
    line = np.zeros((2, 2, 3), np.uint8)
    for name in names:
        if name in PIXEL_VARIANTS:
            PIXEL_VARIANTS[name](line)


def combine(reads: Sequence[Decoded | None]) -> Decoded | None:
    """One read from the variants' reads: a per-position, confidence-weighted vote among the reads
    of the most supported length; the best single read when the vote is not a valid plate."""
    got = [r for r in reads if r is not None and r.text]
    if not got:
        return None
    if len(got) == 1:
        return got[0]
    same, text, confs = vote_positions(got)
    if plate_format(text) is None:
        return max(same, key=lambda r: r.min_confidence)
    return Decoded(text, confs, max(r.log_prob for r in same), _voted_shares(same, text))


def _voted_shares(same: Sequence[Decoded], text: str) -> tuple[float, ...]:
    """Each voted character's class share, averaged like its confidence: a read that put another
    character there counts as share 0 (so a split position is discounted)."""
    if not all(len(r.char_shares) == len(text) for r in same):
        return ()
    return tuple(sum(r.char_shares[i] for r in same if r.text[i] == c) / len(same) for i, c in enumerate(text))
