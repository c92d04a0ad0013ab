"""Faces at distance and in low light: a harder benchmark from the shared pairs, ours against face_recognition.

The gallery side of every pair of ../shared/data/faces/pairs.csv stays the clean photo (residents
enrol from good photos); the probe side is the same photo as a gate camera far away sees it: the
photo scaled so the face box (YuNet on the clean photo) is N px high, placed on a grey canvas,
optionally darkened with sensor noise or motion-blurred, seeded. Both sides detect and encode the
largest face of each probe; a probe with no face found never matches.

Reported per condition: TAR at FAR <= 0.1 % of both; and for ours, with the gateway's quality gate
(`face.min_match_quality`), the decision the gateway would publish at its shipped threshold:
genuine accepted, false accepts, and probes reported "unmatched: quality".

Run alone: `.venv/bin/python bench/bench_gate_faces.py [--quick] [--no-peers]`.
"""

from __future__ import annotations

import json
import math
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
from bench._common import FACES, MODELS_DIR, SHARED_DATA, csv_rows, load_face_recognition, require_faces
from edge.models.config import ModelsConfig, RuntimeOptions
from edge.pipeline.config import FaceConfig
from edge.vision.evaluate import tar_at_far
from edge.vision.faces import FaceAnalyzer

FAR = 0.001
CANVAS = 160  # px: the probe's canvas, large enough for YuNet's smallest stride and dlib's HOG upsample
# (name, face box height in px, darken, blur): clean is the photo as shot.
CONDITIONS: tuple[tuple[str, int | None, bool, bool], ...] = (
    ("clean", None, False, False),
    ("40px", 40, False, False),
    ("30px", 30, False, False),
    ("20px", 20, False, False),
    ("30px_dark", 30, True, False),
    ("30px_blur", 30, False, True),
)


def _probe(image: NDArray[np.uint8], face_h: float, target: int | None, dark: bool, blur: bool,
           rng: np.random.Generator) -> NDArray[np.uint8]:
    if target is None:
        return image
    s = target / max(face_h, 1.0)
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    if blur:
        small = gate_sets.motion_blur(small, 3, float(rng.uniform(0, 180)))
    if dark:
        small = gate_sets.low_light(small, float(rng.uniform(0.35, 0.6)), float(rng.uniform(1.3, 1.8)),
                                    float(rng.uniform(3, 7)), rng)
    ch, cw = max(CANVAS, small.shape[0] + 40), max(CANVAS, small.shape[1] + 40)
    canvas = np.full((ch, cw, 3), 90, np.uint8)
    y, x = (ch - small.shape[0]) // 2, (cw - small.shape[1]) // 2
    canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
    return canvas


def _bounded(image: NDArray[np.uint8], side: int = 640) -> NDArray[np.uint8]:
    """A photo with its long side at most `side` px: what a gate camera's face crop could hold, and
    dlib's upsampled HOG on 4000 px photos takes seconds and gigabytes."""
    h, w = image.shape[:2]
    s = side / max(h, w)
    if s >= 1.0:
        return image
    return np.asarray(cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA), np.uint8)


def _ours(analyzer: FaceAnalyzer, image: NDArray[np.uint8]) -> tuple[NDArray[np.float32] | None, float]:
    sample = analyzer.largest_face_embedding(image)
    return (None, 0.0) if sample is None else (sample.embedding, sample.quality.score)


def _peer(fr: Any, image: NDArray[np.uint8]) -> NDArray[np.float32] | None:
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    locs = fr.face_locations(rgb)
    if not locs:
        return None
    big = max(locs, key=lambda t: (t[2] - t[0]) * (t[1] - t[3]))
    enc = fr.face_encodings(rgb, [big])
    return np.asarray(enc[0], np.float32) if enc else None


QUALITY_SWEEP = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)


def _sweep(scored: list[tuple[bool, float, float]], threshold: float) -> dict[str, tuple[int, int]]:
    """Per candidate quality floor: (genuine accepted, false accepts) at the match threshold."""
    out = {}
    for q in QUALITY_SWEEP:
        ok = [(same, score) for same, score, quality in scored if quality >= q and score >= threshold]
        out[f"{q:.2f}"] = (sum(1 for same, _ in ok if same), sum(1 for same, _ in ok if not same))
    return out


def _tar(gen: list[float], imp: list[float]) -> float | None:
    if not gen or not imp:
        return None
    return round(tar_at_far(np.array(gen), np.array(imp), FAR).tar, 4)


