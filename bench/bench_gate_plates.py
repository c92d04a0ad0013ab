"""Plates under gate conditions: native, letterboxed 720p, degraded (several seeds), end to end on a clip.

Sets, all from the 36 labelled CCPD scenes of ../shared/data/plates (bench/gate_sets.py):
- native: the scene as shot (720x1160);
- 720p: letterboxed into 1280x720 (plates 60-100 px wide, a camera not zoomed in);
- degraded: a seeded mix of motion blur, JPEG 25-60, low light with noise, 320-480 px long side,
  ±8° tilt on the native scene; one count per seed, so the spread shows;
- clip: each scene letterboxed to 720p for 6 frames, each frame mildly degraded on its own (one
  seed per frame), through the gateway's PlatePath (tracker, track-guided looks and vote): one voted
  text per vehicle; its `frame_cpu_ms` is the whole path's per frame.

A read counts when the best grammar-valid (publishable) read equals the label; `wrong_published`
counts frames whose best publishable read is another plate (worse than no read). The per-frame cost
of `PlateReader.read` is reported beside each set (one ONNX Runtime thread), as wall time and as the
thread's CPU time (which other work on the machine does not inflate).

Run alone: `.venv/bin/python bench/bench_gate_plates.py [--quick]`; `--calibrate` instead prints the
confidence calibration tables of edge.plates.fusion, measured on the LPRNet crops (held out: not the
CCPD scenes scored here), clean and three seeded degradations (gate_sets.degrade_crop).
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
from bench._common import MODELS_DIR, SHARED_DATA, SkipSection, csv_rows, percentiles
from edge.models.config import RuntimeOptions
from edge.pipeline.config import PlateConfig
from edge.pipeline.plates import PlatePath
from edge.plates.fusion import FIRST_FUSED, Calibration
from edge.plates.reader import PlateReader, ReaderParams
from edge.types import Frame

PLATES = SHARED_DATA / "plates"
CLIP_FRAMES = 6
CLIP_FPS = 10.0


def scenes() -> list[tuple[str, str, NDArray[np.uint8], float]]:
    """(path, label, native image, plate width once letterboxed to 720p) of every labelled scene."""
    labels = PLATES / "labels.csv"
    if not labels.is_file():
        raise SkipSection(f"plate data not found at {PLATES}")
    out = []
    for row in csv_rows(labels):
        if row.get("kind") != "full_scene":
            continue
        image = cv2.imread(str(SHARED_DATA / row["path"]), cv2.IMREAD_COLOR)
        if image is not None:
            img = np.asarray(image, np.uint8)
            width = gate_sets.plate_width_in_720p(img.shape, float(row["x1"]), float(row["x2"]))
            out.append((row["path"], row["plate_text"], img, width))
    if not out:
        raise SkipSection("no readable CCPD scenes")
    return out


def best_text(reader: PlateReader, image: NDArray[np.uint8]) -> str | None:
    """The best publishable read of a frame, or None."""
    for read in reader.read(image):
        if read.valid:
            return read.text
    return None


def score_set(reader: PlateReader, items: list[tuple[str, NDArray[np.uint8]]]) -> dict[str, Any]:
    """Exact reads and per-frame cost over (label, image) pairs."""
    seconds: list[float] = []
    cpu: list[float] = []
    exact = wrong = 0
    misses: list[str] = []
    for i, (label, image) in enumerate(items):
        t0, c0 = time.perf_counter(), time.thread_time()
        text = best_text(reader, image)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        if text == label:
            exact += 1
        else:
            wrong += text is not None
            misses.append(f"#{i}: {'no read' if text is None else 'wrong read'}")
    # Wall time is inflated by other work on a shared machine; the thread's CPU time is not.
    return {"exact": exact, "wrong_published": wrong, "n": len(items), "frame_ms": percentiles(seconds),
            "frame_cpu_ms": percentiles(cpu), "misses": misses}


def clip(reader: PlateReader, items: list[tuple[str, NDArray[np.uint8]]], seed: int) -> dict[str, Any]:
    """End to end through PlatePath: each scene held CLIP_FRAMES frames, mildly degraded per frame."""
    rng = np.random.default_rng(seed)
    path = PlatePath("gate-plate", reader, PlateConfig())
    exact = events = 0
    ts = 0.0
    cpu: list[float] = []
    for label, image in items:
        lb = gate_sets.letterboxed_720p(image)
        obs = []
        for _ in range(CLIP_FRAMES):
            frame = gate_sets.degrade(lb, rng, mild=True).image
            c0 = time.thread_time()
            obs += path.process(Frame("gate-plate", int(ts * CLIP_FPS), ts, frame))
            cpu.append(time.thread_time() - c0)
            ts += 1.0 / CLIP_FPS
        # Two seconds of empty road between vehicles: the track closes.
        obs += path.idle(ts + 2.0)
        ts += 2.0
        for o in obs:
            events += 1
            if o.subject is not None and o.subject.value == label:
                exact += 1
    obs_end = path.finish()
    events += len(obs_end)
    # The whole path per frame: the reader, the track-guided looks and the vote.
    return {"exact": exact, "events": events, "vehicles": len(items), "frames_per_vehicle": CLIP_FRAMES,
            "zoom_reads": path.zoom_reads, "frame_cpu_ms": percentiles(cpu)}


def run(*, quick: bool = False, models_dir: Path = MODELS_DIR, params: ReaderParams | None = None,
        n_seeds: int = 3) -> dict[str, Any]:
    """Every set; JSON-ready."""
    data = scenes()
    if quick:
        data, n_seeds = data[:6], 1
    reader = PlateReader(models_dir, RuntimeOptions(intra_op_threads=1), params=params)
    reader.read(data[0][2])
    out: dict[str, Any] = {"scenes": len(data)}
    widths = [w for *_, w in data]
    out["plate_width_px_720p"] = {"min": round(min(widths), 1), "median": round(float(np.median(widths)), 1),
                                  "max": round(max(widths), 1)}
    out["native"] = score_set(reader, [(lab, img) for _, lab, img, _ in data])
    out["letterboxed_720p"] = score_set(reader, [(lab, gate_sets.letterboxed_720p(img)) for _, lab, img, _ in data])
    degraded = []
    for seed in gate_sets.seeds(n_seeds):
        rng = np.random.default_rng(seed)
        items = [(lab, gate_sets.degrade(img, rng).image) for _, lab, img, _ in data]
        res = score_set(reader, items)
        res["seed"] = seed
        degraded.append(res)
    counts = [d["exact"] for d in degraded]
    lo, hi, mean = gate_sets.spread(counts)
    out["degraded"] = {"per_seed": degraded, "min": lo, "max": hi, "mean": mean,
                       "points_below_native": round(100.0 * (out["native"]["exact"] - mean) / len(data), 1)}
    out["clip"] = clip(reader, [(lab, img) for _, lab, img, _ in data], seed=gate_sets.seeds(1, base=77)[0])
    return out


CAL_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def _pool_adjacent_violators(pairs: list[tuple[float, bool]]) -> Calibration:
    """Fraction correct per confidence bin (CAL_EDGES), adjacent bins pooled until it never decreases;
    each value smoothed as (right + 0.5) / (n + 1)."""
    bins = [[0, 0] for _ in CAL_EDGES]
    for conf, ok in pairs:
        j = next(k for k, e in enumerate(CAL_EDGES) if conf <= e)
        bins[j][0] += ok
        bins[j][1] += 1
    blocks = [[b[0], b[1], k] for k, b in enumerate(bins) if b[1] > 0]
    i = 0
    while i < len(blocks) - 1:
        if blocks[i][0] * blocks[i + 1][1] > blocks[i + 1][0] * blocks[i][1]:
            blocks[i] = [blocks[i][0] + blocks[i + 1][0], blocks[i][1] + blocks[i + 1][1], blocks[i + 1][2]]
            del blocks[i + 1]
            i = max(i - 1, 0)
        else:
            i += 1
    return Calibration(tuple(CAL_EDGES[b[2]] for b in blocks),
                       tuple(round((b[0] + 0.5) / (b[1] + 1), 3) for b in blocks))


def calibrate(models_dir: Path = MODELS_DIR, seeds: tuple[int, ...] = (1, 2, 3)) -> dict[str, Calibration]:
    """Both recognisers' alphanumeric-position calibration on the LPRNet crops (see fusion.py)."""
    rows = [r for r in csv_rows(PLATES / "labels.csv") if r.get("kind") == "plate_crop_94x24"]
    if not rows:
        raise SkipSection("no LPRNet crops")
    ppocr = PlateReader(models_dir, RuntimeOptions(intra_op_threads=1),
                        params=ReaderParams(second_opinion_below=0.0, variants=(), min_char_share=0.0))
    clp = PlateReader(models_dir, RuntimeOptions(intra_op_threads=1), params=ReaderParams(second_opinion_below=1.0))
    pairs: dict[str, list[tuple[float, bool]]] = {"ppocr": [], "clp": []}
    crops = [(r["plate_text"], np.asarray(cv2.imread(str(SHARED_DATA / r["path"]), cv2.IMREAD_COLOR), np.uint8))
             for r in rows]
    renderings = [crops]
    for seed in seeds:
        rng = np.random.default_rng(seed)  # one generator per rendering, drawn crop after crop
        renderings.append([(t, gate_sets.degrade_crop(c, rng)) for t, c in crops])
    for label, crop in (x for rendering in renderings for x in rendering):
        for name, d in (("ppocr", ppocr.recognise_crop(crop)), ("clp", clp.recognise_crop(crop, second=True))):
            if d is not None and len(d.text) == len(label):
                pairs[name] += [(d.char_confidences[i], d.text[i] == label[i]) for i in range(FIRST_FUSED, len(label))]
    return {name: _pool_adjacent_violators(p) for name, p in pairs.items()}


if __name__ == "__main__":
    if "--calibrate" in sys.argv:
        print(json.dumps({k: {"edges": v.edges, "values": v.values} for k, v in calibrate().items()}, indent=2))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2, ensure_ascii=False))
