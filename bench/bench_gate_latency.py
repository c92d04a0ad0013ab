"""Decide while the subject is still at the gate: first-frame → event and passage-end → event.

A clip is played through the gateway's own paths (PlatePath, FacePath) on clip time: each passage
is one CCPD scene (letterboxed to 720p, mildly degraded per frame) or one labelled face photo
(letterboxed), held for `frames` frames at 10 fps, then 1.5 s of empty road. An event's time is the
clip time of the frame (or idle tick) that produced it plus the measured compute of that call, so
the figures are what a live camera would see. Compute is this thread's CPU time (time.thread_time),
not wall time: on a shared 2-core machine other processes would otherwise stretch it many times.
Run with early decisions on (the defaults) and off (`early_min_agreeing` / `early_min_hits` = 0,
the old behaviour: only when the track closes).

For plates, "readable" is the first frame whose best publishable read is the label; for faces, the
first frame with a detection. Negative passage-end → event means the event left before the subject.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gate_sets
from bench._common import FACES, MODELS_DIR, SHARED_DATA, csv_rows, letterbox, require_faces
from bench.bench_gate_plates import scenes
from edge.models.config import ModelsConfig, RuntimeOptions
from edge.pipeline.config import FaceConfig, PlateConfig
from edge.pipeline.faces import FacePath
from edge.pipeline.plates import PlatePath
from edge.plates.reader import PlateReader
from edge.types import Frame, Observation
from edge.vision.faces import FaceAnalyzer

FPS = 10.0
GAP_S = 1.5


def _stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50_s": None, "p90_s": None, "n": 0}
    a = np.asarray(values)
    return {"p50_s": round(float(np.percentile(a, 50)), 3), "p90_s": round(float(np.percentile(a, 90)), 3),
            "n": int(a.size)}


def _play(path: Any, passages: list[list[NDArray[np.uint8]]], readable: list[int | None]) -> dict[str, Any]:
    """Feed the passages; per passage: first, readable and last frame times, and its events' times."""
    ts = 0.0
    idx = 0
    spans: list[tuple[float, float | None, float]] = []
    emitted: list[tuple[float, Observation]] = []
    for frames, first_ok in zip(passages, readable, strict=True):
        start = ts
        for k, image in enumerate(frames):
            t0 = time.thread_time()
            obs = path.process(Frame("gate", idx, ts, image))
            emitted += [(ts + time.thread_time() - t0, o) for o in obs]
            idx += 1
            ts += 1.0 / FPS
            if k == len(frames) - 1:
                spans.append((start, None if first_ok is None else start + first_ok / FPS, ts - 1.0 / FPS))
        end = ts + GAP_S
        while ts < end:  # empty road: the motion gate skips these frames, the path only ages tracks
            t0 = time.thread_time()
            emitted += [(ts + time.thread_time() - t0, o) for o in path.idle(ts)]
            ts += 1.0 / FPS
    emitted += [(ts, o) for o in path.finish()]
    first_to_event, readable_to_event, end_to_event = [], [], []
    events_per_passage = [0] * len(spans)
    for at, obs in emitted:
        # The passage an event belongs to: the last one that started before the event's frame.
        i = max(j for j, (s, _, _) in enumerate(spans) if s <= obs.ts + 1e-9)
        events_per_passage[i] += 1
        if events_per_passage[i] > 1:
            continue  # latency of the first event of a passage (later ones are corrections)
        s, r, e = spans[i]
        first_to_event.append(at - s)
        end_to_event.append(at - e)
        if r is not None:
            readable_to_event.append(at - r)
    decisions: dict[str, int] = {}
    for _, o in emitted:
        d = str(o.attrs.get("decision", "?"))
        decisions[d] = decisions.get(d, 0) + 1
    return {"passages": len(spans), "events": len(emitted), "decisions": decisions,
            "passages_with_one_event": sum(1 for n in events_per_passage if n == 1),
            "first_frame_to_event": _stats(first_to_event), "readable_to_event": _stats(readable_to_event),
            "passage_end_to_event": _stats(end_to_event)}


def plates(*, quick: bool = False, models_dir: Path = MODELS_DIR, frames: int = 8, seed: int = 31) -> dict[str, Any]:
    """Plate passages with early decisions on and off, on the same frames."""
    reader = PlateReader(models_dir, RuntimeOptions(intra_op_threads=1))
    data = scenes()[: 6 if quick else None]
    rng = np.random.default_rng(seed)
    passages = [[gate_sets.degrade(gate_sets.letterboxed_720p(img), rng, mild=True).image for _ in range(frames)]
                for _, _, img, _ in data]
    readable: list[int | None] = []
    for (_, label, _, _), clip in zip(data, passages, strict=True):
        readable.append(next((k for k, im in enumerate(clip)
                              if any(r.valid and r.text == label for r in reader.read(im))), None))
    out: dict[str, Any] = {"frames_per_passage": frames, "fps": FPS}
    for name, cfg in (("early", PlateConfig()), ("track_end_only", PlateConfig(early_min_agreeing=0))):
        out[name] = _play(PlatePath("gate", reader, cfg), passages, readable)
    return out


def faces(*, quick: bool = False, models_dir: Path = MODELS_DIR, frames: int = 8) -> dict[str, Any]:
    """Face passages (no gallery: every face an unknown visitor) with early decisions on and off."""
    require_faces()
    cfg = FaceConfig()
    analyzer = FaceAnalyzer(models_dir, ModelsConfig().runtime_options(), score_threshold=cfg.score_threshold,
                            max_side=cfg.detect_max_side)
    rows = csv_rows(FACES / "labels.csv")[: 6 if quick else 30]
    passages = []
    for row in rows:
        image = cv2.imread(str(SHARED_DATA / row["path"]), cv2.IMREAD_COLOR)
        if image is not None:
            passages.append([letterbox(np.asarray(image, np.uint8))] * frames)
    readable: list[int | None] = [0 if analyzer.detect(p[0]) else None for p in passages]
    out: dict[str, Any] = {"frames_per_passage": frames, "fps": FPS}
    for name, c in (("early", cfg), ("track_end_only", cfg.model_copy(update={"early_min_hits": 0}))):
        out[name] = _play(FacePath("gate", analyzer, None, c), passages, readable)
    return out


def run(*, quick: bool = False, models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    """Both paths."""
    return {"plates": plates(quick=quick, models_dir=models_dir), "faces": faces(quick=quick, models_dir=models_dir)}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