def run(*, quick: bool = False, peers: bool = True, install_peers: bool = True,
        models_dir: Path = MODELS_DIR, seed: int = 15, options: RuntimeOptions | None = None) -> dict[str, Any]:
    """Every condition: TAR of both sides, and ours' gated decision at the shipped threshold.

    `options` default to the gateway's (ModelsConfig, models.sface_int8 off); bench_int8 passes
    each embedder's options to score both on the same probes.
    """
    require_faces()
    cfg = FaceConfig()
    opts = options or ModelsConfig().runtime_options()
    analyzer = FaceAnalyzer(models_dir, opts, score_threshold=cfg.score_threshold, max_side=None)
    fr, reason = load_face_recognition(install=install_peers) if peers else (None, "peers disabled (--no-peers)")
    pairs = [r for r in csv_rows(FACES / "pairs.csv")]
    photos = sorted({r["path1"] for r in pairs} | {r["path2"] for r in pairs})
    if quick:
        keep = set(photos[:12])
        pairs = [r for r in pairs if r["path1"] in keep and r["path2"] in keep]
        photos = sorted(keep)
    images = {p: _bounded(np.asarray(cv2.imread(str(SHARED_DATA / p), cv2.IMREAD_COLOR), np.uint8)) for p in photos}
    clean: dict[str, tuple[NDArray[np.float32] | None, float]] = {}
    face_h: dict[str, float] = {}
    for p, img in images.items():
        sample = analyzer.largest_face_embedding(img)
        clean[p] = (None, 0.0) if sample is None else (sample.embedding, sample.quality.score)
        face_h[p] = 0.0 if sample is None else sample.detection.box.height
    peer_clean = {p: _peer(fr, img) for p, img in images.items()} if fr is not None else {}
    out: dict[str, Any] = {"pairs": len(pairs), "photos": len(photos), "far_target": FAR,
                           "embedder": analyzer.embedder_file,
                           "match_threshold": cfg.match_threshold, "min_match_quality": cfg.min_match_quality,
                           "peer": None if fr is None else "face_recognition 1.3.0 (HOG upsample 1, 5-point)",
                           "peer_reason": reason, "conditions": {}}
    for name, target, dark, blur in CONDITIONS:
        rng = np.random.default_rng(seed)
        ours_s: list[float] = []
        peer_s: list[float] = []
        probes: dict[str, tuple[NDArray[np.float32] | None, float]] = {}
        peer_probes: dict[str, NDArray[np.float32] | None] = {}
        for p, img in images.items():
            probe = _probe(img, face_h[p], target, dark, blur, rng) if face_h[p] > 0 else img
            t0 = time.perf_counter()
            probes[p] = _ours(analyzer, probe)
            ours_s.append(time.perf_counter() - t0)
            if fr is not None:
                t0 = time.perf_counter()
                peer_probes[p] = _peer(fr, probe)
                peer_s.append(time.perf_counter() - t0)
        scored: list[tuple[bool, float, float]] = []
        gen, imp, pgen, pimp = [], [], [], []
        accepted = false_accepts = gated = genuine = 0
        for r in pairs:
            same = r["same"].strip() == "1"
            gallery, (probe, quality) = clean[r["path1"]][0], probes[r["path2"]]
            score = -math.inf if gallery is None or probe is None else float(np.dot(gallery, probe))
            (gen if same else imp).append(score)
            scored.append((same, score, quality))
            genuine += same
            if probe is not None and quality < cfg.min_match_quality:
                gated += 1
            elif score >= cfg.match_threshold:
                accepted += same
                false_accepts += not same
            if fr is not None:
                pg, pp = peer_clean[r["path1"]], peer_probes[r["path2"]]
                ps = -math.inf if pg is None or pp is None else -float(np.linalg.norm(pg - pp))
                (pgen if same else pimp).append(ps)
        out["conditions"][name] = {
            "ours_tar_at_far_0_1pct": _tar(gen, imp),
            "peer_tar_at_far_0_1pct": _tar(pgen, pimp) if fr is not None else None,
            "ours_faces_found": sum(1 for e, _ in probes.values() if e is not None),
            "peer_faces_found": sum(1 for e in peer_probes.values() if e is not None) if fr is not None else None,
            "gated_decision": {"genuine_pairs": genuine, "genuine_accepted": accepted,
                               "false_accepts": false_accepts, "unmatched_quality_pairs": gated},
            "quality_sweep": _sweep(scored, cfg.match_threshold),
            "ours_ms_p50": round(1000 * float(np.median(ours_s)), 2),
            "peer_ms_p50": round(1000 * float(np.median(peer_s)), 2) if peer_s else None,
        }
    c = out["conditions"]
    if c["clean"]["ours_tar_at_far_0_1pct"] is not None and c["30px"]["ours_tar_at_far_0_1pct"] is not None:
        out["ours_points_below_clean_at_30px"] = round(
            100 * (c["clean"]["ours_tar_at_far_0_1pct"] - c["30px"]["ours_tar_at_far_0_1pct"]), 1)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv, peers="--no-peers" not in sys.argv), indent=2))
