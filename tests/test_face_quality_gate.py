"""A face track too poor to match is reported "unmatched: quality", never matched (real models)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.pipeline.config import FaceConfig
from edge.pipeline.faces import FacePath
from edge.residents import Match
from edge.types import Frame
from tests._models import analyzer, image, require_faces

pytestmark = pytest.mark.models


class EveryoneMatches:
    """A gallery that would match any probe: only the quality gate can keep it from doing so."""

    def __init__(self) -> None:
        self.calls = 0

    def match(self, embedding: np.ndarray, threshold: float) -> Match:
        self.calls += 1
        return Match("r-anyone", 0.99)


def _far(photo: np.ndarray, face_px: int) -> np.ndarray:
    """The photo shrunk so its face is `face_px` high, on a grey 320x240 canvas (a distant face)."""
    det = analyzer().largest_face_embedding(photo)
    assert det is not None
    s = face_px / det.detection.box.height
    small = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    canvas = np.full((max(240, small.shape[0]), max(320, small.shape[1]), 3), 90, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    return canvas


@pytest.mark.parametrize(("face_px", "expect_match"), [(120, True), (21, False)])
def test_quality_gate(face_px: int, expect_match: bool) -> None:
    require_faces()
    frame = _far(image("faces/face_recognition/obama/obama.jpg"), face_px)
    gallery = EveryoneMatches()
    cfg = FaceConfig(detect_max_side=1280, min_face_px=8)
    path = FacePath("cam", analyzer(), gallery, cfg)  # type: ignore[arg-type]
    obs = []
    for i in range(5):
        obs += path.process(Frame("cam", i, 10.0 + 0.1 * i, frame))
    obs += path.finish()
    assert len(obs) == 1
    o = obs[0]
    if expect_match:
        assert o.attrs["matched"] is True and o.subject is not None and gallery.calls == 1
        assert o.attrs["decision"] == "early" and o.attrs["quality"] >= cfg.min_match_quality
    else:
        assert o.attrs["quality"] < cfg.min_match_quality
        assert o.attrs["matched"] is False and o.attrs["unmatched"] == "quality" and o.subject is None
        assert gallery.calls == 0 and o.attrs["decision"] == "track_end"  # never decided early either
