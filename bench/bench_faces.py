"""Face race: edgegw's face stack against face_recognition (dlib) on the same 1280x720 frames.

Both sides detect every face in a frame and encode every face found, frame by frame, alternating
which side goes first. Ours runs as the gateway is configured by default (YuNet on a copy
downscaled to `face.detect_max_side`, alignment from the full-resolution frame, SFace on one
batch of the frame's faces, one ONNX Runtime thread); the peer runs as shipped
(`face_locations` HOG with one upsample, `face_encodings` with the 5-point model, one jitter),
single-threaded like dlib's HOG. Verification accuracy (TAR at FAR <= 0.1 %) of both comes from
the same frames of the labelled photos, scored over every within-source pair of pairs.csv.

Run alone: `.venv/bin/python bench/bench_faces.py [--quick]`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    FACES,
    MODELS_DIR,
    BenchFrame,
    SkipSection,
    StageTimes,
    csv_rows,
    face_frames,
    interleaved,
    load_face_recognition,
    percentiles,
)
from edge.models.config import ModelsConfig, RuntimeOptions
from edge.pipeline.config import FaceConfig
from edge.vision.evaluate import equal_error_rate, tar_at_far
from edge.vision.faces import FaceAnalyzer

FAR_TARGET = 0.001
# face_recognition's documented default: distance <= 0.6 is the same person.
PEER_DISTANCE_THRESHOLD = 0.6


@dataclass
class SideResult:
    """One side of the race: per-frame seconds and the largest face's embedding per labelled photo."""

    seconds: list[float] = field(default_factory=list)
    faces: list[int] = field(default_factory=list)
    largest: dict[str, NDArray[np.float32] | None] = field(default_factory=dict)
    crops: dict[str, NDArray[np.uint8] | None] = field(default_factory=dict)


def build_analyzer(models_dir: Path = MODELS_DIR, threads: int = 1) -> FaceAnalyzer:
    """The face analyzer as the gateway builds it from the default config (models.sface_int8 decides SFace)."""
    face = FaceConfig()
    options = replace(ModelsConfig().runtime_options(), intra_op_threads=threads)
    try:
        return FaceAnalyzer(models_dir, options,
                            score_threshold=face.score_threshold, max_side=face.detect_max_side)
    except Exception as exc:  # a missing or broken model makes the section unavailable, not the harness
        raise SkipSection(f"face models not loadable from {models_dir}: {exc}") from exc


def _ours(analyzer: FaceAnalyzer, image: NDArray[np.uint8], stages: StageTimes,
          keep: dict[str, NDArray[np.uint8] | None] | None = None, key: str | None = None
          ) -> tuple[int, NDArray[Any] | None]:
    t0 = time.perf_counter()
    dets, shrunk = analyzer.detect_shrunk(image)  # as FacePath: alignment reuses the detector's copy
    t1 = time.perf_counter()
    crops = []
    for d in dets:
        a0 = time.perf_counter()
        crops.append(analyzer.align(image, d, shrunk))
        stages.add("align", time.perf_counter() - a0)
    t2 = time.perf_counter()
    emb = analyzer.embed(np.stack(crops)) if crops else None
    t3 = time.perf_counter()
    stages.add("detect", t1 - t0)
    if crops:
        stages.add("embed_frame_batch", t3 - t2)
    if emb is None:
        return 0, None
    largest = max(range(len(dets)), key=lambda i: dets[i].box.area)
    if keep is not None and key is not None:
        keep[key] = crops[largest]
    return len(dets), emb[largest]


def _peer(fr: Any, image: NDArray[np.uint8]) -> tuple[int, NDArray[Any] | None]:
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # dlib wants RGB; a pipeline using it pays this
    locations = fr.face_locations(rgb)
    encodings = fr.face_encodings(rgb, locations)
    if not encodings:
        return 0, None

    def area(loc: tuple[int, int, int, int]) -> int:
        top, right, bottom, left = loc
        return (bottom - top) * (right - left)

    largest = max(range(len(locations)), key=lambda i: area(locations[i]))
    return len(locations), np.asarray(encodings[largest], np.float32)


