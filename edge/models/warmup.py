"""Warm-up (`edgegw models warmup`): build every inference session once, before the services start.

On a Jetson with the TensorRT provider, the first session of a model builds a TensorRT engine for
the input shapes it sees, which takes minutes and would otherwise happen while the first passers-by
are queueing. Warm-up runs the face and plate paths at the configured cameras' frame sizes (and
every SFace batch size the face path uses), so the engines land in the engine cache
(`trt-cache/` beside the models) and each later start loads them in seconds. On CPU it is a quick
check that every model loads and runs, and it says which provider each model runs on.

Shapes the warm-up did not see (a plate recogniser line of another width) still build an engine
at their first use; the cache keeps those too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.models.config import RuntimeOptions

DEFAULT_SIZES = ((1280, 720), (640, 480))


@dataclass(frozen=True, slots=True)
class WarmupStep:
    """One warmed-up path at one input size, and how long its first runs took."""

    path: str
    size: tuple[int, int]
    seconds: float


def warm_up(models_dir: Path, options: RuntimeOptions, sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
            *, faces: bool = True, plates: bool = True, detect_max_side: int = 640) -> list[WarmupStep]:
    """Load and run the face and plate models at each frame size; returns the time each step took."""
    steps: list[WarmupStep] = []
    if faces:
        from edge.vision.faces import DEFAULT_EMBED_BATCH, FaceAnalyzer

        t0 = time.perf_counter()
        analyzer = FaceAnalyzer(models_dir, options, max_side=detect_max_side)
        steps.append(WarmupStep("face: load", (0, 0), time.perf_counter() - t0))
        for w, h in sizes:
            t0 = time.perf_counter()
            analyzer.detect(np.zeros((h, w, 3), np.uint8))
            steps.append(WarmupStep("face: detect", (w, h), time.perf_counter() - t0))
        for n in range(1, DEFAULT_EMBED_BATCH + 1):
            t0 = time.perf_counter()
            analyzer.embed(np.zeros((n, 112, 112, 3), np.uint8))
            steps.append(WarmupStep(f"face: embed batch {n}", (112, 112), time.perf_counter() - t0))
    if plates:
        from edge.plates.reader import PlateReader

        t0 = time.perf_counter()
        reader = PlateReader(models_dir, options)
        steps.append(WarmupStep("plate: load", (0, 0), time.perf_counter() - t0))
        for w, h in sizes:
            t0 = time.perf_counter()
            reader.read(np.zeros((h, w, 3), np.uint8))
            steps.append(WarmupStep("plate: detect", (w, h), time.perf_counter() - t0))
        t0 = time.perf_counter()
        reader.read_crop(np.full((48, 160, 3), 128, np.uint8))
        steps.append(WarmupStep("plate: recognise", (160, 48), time.perf_counter() - t0))
    return steps
