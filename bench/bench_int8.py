"""int8 against float for each model that runs per frame: speed beside accuracy, in one run.

- SFace: the int8 copy the gateway loads with `models.sface_int8` (models/sface.int8.onnx; quantised
  here into a temporary folder if it is missing) against the float graph: ms per face, cosine to the float
  embedding, TAR at FAR <= 0.1 % on pairs.csv (largest face of each labelled photo, letterboxed
  into 1280x720), and TAR on the gate conditions of bench_gate_faces (20-40 px, dark, blurred).
- YuNet and clp_det: static int8 (per-channel, Conv only, min/max calibration) made here from
  frames of ../shared/data/video (people walking for YuNet, cars for clp_det: neither is in an
  accuracy set), against the float graph: ms per 1280x720 frame, faces found on the face race's
  frames, plates read exactly and plates located on the 36 CCPD scenes.

Each pair runs interleaved frame by frame, alternating which side goes first. The gateway's default
for each model is what measures best here with accuracy held (docs/gate.md).

Run alone: `.venv/bin/python bench/bench_int8.py [--quick]`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import FRAME_H, FRAME_W, MODELS_DIR, SHARED_DATA, SkipSection, face_frames, percentiles
from edge.models.config import ModelsConfig, RuntimeOptions
from edge.models.manifest import model_path
from edge.models.runner import OrtRunner
from edge.models.variants import runtime_model_path
from edge.pipeline.config import FaceConfig
from edge.vision.faces import FaceAnalyzer
from edge.vision.quantize import quantize_static_conv

VIDEO = SHARED_DATA / "video"
FLOAT = RuntimeOptions(intra_op_threads=1, int8_models=())


def video_frames(name: str, n: int, step: int) -> list[NDArray[np.uint8]]:
    """Every `step`-th frame of a shared video, resized to 1280x720, at most `n`."""
    cap = cv2.VideoCapture(str(VIDEO / name))
    out: list[NDArray[np.uint8]] = []
    i = 0
    try:
        while len(out) < n:
            ok, frame = cap.read()
            if not ok:
                break
            if i % step == 0:
                out.append(np.asarray(cv2.resize(frame, (FRAME_W, FRAME_H), interpolation=cv2.INTER_AREA), np.uint8))
            i += 1
    finally:
        cap.release()
    if not out:
        raise SkipSection(f"no frames readable from {VIDEO / name}")
    return out


def _pair(items: Sequence[Any], sides: dict[str, Callable[[Any], Any]]) -> tuple[dict[str, list[float]],
                                                                                 dict[str, list[Any]]]:
    """Run every side on every item, interleaved, alternating the order; seconds and outputs per side."""
    names = list(sides)
    seconds: dict[str, list[float]] = {k: [] for k in names}
    outputs: dict[str, list[Any]] = {k: [] for k in names}
    for k in names:
        sides[k](items[0])  # first calls allocate and pick kernels
    for i, item in enumerate(items):
        for k in names if i % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            outputs[k].append(sides[k](item))
            seconds[k].append(time.perf_counter() - t0)
    return seconds, outputs


def _speedup(seconds: dict[str, list[float]]) -> float | None:
    f, q = float(np.median(seconds["fp32"])), float(np.median(seconds["int8"]))
    return round(f / q, 2) if q > 0 else None


def sface(models_dir: Path, quick: bool, tmp: Path) -> dict[str, Any]:
    """The gateway's int8 SFace against the float one: speed, agreement, TAR (clean and gate conditions)."""
    from bench import bench_gate_faces
    from bench.bench_faces import verification

    path = runtime_model_path(models_dir, "sface", RuntimeOptions(int8_models=("sface",)))
    made_here = not path.name.endswith(".int8.onnx")
    if made_here:
        from edge.models.fetch import extract_sample_images
        from edge.vision.faces import read_image
        from edge.vision.quantize import calibration_crops, quantize_sface

        photos = extract_sample_images(models_dir, tmp / "calibration", 60)
        path = quantize_sface(models_dir, calibration_crops(models_dir, [read_image(p) for p in photos]),
                              out=tmp / "sface.int8.onnx")
    face = FaceConfig()
    fp32 = FaceAnalyzer(models_dir, FLOAT, max_side=face.detect_max_side)
    int8 = FaceAnalyzer(models_dir, FLOAT, embedder=OrtRunner(path, FLOAT), max_side=face.detect_max_side)
    frames = [f for f in face_frames(labelled=12 if quick else None, multi=0, ctu=0) if f.label_path]
    crops: dict[str, NDArray[np.uint8] | None] = {}
    for f in frames:
        s = fp32.largest_face_embedding(f.image)
        crops[str(f.label_path)] = None if s is None else s.aligned
    kept = [(k, c) for k, c in crops.items() if c is not None]
    seconds, outputs = _pair([c for _, c in kept], {"fp32": lambda c: fp32.embed(c[None])[0],
                                                    "int8": lambda c: int8.embed(c[None])[0]})
    cos = [float(np.dot(a, b)) for a, b in zip(outputs["fp32"], outputs["int8"], strict=True)]
    out: dict[str, Any] = {
        "file": path.name, "quantised_in_this_run": made_here, "faces": len(kept),
        "embed_fp32": percentiles(seconds["fp32"]), "embed_int8": percentiles(seconds["int8"]),
        "speedup": _speedup(seconds),
        "cosine_to_fp32_min": round(min(cos), 4) if cos else None,
        "cosine_to_fp32_median": round(float(np.median(cos)), 4) if cos else None,
    }
    for side in ("fp32", "int8"):
        largest: dict[str, NDArray[np.float32] | None] = dict.fromkeys(crops)
        for (k, _), e in zip(kept, outputs[side], strict=True):
            largest[k] = e
        out[f"{side}_verification"] = verification(largest, cosine=True, threshold=face.match_threshold)
    # The gate conditions (small, dark, blurred faces) on the same probes, each embedder in turn.
    gate: dict[str, Any] = {}
    for side, opts in (("fp32", FLOAT), ("int8", RuntimeOptions(intra_op_threads=1, int8_models=("sface",)))):
        if side == "int8" and made_here:
            gate[side] = {"skipped": "models/sface.int8.onnx absent; the gate conditions run on the installed file"}
            continue
        res = bench_gate_faces.run(quick=quick, peers=False, models_dir=models_dir, options=opts)
        gate[side] = {name: {"tar": c["ours_tar_at_far_0_1pct"],
                             "false_accepts": c["gated_decision"]["false_accepts"],
                             "genuine_accepted": c["gated_decision"]["genuine_accepted"]}
                      for name, c in res["conditions"].items()}
    out["gate_conditions"] = gate
    return out


