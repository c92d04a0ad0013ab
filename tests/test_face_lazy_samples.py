"""A face path aligns only the faces that can matter (real models): no crop for a decided track, none
for a face whose quality bound cannot enter its track's best few; the events are the same as when
every detection is aligned."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.pipeline.config import FaceConfig
from edge.pipeline.faces import FacePath
from edge.residents import Match
from edge.types import Box, Detection, Frame, Observation
from edge.vision.face_quality import assess, score_bound
from edge.vision.faces import FaceAnalyzer
from tests._models import analyzer, image, require_faces

PHOTO = "faces/face_recognition/obama/obama.jpg"


class EveryoneMatches:
    """A gallery that matches any probe and records what it was asked."""

    def __init__(self) -> None:
        self.probes: list[np.ndarray] = []

    def match(self, embedding: np.ndarray, threshold: float) -> Match:
        self.probes.append(embedding.copy())
        return Match("r-anyone", 0.9)


class CountingAnalyzer:
    """The real analyzer, counting alignments."""

    def __init__(self, inner: FaceAnalyzer) -> None:
        self._inner = inner
        self.aligned = 0

    def align(self, *args: Any, **kwargs: Any) -> np.ndarray:
        self.aligned += 1
        return self._inner.align(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _walk(photo: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """The photo walking across a 1280x720 canvas, growing, some frames blurred (qualities vary)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        s = 0.5 + 0.5 * i / n
        small = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        if rng.uniform() < 0.4:
            small = cv2.GaussianBlur(small, (0, 0), float(rng.uniform(1.0, 4.0)))
        canvas = np.full((720, 1280, 3), 90, np.uint8)
        x, y = 40 + 12 * i, 60 + int(rng.integers(0, 8))
        h, w = min(small.shape[0], 720 - y), min(small.shape[1], 1280 - x)
        canvas[y:y + h, x:x + w] = small[:h, :w]
        frames.append(canvas)
    return frames


def _play(path: FacePath, frames: list[np.ndarray]) -> list[Observation]:
    out: list[Observation] = []
    for i, f in enumerate(frames):
        out += path.process(Frame("cam", i, 1000.0 + i / 15, f))
    return out + path.finish()


def _eager(path: FacePath) -> FacePath:
    """The same path aligning every detection: no quality bound, no freezing (the old behaviour)."""
    tracker = path._tracker
    update = tracker.update
    tracker.update = lambda ts, dets, make, bound=None: update(ts, dets, make)  # type: ignore[method-assign]
    tracker.freeze = lambda track_id: True  # type: ignore[method-assign]
    return path


def _summary(obs: list[Observation]) -> list[tuple[Any, ...]]:
    return [(o.ts, o.subject, sorted(o.attrs.items()), None if o.embedding is None else o.embedding.tolist())
            for o in obs]


@pytest.mark.models
@pytest.mark.parametrize(("early_min_hits", "seed"), [(3, 0), (3, 1), (0, 2), (0, 3)])
def test_lazy_alignment_gives_the_same_events_with_fewer_crops(early_min_hits: int, seed: int) -> None:
    require_faces()
    frames = _walk(image(PHOTO), 24, seed)
    cfg = FaceConfig(early_min_hits=early_min_hits)
    runs = {}
    for name in ("eager", "lazy"):
        counting = CountingAnalyzer(analyzer())
        gallery = EveryoneMatches()
        path = FacePath("cam", counting, gallery, cfg)  # type: ignore[arg-type]
        obs = _play(_eager(path) if name == "eager" else path, frames)
        runs[name] = (obs, counting.aligned, gallery.probes, path.faces_detected)
    (eager, eager_aligned, eager_probes, faces), (lazy, lazy_aligned, lazy_probes, _) = runs["eager"], runs["lazy"]
    assert faces >= 20 and len(eager) == 1  # one face walking: one passage
    assert eager_aligned == faces
    assert _summary(lazy) == _summary(eager)
    assert [p.tolist() for p in lazy_probes] == [p.tolist() for p in eager_probes]
    if early_min_hits:
        # Decided on its third frame: nothing after it is aligned.
        assert lazy[0].attrs["decision"] == "early" and lazy_aligned == 3
    else:
        assert lazy_aligned < eager_aligned


_coord = st.floats(min_value=0.0, max_value=1000.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(_coord, min_size=10, max_size=10), _coord, _coord, st.floats(min_value=0.0, max_value=400.0),
       st.integers(min_value=0, max_value=2**32 - 1))
def test_the_score_bound_is_never_below_the_score(kps: list[float], x: float, y: float, side: float,
                                                  seed: int) -> None:
    det = Detection(box=Box(x, y, x + side, y + side * 1.2), score=0.9,
                    keypoints=np.asarray(kps, np.float32).reshape(5, 2))
    rng = np.random.default_rng(seed)
    # From flat grey (sharpness 0) to noise (sharpness near its ceiling).
    crop = np.clip(128 + rng.normal(0.0, float(rng.uniform(0, 120)), (112, 112, 3)), 0, 255).astype(np.uint8)
    assert score_bound(det) >= assess(det, crop).score