def verification(largest: dict[str, NDArray[np.float32] | None], *, cosine: bool,
                 threshold: float) -> dict[str, object]:
    """TAR at FAR <= 0.1 %, EER and TAR/FAR at the shipped threshold over pairs.csv's pairs."""
    genuine: list[float] = []
    impostor: list[float] = []
    for row in csv_rows(FACES / "pairs.csv"):
        p1, p2 = row["path1"], row["path2"]
        if p1 not in largest or p2 not in largest:
            continue  # a photo left out of a quick run
        e1, e2 = largest[p1], largest[p2]
        if e1 is None or e2 is None:
            score = math.nan  # no face found: never accepted
        elif cosine:
            score = float(np.dot(e1, e2))
        else:
            score = -float(np.linalg.norm(e1 - e2))  # higher is more alike, like a cosine
        (genuine if row["same"].strip() == "1" else impostor).append(score)
    if not genuine or not impostor:
        return {"genuine": len(genuine), "impostor": len(impostor), "tar_at_far_0_1pct": None,
                "reason": "needs genuine and impostor pairs (a --quick run has too few photos)"}
    gen, imp = np.array(genuine), np.array(impostor)
    op = tar_at_far(gen, imp, FAR_TARGET)
    eer = equal_error_rate(gen, imp)
    accept = threshold if cosine else -threshold
    gen_ok = np.nan_to_num(gen, nan=-np.inf) >= accept
    imp_ok = np.nan_to_num(imp, nan=-np.inf) >= accept
    return {
        "genuine": int(gen.size),
        "impostor": int(imp.size),
        "tar_at_far_0_1pct": round(op.tar, 4),
        "eer": round(eer.eer, 4),
        "shipped_threshold": threshold,
        "tar_at_shipped_threshold": round(float(gen_ok.mean()), 4),
        "far_at_shipped_threshold": round(float(imp_ok.mean()), 4),
        "photos_without_face": sum(1 for v in largest.values() if v is None),
    }


def _embed_latency(analyzer: FaceAnalyzer, frames: list[BenchFrame], stages: StageTimes, limit: int) -> None:
    """Per-face SFace latency at batch 1 and at batch 3 (a track's best three samples)."""
    crops: list[NDArray[np.uint8]] = []
    for f in frames:
        crops += [analyzer.align(f.image, d) for d in analyzer.detect(f.image)]
        if len(crops) >= limit:
            break
    for c in crops[:limit]:
        with stages.time("embed"):
            analyzer.embed(c[None])
    for i in range(0, len(crops[:limit]) - 2, 3):
        t0 = time.perf_counter()
        analyzer.embed(np.stack(crops[i:i + 3]))
        stages.add("embed_per_face_batch3", (time.perf_counter() - t0) / 3)


def detect_resolution(frames: list[BenchFrame], models_dir: Path, limit: int) -> dict[str, Any]:
    """YuNet on the same frames at the configured max side and at full 1280: time and faces found."""
    out: dict[str, Any] = {}
    sides = (FaceConfig().detect_max_side, 1280)
    analyzers = {side: FaceAnalyzer(models_dir, RuntimeOptions(intra_op_threads=1), max_side=side) for side in sides}
    seconds: dict[int, list[float]] = {side: [] for side in sides}
    found = dict.fromkeys(sides, 0)
    for a in analyzers.values():
        a.detect(frames[0].image)
    for i, frame in enumerate(frames[:limit]):
        for side in sides if i % 2 == 0 else sides[::-1]:
            t0 = time.perf_counter()
            found[side] += len(analyzers[side].detect(frame.image))
            seconds[side].append(time.perf_counter() - t0)
    for side in sides:
        out[f"max_side_{side}"] = {"detect": percentiles(seconds[side]), "faces_found": found[side]}
    return out


def ort_threads(frames: list[BenchFrame], models_dir: Path, limit: int) -> dict[str, Any]:
    """Detect + embed per frame with 1 intra-op thread, 2 without spinning, 2 with spinning (interleaved)."""
    base = ModelsConfig().runtime_options()
    variants = {
        "1_thread": replace(base, intra_op_threads=1),
        "2_threads_no_spin": replace(base, intra_op_threads=2, allow_spinning=False),
        "2_threads_spin": replace(base, intra_op_threads=2, allow_spinning=True),
    }
    face = FaceConfig()
    analyzers = {k: FaceAnalyzer(models_dir, o, max_side=face.detect_max_side) for k, o in variants.items()}
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for a in analyzers.values():
        _ours(a, frames[0].image, StageTimes())
    for i, frame in enumerate(frames[:limit]):
        order = names[i % len(names):] + names[: i % len(names)]
        for k in order:
            t0 = time.perf_counter()
            _ours(analyzers[k], frame.image, StageTimes())
            seconds[k].append(time.perf_counter() - t0)
    return {k: percentiles(v) for k, v in seconds.items()}


