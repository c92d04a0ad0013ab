"""FaceAnalyzer: detection, alignment, embedding and quality for whole images, on ONNX Runtime."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import EdgeError
from edge.models.config import RuntimeOptions
from edge.models.manifest import Manifest, default_models_dir, model_path
from edge.models.runner import OrtRunner
from edge.models.variants import runtime_model_path
from edge.types import Detection
from edge.vision import Runner, as_bgr
from edge.vision.align import align_face
from edge.vision.face_quality import FaceQuality, assess
from edge.vision.imagesize import DEFAULT_MAX_MEGAPIXELS, ImageSizeError, check_image
from edge.vision.sface import SFace
from edge.vision.yunet import YuNet

log = logging.getLogger(__name__)

DEFAULT_MAX_SIDE = 1280

Shrunk = tuple[NDArray[np.uint8], int]
"""A copy of a frame block-averaged by a whole factor, and the factor (the detector's input)."""
# SFace crops per ONNX Runtime call. Measured on the 2-core CPU VM (1 intra-op thread, bench/):
# batching saves nothing per face (16.9 ms at 1, 16.8 at 2, 18.4 at 4 on a quiet machine; under
# load 18 ms at 1 but about 30 at 2-4), while the arena grows about 12 MB per extra crop (a batch
# of 16 added 190 MB). On CPU one crop per call is as fast and far leaner. Raise it for GPUs.
DEFAULT_EMBED_BATCH = 1


class ImageError(EdgeError):
    """An image file cannot be read or decoded."""


@dataclass(frozen=True, slots=True)
class FaceSample:
    """One detected face with its aligned crop, embedding and quality."""

    detection: Detection
    aligned: NDArray[np.uint8] = field(repr=False)
    embedding: NDArray[np.float32] = field(repr=False)
    quality: FaceQuality


def read_image(path: Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> NDArray[np.uint8]:
    """Decode an image file (JPEG, PNG incl. RGBA and 16-bit, WebP, BMP) to BGR uint8; ImageError if not.

    The size is checked from the header before decoding: a file claiming more than `max_megapixels`
    is refused, never allocated.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc}") from exc
    if not data:
        raise ImageError(f"{path} is empty")
    return decode_image(data, str(path), max_megapixels)


def decode_image(data: bytes, what: str = "the image",
                 max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> NDArray[np.uint8]:
    """Decode image bytes (JPEG, PNG, WebP, BMP) to BGR uint8; ImageError if they are not an image we accept."""
    try:
        check_image(data, max_megapixels, what)
    except ImageSizeError as exc:
        raise ImageError(str(exc)) from None
    # IMREAD_COLOR drops alpha, expands grey, converts 16-bit to 8-bit and applies EXIF orientation.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{what} cannot be decoded (corrupt or unsupported image)")
    return np.asarray(image, np.uint8)


def _largest(dets: Sequence[Detection]) -> Detection | None:
    return max(dets, key=lambda d: (d.box.area, d.score)) if dets else None


class FaceAnalyzer:
    """Detect (YuNet), align (ArcFace 5-point), embed (SFace) and score faces in BGR images.

    Detection runs on a copy downscaled to `max_side`; alignment uses the full-resolution image.
    """

    def __init__(
        self,
        models_dir: Path | None = None,
        options: RuntimeOptions | None = None,
        *,
        manifest: Manifest | None = None,
        detector: Runner | None = None,
        embedder: Runner | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        max_side: int | None = DEFAULT_MAX_SIDE,
        max_batch: int = DEFAULT_EMBED_BATCH,
    ) -> None:
        """Build ORT runners for YuNet and SFace from `models_dir`, unless runners are given."""
        folder = models_dir if models_dir is not None else default_models_dir()
        self._detector: Runner = detector or OrtRunner(model_path(folder, "yunet", manifest), options)
        # The int8 SFace when the options ask for it and it exists (edge.models.variants), else the float one.
        self._embedder: Runner = embedder or OrtRunner(runtime_model_path(folder, "sface", options, manifest), options)
        self._yunet = YuNet(score_threshold=score_threshold, nms_threshold=nms_threshold, max_side=max_side)
        self._sface = SFace(max_batch=max_batch)

    @property
    def embedder_file(self) -> str:
        """The model file the embedder runs (e.g. sface.int8.onnx), or the runner's class name."""
        path = getattr(self._embedder, "path", None)
        return path.name if isinstance(path, Path) else type(self._embedder).__name__

    def detect(self, image: NDArray[Any]) -> list[Detection]:
        """Faces in a grey, BGR or BGRA uint8 image, best first; [] for an empty image."""
        bgr = as_bgr(image)
        if bgr.shape[0] == 0 or bgr.shape[1] == 0:
            return []
        dets = self._yunet.detect(self._detector, bgr)
        return sorted(dets, key=lambda d: -d.score)

    def detect_shrunk(self, image: NDArray[Any]) -> tuple[list[Detection], Shrunk | None]:
        """`detect`, plus the block-averaged copy it ran on when alignment can reuse it (pass it to `align`)."""
        bgr = as_bgr(image)
        if bgr.shape[0] == 0 or bgr.shape[1] == 0:
            return [], None
        dets, inp = self._yunet.detect_with_input(self._detector, bgr)
        shrunk = (inp.shrunk, inp.shrink_factor) if inp.shrunk is not None else None
        return sorted(dets, key=lambda d: -d.score), shrunk

    def align(self, image: NDArray[Any], det: Detection, shrunk: Shrunk | None = None) -> NDArray[np.uint8]:
        """The 112x112x3 BGR ArcFace-aligned crop of one detected face (`shrunk` from `detect_shrunk`)."""
        return align_face(as_bgr(image), det.keypoints, shrunk=shrunk)

    def embed(self, aligned_batch: Sequence[NDArray[np.uint8]] | NDArray[np.uint8]) -> NDArray[np.float32]:
        """L2-normalised [N,128] float32 embeddings of aligned crops."""
        return self._sface.embed(self._embedder, aligned_batch)

    def quality(self, det: Detection, aligned: NDArray[np.uint8]) -> FaceQuality:
        """Size, sharpness and frontalness of one face."""
        return assess(det, aligned)

    def analyze(self, image: NDArray[Any], max_faces: int | None = None) -> list[FaceSample]:
        """Detect, align, embed (one batch) and score the faces of an image, largest first."""
        bgr = as_bgr(image)
        dets = sorted(self.detect(bgr), key=lambda d: -d.box.area)[:max_faces]
        if not dets:
            return []
        crops = [self.align(bgr, d) for d in dets]
        emb = self.embed(np.stack(crops))
        return [FaceSample(d, c, e, self.quality(d, c)) for d, c, e in zip(dets, crops, emb, strict=True)]

    def largest_face_embedding(self, image: NDArray[Any]) -> FaceSample | None:
        """The largest face of the image, embedded; None when no face is found."""
        bgr = as_bgr(image)
        det = _largest(self.detect(bgr))
        if det is None:
            return None
        crop = self.align(bgr, det)
        return FaceSample(det, crop, self.embed(crop[None])[0], self.quality(det, crop))
