"""A/B of plate-path settings on the gate sets (bench/bench_gate_plates.py), both sides in one run.

Each named configuration (CONFIGS: reader params and the plate path's TrackZoom) reads every image
of a set; the configurations alternate image by image (rotating which goes first), so load from other
work on the machine hits all of them alike, and each image's cost is the thread's CPU time. Sets:
native, letterboxed 720p, degraded seeds 15000.. (`--seeds N`), and the clip (seed 77000, or
`--clip-seed S`) through PlatePath (each configuration its own path, fed the same frames in turn).
Prints JSON: per set and configuration the exact and wrong published counts, CPU ms per frame
(p50 / mean), and the scene indices where a configuration differs from the first one (indices only:
no plate text).

`.venv/bin/python bench/ab_gate_plates.py --configs default,confusable --seeds 5 [--clip-only] [--no-clip]`
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gate_sets
from bench._common import MODELS_DIR
from bench.bench_gate_plates import CLIP_FPS, CLIP_FRAMES, best_text, scenes
from edge.models.config import RuntimeOptions
from edge.pipeline.config import PlateConfig
from edge.pipeline.plates import PlatePath, TrackZoom
from edge.plates.fusion import CONFUSABLE
from edge.plates.reader import PlateReader, ReaderParams
from edge.types import Frame

_BEFORE = ReaderParams(confusable_below=0.0)

CONFIGS: dict[str, tuple[ReaderParams, TrackZoom]] = {
    # The settings before issue 15's third round: no confusable second opinion, no track-guided looks.
    "default": (_BEFORE, TrackZoom()),
    "confusable": (replace(_BEFORE, confusable_below=0.9, confusable=CONFUSABLE), TrackZoom()),
    "confusable-T": (replace(_BEFORE, confusable_below=0.9, confusable=("T71",)), TrackZoom()),
    "confusable-0.8": (replace(_BEFORE, confusable_below=0.8, confusable=CONFUSABLE), TrackZoom()),
    "zoom": (_BEFORE, TrackZoom(zoom=True)),
    "zoom-back": (_BEFORE, TrackZoom(zoom=True, lookback_frames=5)),
    "T": (replace(_BEFORE, confusable_below=0.9), TrackZoom()),
    "T-zoom-back": (replace(_BEFORE, confusable_below=0.9), TrackZoom(zoom=True, lookback_frames=5)),
    "T1.0": (replace(_BEFORE, confusable_below=1.0), TrackZoom()),
    "T1.0-zoom-back": (replace(_BEFORE, confusable_below=1.0), TrackZoom(zoom=True, lookback_frames=5)),
    # The defaults now (ReaderParams, PlateConfig): T/7/1 second opinion, zoom and look-back on.
    "now": (ReaderParams(), TrackZoom(zoom=True, lookback_frames=5)),
    "now-score0.3": (ReaderParams(), TrackZoom(zoom=True, lookback_frames=5, min_score=0.3)),
    "now-context3": (ReaderParams(), TrackZoom(zoom=True, lookback_frames=5, context=3.0)),
}


def _stats(cpu: list[float]) -> dict[str, float]:
    a = np.asarray(cpu) * 1000.0
    return {"p50": round(float(np.median(a)), 1), "mean": round(float(a.mean()), 1)}


def single(readers: dict[str, PlateReader], items: list[tuple[str, NDArray[np.uint8]]]) -> dict[str, Any]:
    """Every configuration on every image, alternating."""
    names = list(readers)
    got: dict[str, list[str | None]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for i, (_, image) in enumerate(items):
        for k in range(len(names)):
            n = names[(i + k) % len(names)]
            c0 = time.thread_time()
            got[n].append(best_text(readers[n], image))
            cpu[n].append(time.thread_time() - c0)
    out: dict[str, Any] = {}
    base = names[0]
    for n in names:
        exact = [t == lab for t, (lab, _) in zip(got[n], items, strict=True)]
        wrong = [t is not None and t != lab for t, (lab, _) in zip(got[n], items, strict=True)]
        out[n] = {"exact": sum(exact), "wrong_published": sum(wrong), "frame_cpu_ms": _stats(cpu[n])}
        if n != base:
            out[n]["differs_at"] = [i for i in range(len(items)) if got[n][i] != got[base][i]]
    return out


def clip(readers: dict[str, PlateReader], zooms: dict[str, TrackZoom],
         data: list[tuple[str, NDArray[np.uint8]]], seed: int) -> dict[str, Any]:
    """The clip of bench_gate_plates, each configuration through its own PlatePath, frame by frame."""
    rng = np.random.default_rng(seed)
    names = list(readers)
    paths = {n: PlatePath("gate-plate", readers[n], PlateConfig(), zoom=zooms[n]) for n in names}
    exact = {n: 0 for n in names}
    events = {n: 0 for n in names}
    wrong = {n: 0 for n in names}
    hits: dict[str, list[int]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    ts = 0.0
    for v, (label, image) in enumerate(data):
        lb = gate_sets.letterboxed_720p(image)
        obs: dict[str, list[Any]] = {n: [] for n in names}
        for f in range(CLIP_FRAMES):
            frame = gate_sets.degrade(lb, rng, mild=True).image
            for k in range(len(names)):
                n = names[(v + f + k) % len(names)]
                c0 = time.thread_time()
                obs[n] += paths[n].process(Frame("gate-plate", int(ts * CLIP_FPS), ts, frame))
                cpu[n].append(time.thread_time() - c0)
            ts += 1.0 / CLIP_FPS
        for n in names:
            obs[n] += paths[n].idle(ts + 2.0)
            events[n] += len(obs[n])
            ok = any(o.subject is not None and o.subject.value == label for o in obs[n])
            exact[n] += sum(1 for o in obs[n] if o.subject is not None and o.subject.value == label)
            wrong[n] += sum(1 for o in obs[n] if o.subject is not None and o.subject.value != label)
            if ok:
                hits[n].append(v)
        ts += 2.0
    out: dict[str, Any] = {}
    for n in names:
        events[n] += len(paths[n].finish())
        out[n] = {"exact": exact[n], "events": events[n], "wrong_published": wrong[n],
                  "zoom_reads": paths[n].zoom_reads, "frame_cpu_ms": _stats(cpu[n]),
                  "missed": [i for i in range(len(data)) if i not in hits[n]]}
    return out


def main(argv: list[str]) -> dict[str, Any]:
    """Parse the flags, run the sets."""
    names = ["default"]
    n_seeds = 3
    clip_seed = gate_sets.seeds(1, base=77)[0]
    for i, a in enumerate(argv):
        if a == "--clip-seed":
            clip_seed = int(argv[i + 1])
        if a == "--configs":
            names = argv[i + 1].split(",")
        elif a == "--seeds":
            n_seeds = int(argv[i + 1])
    data = scenes()
    cache: dict[ReaderParams, PlateReader] = {}
    readers: dict[str, PlateReader] = {}
    for n in names:
        params = CONFIGS[n][0]
        if params not in cache:
            cache[params] = PlateReader(MODELS_DIR, RuntimeOptions(intra_op_threads=1), params=params)
            cache[params].read(data[0][2])
        readers[n] = cache[params]
    out: dict[str, Any] = {"configs": names}
    if "--clip-only" not in argv:
        single_readers = {n: r for n, r in readers.items()}
        out["native"] = single(single_readers, [(lab, img) for _, lab, img, _ in data])
        out["letterboxed_720p"] = single(single_readers,
                                         [(lab, gate_sets.letterboxed_720p(img)) for _, lab, img, _ in data])
        for seed in gate_sets.seeds(n_seeds):
            rng = np.random.default_rng(seed)
            out[f"degraded_{seed}"] = single(single_readers,
                                             [(lab, gate_sets.degrade(img, rng).image) for _, lab, img, _ in data])
    if "--no-clip" not in argv:
        out["clip"] = clip(readers, {n: CONFIGS[n][1] for n in names}, [(lab, img) for _, lab, img, _ in data],
                           seed=clip_seed)
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