def yunet(models_dir: Path, quick: bool, tmp: Path) -> dict[str, Any]:
    """int8 YuNet (calibrated on people walking) against the float one: ms per frame, faces found."""
    from edge.vision.yunet import YuNet

    face = FaceConfig()
    pre = YuNet(max_side=face.detect_max_side)
    cal = [pre.preprocess(f).tensor for f in video_frames("one-by-one-person-detection.mp4", 40, 15)]
    t0 = time.perf_counter()
    path = quantize_static_conv(model_path(models_dir, "yunet"), tmp / "yunet.int8.onnx", cal)
    took = time.perf_counter() - t0
    sides = {
        "fp32": FaceAnalyzer(models_dir, FLOAT, score_threshold=face.score_threshold, max_side=face.detect_max_side),
        "int8": FaceAnalyzer(models_dir, FLOAT, detector=OrtRunner(path, FLOAT), score_threshold=face.score_threshold,
                             max_side=face.detect_max_side),
    }
    frames = face_frames(labelled=8, multi=2, ctu=2) if quick else face_frames()
    seconds, outputs = _pair([f.image for f in frames], {k: a.detect for k, a in sides.items()})
    annotated = [(f.annotated_faces, i) for i, f in enumerate(frames) if f.annotated_faces]
    found = {k: sum(len(d) for d in v) for k, v in outputs.items()}
    group = {k: sum(min(len(outputs[k][i]), n) for n, i in annotated if n) for k in outputs}
    return {"calibration_frames": len(cal), "quantise_s": round(took, 1), "frames": len(frames),
            "detect_fp32": percentiles(seconds["fp32"]), "detect_int8": percentiles(seconds["int8"]),
            "speedup": _speedup(seconds), "faces_found": found, "group_faces_found_capped": group,
            "annotated_group_faces": sum(n for n, _ in annotated if n)}


def clp_det(models_dir: Path, quick: bool, tmp: Path) -> dict[str, Any]:
    """int8 clp_det (calibrated on cars in traffic) against the float one: ms per frame, plates read."""
    from bench.bench_plates import scene_frames
    from edge.plates import detector as det
    from edge.plates.reader import PlateReader

    params = det.DetectorParams()
    cal = [det.preprocess(f, params)[0] for f in video_frames("car-detection.mp4", 40, 10)]
    t0 = time.perf_counter()
    path = quantize_static_conv(model_path(models_dir, "clp_det"), tmp / "clp_det.int8.onnx", cal)
    took = time.perf_counter() - t0
    readers = {"fp32": PlateReader(models_dir, FLOAT),
               "int8": PlateReader(models_dir, FLOAT, detector=OrtRunner(path, FLOAT))}
    scenes = scene_frames()[: 8 if quick else None]
    texts = [s.text for s in scenes]
    seconds, outputs = _pair([s.image for s in scenes], {k: r.read for k, r in readers.items()})
    loc_s, located = _pair([s.image for s in scenes], {k: r.locate for k, r in readers.items()})
    exact = {k: sum(bool(v := [p.text for p in reads if p.valid]) and v[0] == t
                    for reads, t in zip(outputs[k], texts, strict=True)) for k in outputs}
    return {"calibration_frames": len(cal), "quantise_s": round(took, 1), "scenes": len(scenes),
            "read_fp32": percentiles(seconds["fp32"]), "read_int8": percentiles(seconds["int8"]),
            "locate_fp32": percentiles(loc_s["fp32"]), "locate_int8": percentiles(loc_s["int8"]),
            "speedup_read": _speedup(seconds), "speedup_locate": _speedup(loc_s),
            "exact": exact, "located": {k: sum(bool(v) for v in located[k]) for k in located}}


def run(*, quick: bool = False, models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    """Every int8 variant against its float model; JSON-ready."""
    out: dict[str, Any] = {"calibration": "static per-channel int8 (QOperator), min/max; SFace: Conv, Gemm, Relu, "
                                          "Add (edge.vision.quantize.SFACE_INT8_OPS); YuNet, clp_det: Conv only"}
    with tempfile.TemporaryDirectory(prefix="edgegw-int8-") as tmp_s:
        tmp = Path(tmp_s)
        for name, fn in (("sface", sface), ("yunet", yunet), ("clp_det", clp_det)):
            try:
                out[name] = fn(models_dir, quick, tmp)
            except SkipSection as exc:
                out[name] = {"skipped": str(exc)}
    out["defaults"] = {"sface": "int8" if ModelsConfig().sface_int8 else "fp32", "yunet": "fp32", "clp_det": "fp32"}
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, ensure_ascii=False))