def run(*, quick: bool = False, peers: bool = True, install_peers: bool = True,
        models_dir: Path = MODELS_DIR, race_only: bool = False) -> dict[str, Any]:
    """Race both face stacks on the same frames; report times, ratios and accuracy (JSON-ready).

    `race_only` (the harness's repeated runs) skips the variants: embed latency, detection
    resolution and threads (the int8 variants are bench_int8's).
    """
    frames = face_frames(labelled=4, multi=1, ctu=1) if quick else face_frames()
    analyzer = build_analyzer(models_dir)
    fr: Any = None
    peer_reason: str | None = "peers disabled (--no-peers)"
    if peers:
        fr, peer_reason = load_face_recognition(install=install_peers)
    # First calls allocate and pick kernels: warm both sides up outside the timed loop.
    _ours(analyzer, frames[0].image, StageTimes())
    if fr is not None:
        _peer(fr, frames[0].image)
    stages = StageTimes()
    ours, peer = SideResult(), SideResult()
    for i, ours_first in interleaved(len(frames)):
        frame = frames[i]
        order = ("ours", "peer") if ours_first else ("peer", "ours")
        for side in order:
            if side == "peer" and fr is None:
                continue
            t0 = time.perf_counter()
            if side == "ours":
                n, emb = _ours(analyzer, frame.image, stages, ours.crops, frame.label_path)
            else:
                n, emb = _peer(fr, frame.image)
            dt = time.perf_counter() - t0
            res = ours if side == "ours" else peer
            res.seconds.append(dt)
            res.faces.append(n)
            if frame.label_path is not None:
                res.largest[frame.label_path] = emb
    if not race_only:
        _embed_latency(analyzer, frames, stages, limit=8 if quick else 60)
    result: dict[str, Any] = {
        "frames": len(frames),
        "frame_size": "1280x720",
        "ours": {
            "config": f"YuNet at max side {FaceConfig().detect_max_side}, {analyzer.embedder_file}, 1 ORT thread",
            "frame_ms": percentiles(ours.seconds),
            "total_s": round(sum(ours.seconds), 3),
            "faces_found": int(sum(ours.faces)),
            "verification": verification(ours.largest, cosine=True, threshold=FaceConfig().match_threshold),
        },
        "stages": stages.summary(),
    }
    if not race_only:
        result["detect_resolution"] = detect_resolution(frames, models_dir, limit=len(frames))
        result["ort_threads"] = ort_threads(frames, models_dir, limit=6 if quick else 40)
    annotated = [(f.annotated_faces, i) for i, f in enumerate(frames) if f.annotated_faces]
    result["annotated_group_faces"] = sum(n for n, _ in annotated if n)
    result["ours"]["group_faces_found_capped"] = sum(min(ours.faces[i], n) for n, i in annotated if n)
    if fr is None:
        result["peer"] = None
        result["peer_reason"] = peer_reason
        result["speedup_vs_face_recognition"] = None
        return result
    ratios = [p / o for p, o in zip(peer.seconds, ours.seconds, strict=True) if o > 0]
    result["peer"] = {
        "name": "face_recognition 1.3.0 (dlib-bin), HOG upsample 1 + 5-point encodings",
        "frame_ms": percentiles(peer.seconds),
        "total_s": round(sum(peer.seconds), 3),
        "faces_found": int(sum(peer.faces)),
        "group_faces_found_capped": sum(min(peer.faces[i], n) for n, i in annotated if n),
        "verification": verification(peer.largest, cosine=False, threshold=PEER_DISTANCE_THRESHOLD),
    }
    result["speedup_vs_face_recognition"] = round(sum(peer.seconds) / max(sum(ours.seconds), 1e-9), 2)
    result["median_frame_speedup"] = round(float(np.median(ratios)), 2) if ratios else None
    return result


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv, install_peers="--no-install" not in sys.argv), indent=2))
