"""YuNet face detector adapter (OpenCV Zoo 2023mar): pure pre- and post-processing.

Input: BGR 0-255 as float32 NCHW, zero-padded right/bottom to a multiple of 32 (the derived model
accepts any such size). Outputs per stride s in (8, 16, 32): cls_s and obj_s [1,N,1] (already
sigmoided), bbox_s [1,N,4], kps_s [1,N,10], one row per grid cell in row-major order.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import ModelError
from edge.types import Box, Detection
from edge.vision import Runner
from edge.vision.nms import nms

STRIDES: tuple[int, ...] = (8, 16, 32)
PAD_MULTIPLE = 32


@dataclass(frozen=True, slots=True)
class YuNetInput:
    """A preprocessed image and how to map detections back to the original pixels."""

    tensor: NDArray[np.float32] = field(repr=False)  # [1,3,H,W]
    image_hw: tuple[int, int]  # the original image
    scale_xy: tuple[float, float]  # detection pixels per original pixel, per axis
    shrunk: NDArray[np.uint8] | None = field(default=None, repr=False)
    """The downscaled copy detection ran on, when it is an exact whole-factor block average of the
    image (INTER_AREA at 1/k on both axes, e.g. 1280x720 -> 640x360): alignment reuses it."""
    shrink_factor: int = 1

    @property
    def padded_hw(self) -> tuple[int, int]:
        """(H, W) of the padded network input."""
        return (int(self.tensor.shape[2]), int(self.tensor.shape[3]))


@functools.lru_cache(maxsize=32)
def _grid(rows: int, cols: int) -> NDArray[np.float32]:
    """Cell (col, row) for each anchor of one stride, row-major, cached per input size."""
    r, c = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
    grid = np.stack([c.ravel(), r.ravel()], axis=1)
    grid.flags.writeable = False
    return grid


class YuNet:
    """Pre/post-processing for YuNet; `detect` runs it through any `Runner`."""

    def __init__(
        self,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        max_side: int | None = None,
        top_k: int = 5000,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0 or not 0.0 <= nms_threshold <= 1.0:
            raise ValueError("score and NMS thresholds must lie in [0, 1]")
        if max_side is not None and max_side < PAD_MULTIPLE:
            raise ValueError(f"max_side must be at least {PAD_MULTIPLE}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.top_k = top_k

    def preprocess(self, image: NDArray[np.uint8]) -> YuNetInput:
        """BGR HxWx3 uint8 → padded float32 NCHW, downscaled first if larger than `max_side`."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"YuNet expects an HxWx3 uint8 BGR image, got {image.shape} {image.dtype}")
        h, w = int(image.shape[0]), int(image.shape[1])
        if h == 0 or w == 0:
            raise ValueError("empty image")
        det = image
        factor = 1
        if self.max_side is not None and max(h, w) > self.max_side:
            f = self.max_side / max(h, w)
            size = (max(1, round(w * f)), max(1, round(h * f)))
            det = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
            k = w // size[0]
            if size[0] * k == w and size[1] * k == h:
                factor = k  # a whole factor on both axes: each pixel is the mean of a k x k block
        dh, dw = int(det.shape[0]), int(det.shape[1])
        ph = -(-dh // PAD_MULTIPLE) * PAD_MULTIPLE
        pw = -(-dw // PAD_MULTIPLE) * PAD_MULTIPLE
        tensor = np.zeros((1, 3, ph, pw), np.float32)
        # One contiguous plane at a time: about twice as fast as assigning the HWC->CHW transposed view.
        for c, plane in enumerate(cv2.split(det)):
            tensor[0, c, :dh, :dw] = plane
        return YuNetInput(tensor, (h, w), (dw / w, dh / h), det if factor > 1 else None, factor)

    def postprocess(self, outputs: Mapping[str, NDArray[Any]], inp: YuNetInput) -> list[Detection]:
        """Decode the per-stride outputs, threshold, NMS, and map back to original pixels."""
        ph, pw = inp.padded_hw
        boxes: list[NDArray[np.float32]] = []
        kpss: list[NDArray[np.float32]] = []
        scores: list[NDArray[np.float32]] = []
        for s in STRIDES:
            rows, cols = ph // s, pw // s
            try:
                cls = outputs[f"cls_{s}"].reshape(-1)
                obj = outputs[f"obj_{s}"].reshape(-1)
                bbox = outputs[f"bbox_{s}"].reshape(-1, 4)
                kps = outputs[f"kps_{s}"].reshape(-1, 10)
            except (KeyError, ValueError) as exc:
                raise ModelError(f"unexpected YuNet outputs for stride {s}: {exc}") from exc
            if not cls.shape[0] == obj.shape[0] == bbox.shape[0] == kps.shape[0] == rows * cols:
                raise ModelError(f"YuNet stride {s}: {cls.shape[0]} anchors for a {rows}x{cols} grid")
            score = np.sqrt(np.clip(cls, 0.0, 1.0) * np.clip(obj, 0.0, 1.0))
            idx = np.flatnonzero(score >= self.score_threshold)
            if idx.size == 0:
                continue
            grid = _grid(rows, cols)[idx]
            b = bbox[idx].astype(np.float32)
            centre = (grid + b[:, :2]) * s
            size = np.exp(b[:, 2:4]) * s
            boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            k = kps[idx].astype(np.float32).reshape(-1, 5, 2)
            kpss.append((k + grid[:, None, :]) * s)
            scores.append(score[idx].astype(np.float32))
        if not scores:
            return []
        all_boxes = np.concatenate(boxes)
        all_kps = np.concatenate(kpss)
        all_scores = np.concatenate(scores)
        if all_scores.size > self.top_k:
            top = np.argsort(-all_scores, kind="stable")[: self.top_k]
            all_boxes, all_kps, all_scores = all_boxes[top], all_kps[top], all_scores[top]
        keep = nms(all_boxes, all_scores, self.nms_threshold)
        sx, sy = inp.scale_xy
        h, w = inp.image_hw
        scale = np.array([sx, sy], np.float32)
        out: list[Detection] = []
        for i in keep:
            x1, y1, x2, y2 = (float(v) for v in all_boxes[i])
            box = Box(
                min(max(x1 / sx, 0.0), w),
                min(max(y1 / sy, 0.0), h),
                min(max(x2 / sx, 0.0), w),
                min(max(y2 / sy, 0.0), h),
            )
            kp = (all_kps[i] / scale).astype(np.float32)
            out.append(Detection(box=box, score=float(all_scores[i]), keypoints=kp))
        return out

    def detect(self, runner: Runner, image: NDArray[np.uint8]) -> list[Detection]:
        """Preprocess, run and postprocess one BGR image."""
        return self.detect_with_input(runner, image)[0]

    def detect_with_input(self, runner: Runner, image: NDArray[np.uint8]) -> tuple[list[Detection], YuNetInput]:
        """`detect`, also returning the preprocessed input (its `shrunk` copy serves alignment)."""
        inp = self.preprocess(image)
        outputs = runner.run(inp.tensor)
        return self.postprocess(dict(zip(runner.output_names, outputs, strict=True)), inp), inp
